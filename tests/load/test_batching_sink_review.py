"""Review of the load side's batching and the S3-import sink (adversarial edge cases).

The uploader is driven against an in-process Amplitude (a fake ``aiohttp`` session: no
sockets, so hypothesis can run many mixed-fault runs cheaply) that answers 413s, 400s
naming events, per-device 429s, daily-quota 429s and 5xx at random, and records the
order in which each device's events were ingested and whether two requests carrying one
device were ever in flight together.
"""

from __future__ import annotations

import asyncio
import gzip
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import fsspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mp2amp.load import Uploader, UploadSettings


class _Resp:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self._body = orjson.dumps(body)
        self.headers: dict[str, str] = {}

    async def read(self) -> bytes:
        return self._body

    async def __aenter__(self) -> _Resp:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None


class _Post:
    def __init__(self, coro: Any) -> None:
        self._coro = coro

    async def __aenter__(self) -> _Resp:
        resp: _Resp = await self._coro
        return resp

    async def __aexit__(self, *exc: Any) -> None:
        return None


class MixedAmplitude:
    """An in-process Amplitude answering with a seeded mix of every documented verdict."""

    def __init__(
        self,
        seed: int,
        *,
        p413: float = 0.1,
        p429: float = 0.1,
        p5xx: float = 0.05,
        quota_users: frozenset[str] = frozenset(),
        quota_rounds: int = 1,
        max_events: int = 2000,
        max_raw: int = 20_000_000,
    ) -> None:
        self.rng = random.Random(seed)
        self.p413, self.p429, self.p5xx = p413, p429, p5xx
        self.quota_users = quota_users
        self.quota_left: dict[str, int] = {u: quota_rounds for u in quota_users}
        self.max_events = max_events
        self.max_raw = max_raw
        self.arrival: dict[str, list[int]] = defaultdict(list)  # key -> seqs ingested
        self.stored: set[str] = set()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.overlap = 0
        self.requests = 0
        self.urls: list[str] = []
        self.options: list[Any] = []
        self.gzipped: list[bool] = []
        self.raw_sizes: list[int] = []
        self.counts: list[int] = []
        self.live = 0
        self.max_live = 0

    async def close(self) -> None:
        return None

    @property
    def closed(self) -> bool:
        return False

    def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> _Post:
        return _Post(self._answer(url, data, headers))

    async def _answer(self, url: str, data: bytes, headers: dict[str, str]) -> _Resp:
        self.requests += 1
        self.urls.append(url)
        zipped = headers.get("Content-Encoding") == "gzip"
        self.gzipped.append(zipped)
        raw = gzip.decompress(data) if zipped else data
        self.raw_sizes.append(len(raw))
        doc = orjson.loads(raw)
        self.options.append(doc.get("options"))
        events: list[dict[str, Any]] = doc["events"]
        self.counts.append(len(events))
        keys = {e.get("device_id") or e.get("user_id") for e in events}
        for k in keys:
            if self.in_flight[k]:
                self.overlap += 1
            self.in_flight[k] += 1
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        try:
            await asyncio.sleep(0)  # let the other lanes' requests interleave
            await asyncio.sleep(0)
            if len(raw) > self.max_raw:
                return _Resp(413, {"code": 413, "error": "Payload too large"})
            return self._decide(events)
        finally:
            self.live -= 1
            for k in keys:
                self.in_flight[k] -= 1

    def _decide(self, events: list[dict[str, Any]]) -> _Resp:
        rng = self.rng
        n = len(events)
        if n > self.max_events or (n > 1 and rng.random() < self.p413):
            return _Resp(413, {"code": 413, "error": "Payload too large"})
        if rng.random() < self.p5xx:
            return _Resp(503, {"code": 503, "error": "Service unavailable"})
        bad = [i for i, e in enumerate(events) if e.get("event_properties", {}).get("bad")]
        if bad:
            return _Resp(
                400,
                {
                    "code": 400,
                    "error": "Invalid field values on some events",
                    "events_with_invalid_fields": {"time": bad},
                },
            )
        q_users = {
            e["user_id"]: 500_200
            for e in events
            if e.get("user_id") in self.quota_users and self.quota_left[e["user_id"]] > 0
        }
        t_devices: dict[str, int] = {}
        t_users: dict[str, int] = {}
        if rng.random() < self.p429:
            devs = sorted({e["device_id"] for e in events if e.get("device_id")})
            if devs:
                t_devices = {d: 31 for d in rng.sample(devs, max(1, len(devs) // 3))}
        if rng.random() < self.p429 / 2:
            users = sorted({e["user_id"] for e in events if e.get("user_id")})
            if users:
                t_users = {u: 31 for u in rng.sample(users, max(1, len(users) // 4))}
        if q_users or t_devices or t_users:
            for u in q_users:
                self.quota_left[u] -= 1
            idx = [
                i
                for i, e in enumerate(events)
                if e.get("device_id") in t_devices
                or e.get("user_id") in q_users
                or e.get("user_id") in t_users
            ]
            return _Resp(
                429,
                {
                    "code": 429,
                    "error": "Too many requests for some devices and users",
                    "eps_threshold": 1000,
                    "throttled_devices": t_devices,
                    "throttled_users": t_users,
                    "exceeded_daily_quota_users": q_users,
                    "exceeded_daily_quota_devices": {},
                    "throttled_events": idx,
                },
            )
        for e in events:
            if e["insert_id"] not in self.stored:
                self.stored.add(e["insert_id"])
                self.arrival[e.get("device_id") or e["user_id"]].append(
                    e["event_properties"]["seq"]
                )
        return _Resp(
            200,
            {
                "code": 200,
                "events_ingested": n,
                "payload_size_bytes": len(events),
                "server_upload_time": 1,
            },
        )


def mixed_events(
    n: int,
    devices: int,
    seed: int,
    *,
    bad_rate: float = 0.03,
    user_only_rate: float = 0.2,
    pad: int = 0,
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = rng.randrange(devices)
        e: dict[str, Any] = {
            "event_type": "e",
            "time": 1_700_000_000_000 + i,
            "insert_id": f"i-{i:06d}",
            "user_id": f"user-{d % 7:03d}",
            "event_properties": {"seq": i, "pad": "x" * rng.randrange(pad + 1)},
        }
        if rng.random() >= user_only_rate:
            e["device_id"] = f"device-{d:04d}"
        else:
            e["user_id"] = f"solo-{d:04d}"
        if rng.random() < bad_rate:
            e["event_properties"]["bad"] = True
        out.append(e)
    return out


class Books:
    """What a ledger records: every batch, every event's fate."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.accepted: dict[str, list[int]] = {}
        self.dead: list[int] = []
        self.parked: list[int] = []
        self.reasons: dict[int, str] = {}

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        assert batch_id not in self.sent
        self.sent[batch_id] = n

    def on_batch_accepted(self, batch_id: str, events: Any) -> None:
        assert batch_id in self.sent and batch_id not in self.accepted
        self.accepted[batch_id] = [e.event["event_properties"]["seq"] for e in events]

    def on_dead_letter(self, event: dict[str, Any], origin: Any, reason: str, message: str) -> None:
        self.dead.append(event["event_properties"]["seq"])
        self.reasons[event["event_properties"]["seq"]] = reason

    def on_parked(self, event: dict[str, Any], origin: Any, reason: str, batch_id: str) -> None:
        self.parked.append(event["event_properties"]["seq"])


async def run_uploader(
    server: MixedAmplitude,
    events: list[dict[str, Any]],
    books: Books,
    keys: list[str] | None = None,
    *,
    flush_each: bool = True,
    **kw: Any,
) -> Any:
    base: dict[str, Any] = dict(
        api_key="k",
        api_host="http://amplitude.invalid",
        concurrency=4,
        backoff_base=0.0005,
        backoff_cap=0.001,
        throttle_wait=0.001,
        park_delay=0.002,
        park_retries=1,
        max_retries=60,
    )
    base.update(kw)
    up = Uploader(UploadSettings(**base), observer=books)
    await up.start()
    real = up._session
    up._session = server  # type: ignore[assignment]
    assert real is not None
    await real.close()
    try:
        keys = keys or ["w1"]
        per = -(-len(events) // len(keys))
        for k, key in enumerate(keys):
            for i, e in enumerate(events[k * per : (k + 1) * per]):
                await up.submit(e, ("src", k * per + i + 1), batch_key=key)
            if flush_each:
                await up.flush(key)
        report = await up.close()
    finally:
        up._session = None
        await up.abort()
    return report


def device_order_problems(
    server: MixedAmplitude, books: Books, events: list[dict[str, Any]]
) -> list[str]:
    problems = []
    key_of = {e["event_properties"]["seq"]: e.get("device_id") or e["user_id"] for e in events}
    for key, seqs in server.arrival.items():
        if seqs != sorted(seqs):
            problems.append(f"{key} ingested out of order: {seqs}")
    parked_by_key: dict[str, int] = {}
    for s in books.parked:
        parked_by_key[key_of[s]] = min(parked_by_key.get(key_of[s], s), s)
    for key, first_parked in parked_by_key.items():
        later = [s for s in server.arrival.get(key, []) if s > first_parked]
        if later:
            problems.append(f"{key}: {later} ingested after its parked event {first_parked}")
    return problems


# --- the uploader: per-device order and exactly-once under every verdict at once -----------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    max_events=st.sampled_from([7, 50, 400]),
    gzip_on=st.booleans(),
    concurrency=st.integers(1, 5),
    quota_rounds=st.integers(0, 3),
    p429=st.sampled_from([0.0, 0.1, 0.4]),
    park_retries=st.integers(0, 2),
)
def test_every_verdict_mixed_keeps_each_devices_order_and_settles_each_event_once(
    seed: int,
    max_events: int,
    gzip_on: bool,
    concurrency: int,
    quota_rounds: int,
    p429: float,
    park_retries: int,
) -> None:
    events = mixed_events(600, 23, seed)
    server = MixedAmplitude(
        seed, quota_users=frozenset({"user-003"}), quota_rounds=quota_rounds, p429=p429
    )
    books = Books()
    report = asyncio.run(
        run_uploader(
            server,
            events,
            books,
            ["w1", "w2", "w3"],
            max_events=max_events,
            gzip=gzip_on,
            concurrency=concurrency,
            park_retries=park_retries,
        )
    )
    bad = {e["event_properties"]["seq"] for e in events if e["event_properties"].get("bad")}
    accepted = [s for seqs in books.accepted.values() for s in seqs]
    assert sorted(accepted + books.dead + books.parked) == list(range(len(events)))
    # a bad event behind a device's parked events is parked with them, never sent
    assert set(books.dead) <= bad and bad - set(books.dead) <= set(books.parked)
    assert sorted(s for seqs in server.arrival.values() for s in seqs) == sorted(accepted)
    assert server.overlap == 0, "two requests carrying one device were in flight together"
    assert device_order_problems(server, books, events) == []
    assert report.settled == report.submitted == len(events)
    assert set(books.sent) == set(books.accepted)
    # every request, resends and 413 halves included: gzip as configured, the option sent,
    # at most ``concurrency`` in flight, never over the count cap
    assert server.gzipped == [gzip_on] * server.requests
    assert server.options == [{"min_id_length": 1}] * server.requests
    assert server.max_live <= concurrency
    assert max(server.counts) <= max_events


def test_two_batch_keys_open_at_once_keep_a_devices_submission_order() -> None:
    """The uploader's contract (uploader.py docstring): "A lane ... sends in submission
    order, so a device's events arrive in order". A device's event under batch key ``a``
    stays in ``a``'s open batch while the same device's later events fill a batch of key
    ``b``, which is queued and sent first."""
    events = mixed_events(3, 1, 0, bad_rate=0.0, user_only_rate=0.0)
    server = MixedAmplitude(0, p413=0.0, p429=0.0, p5xx=0.0)
    books = Books()

    async def go() -> None:
        up = Uploader(
            UploadSettings(
                api_key="k", api_host="http://amplitude.invalid", concurrency=1, max_events=2
            ),
            observer=books,
        )
        await up.start()
        real, up._session = up._session, server  # type: ignore[assignment]
        assert real is not None
        await real.close()
        try:
            await up.submit(events[0], ("src", 1), batch_key="a")
            await up.submit(events[1], ("src", 2), batch_key="b")
            await up.submit(events[2], ("src", 3), batch_key="b")
            await up.close()
        finally:
            up._session = None
            await up.abort()

    asyncio.run(go())
    assert server.arrival == {"device-0000": [0, 1, 2]}


# --- the S3-import sink: the file rule, order and completeness for any stream ---------------


def _sink_events(spec: list[tuple[int, int, bool]]) -> list[dict[str, Any]]:
    out = []
    for i, (t, pad, noisy) in enumerate(spec):
        filler = f"{random.Random(i).getrandbits(pad * 4 + 1):x}" if noisy else "a" * pad
        out.append(
            {
                "event_type": "e",
                "device_id": f"d-{i % 5}",
                "time": t,
                "insert_id": f"ins-{i:05d}",
                "event_properties": {"f": filler},
            }
        )
    return out


def _rows(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as raw, gzip.open(raw, "rb") as fh:
        return [orjson.loads(line) for line in fh]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=st.lists(st.tuples(st.integers(0, 50), st.integers(0, 400), st.booleans()), max_size=150),
    min_bytes=st.integers(200, 6_000),
    extra=st.integers(1, 20_000),
    sort_buffer=st.integers(300, 50_000),
)
def test_sink_files_meet_the_size_rule_in_time_order_with_every_event_once(
    tmp_path_factory: Any,
    spec: list[tuple[int, int, bool]],
    min_bytes: int,
    extra: int,
    sort_buffer: int,
) -> None:
    from mp2amp.load.s3sink import S3ImportSink

    out = tmp_path_factory.mktemp("sink")
    evs = _sink_events(spec)
    sink = S3ImportSink(
        str(out),
        run_id="prop",
        min_file_bytes=min_bytes,
        target_file_bytes=min_bytes + extra,
        sort_buffer_bytes=sort_buffer,
        merge_fan_in=2,
    )
    for e in evs:
        sink.write(e)
    report = sink.close()
    rows = [r for f in report.files for r in _rows(f.path)]
    # event-time order within and across files; ties keep the order they were written in
    expected = sorted(evs, key=lambda e: e["time"])
    assert [r["insert_id"] for r in rows] == [e["insert_id"] for e in expected]
    raw_total = sum(len(orjson.dumps(e)) + 1 for e in evs)
    for f in report.files:
        size = (out / f.path.rsplit("/", 1)[-1]).stat().st_size
        assert size == f.bytes
        if len(report.files) > 1 or raw_total >= min_bytes:
            assert f.bytes >= min_bytes, (f, raw_total, len(report.files))
    # the events' device_ids ("d-0") are under Amplitude's 5 characters: warned apart
    size_warnings = [w for w in report.warnings if "minimum file size" in w]
    assert bool(size_warnings) == (bool(evs) and raw_total < min_bytes)
    assert report.files_in_time_order


# --- a resumed import into a folder whose name holds glob characters -----------------------


def _attempt(
    target: str,
    attempt: int,
    evs: list[dict[str, Any]],
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """What migrate's ``_write_import_files`` does for one attempt (minus the transform)."""
    from mp2amp.load.s3sink import S3ImportSink
    from mp2amp.pipeline.import_folder import remove_earlier_attempts

    removed = remove_earlier_attempts(target, attempt, storage_options)
    sink = S3ImportSink(
        target,
        run_id=f"mp2amp-a{attempt}",
        storage_options=storage_options,
        target_file_bytes=60_000,
        min_file_bytes=5_000,
    )
    for e in evs:
        sink.write(e)
    sink.close()
    return removed


def _import_rows(fs: Any, root: str) -> list[str]:
    out = []
    for path in sorted(fs.find(root)):
        if path.endswith(".json.gz"):
            with fs.open(path, "rb") as raw, gzip.open(raw, "rb") as fh:
                out.extend(orjson.loads(line)["insert_id"] for line in fh)
    return out


def _target(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[str, Any, dict[str, Any] | None]:
    if kind == "local":
        folder = tmp_path / "exports[prod]"
        return str(folder), fsspec.filesystem("file"), None
    import boto3
    import s3fs

    opts: dict[str, Any] = request.getfixturevalue("s3_server")
    bucket = f"review-{random.Random(str(tmp_path)).getrandbits(40):x}"
    boto3.client(
        "s3",
        endpoint_url=opts["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/exports[prod]", s3fs.S3FileSystem(**opts), opts


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_resume_into_a_folder_named_with_brackets_replaces_the_earlier_attempts_files(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    target, fs, opts = _target(kind, tmp_path, request)
    evs = _sink_events([(t, 300, True) for t in range(400)])
    _attempt(target, 1, evs, opts)  # a crash after its files went out, before the ledger
    fs.invalidate_cache()
    first = _import_rows(fs, target)
    assert sorted(first) == sorted(e["insert_id"] for e in evs)
    removed = _attempt(target, 2, evs, opts)
    fs.invalidate_cache()
    assert len(removed) >= 2, f"the resume removed {removed} of attempt 1's files"
    assert sorted(_import_rows(fs, target)) == sorted(e["insert_id"] for e in evs)


def test_a_folder_named_with_brackets_holding_another_runs_files_is_refused(tmp_path: Path) -> None:
    from mp2amp.errors import TerminalError
    from mp2amp.pipeline.import_folder import refuse_another_runs_files

    target = str(tmp_path / "exports[prod]")
    _attempt(target, 1, _sink_events([(t, 50, False) for t in range(50)]))
    with pytest.raises(TerminalError, match="another migration"):
        refuse_another_runs_files(target, None)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    server_limit=st.integers(1_500, 12_000),
    cap=st.integers(1_024, 30_000),
    gzip_on=st.booleans(),
)
def test_a_server_byte_limit_below_the_cap_splits_down_and_only_lone_oversize_events_die(
    seed: int, server_limit: int, cap: int, gzip_on: bool
) -> None:
    """413s by bytes (the cap set above what the server takes): requests halve until they
    fit; an event too big on its own is dead-lettered ``event_too_large``, nothing else is
    lost, and each device's order holds."""
    events = mixed_events(250, 9, seed, bad_rate=0.0, pad=3_000)
    server = MixedAmplitude(seed, p413=0.0, p429=0.05, p5xx=0.05, max_raw=server_limit)
    books = Books()
    asyncio.run(
        run_uploader(
            server, events, books, ["w1", "w2"], max_bytes=cap, gzip=gzip_on, concurrency=3
        )
    )
    alone = {
        e["event_properties"]["seq"]
        for e in events
        if len(orjson.dumps({"api_key": "k", "events": [e], "options": {"min_id_length": 1}}))
        > server_limit
    }
    assert set(books.dead) == alone
    assert set(books.reasons.values()) <= {"event_too_large"}
    accepted = sorted(s for seqs in books.accepted.values() for s in seqs)
    assert accepted == sorted(set(range(len(events))) - alone)
    assert device_order_problems(server, books, events) == []
    assert server.overlap == 0


# --- endpoints, options, oversize events ---------------------------------------------------


@pytest.mark.parametrize(
    ("region", "endpoint", "url"),
    [
        ("us", "batch", "https://api2.amplitude.com/batch"),
        ("us", "httpapi", "https://api2.amplitude.com/2/httpapi"),
        ("eu", "batch", "https://api.eu.amplitude.com/batch"),
        ("eu", "httpapi", "https://api.eu.amplitude.com/2/httpapi"),
    ],
)
def test_requests_go_to_the_documented_host_and_path(region: str, endpoint: str, url: str) -> None:
    server = MixedAmplitude(1, p413=0.0, p429=0.0, p5xx=0.0)
    events = mixed_events(30, 4, 1, bad_rate=0.0)
    asyncio.run(
        run_uploader(server, events, Books(), region=region, endpoint=endpoint, api_host=None)
    )
    assert set(server.urls) == {url}
    assert (
        UploadSettings(
            api_key="k",
            region=region,
            endpoint=endpoint,  # type: ignore[arg-type]
            api_host="http://127.0.0.1:9/",
        ).url
        == "http://127.0.0.1:9" + url.split(".com", 1)[1]
    )


@pytest.mark.parametrize(
    ("min_id_length", "options"),
    [(None, None), (1, {"min_id_length": 1}), (7, {"min_id_length": 7})],
)
def test_min_id_length_is_sent_on_every_request_or_not_at_all(
    min_id_length: int | None, options: dict[str, int] | None
) -> None:
    server = MixedAmplitude(3, p413=0.3, p429=0.2, p5xx=0.1)
    events = mixed_events(300, 11, 3)
    asyncio.run(run_uploader(server, events, Books(), max_events=40, min_id_length=min_id_length))
    assert server.requests > 8
    assert server.options == [options] * server.requests


@pytest.mark.parametrize("gzip_on", [True, False])
def test_an_event_over_the_byte_cap_goes_alone_and_its_neighbours_stay_batched(
    gzip_on: bool,
) -> None:
    """/batch takes 20 MB: an event over a 64 KB cap is sent on its own and accepted (not
    dead-lettered); the events around it fill normal batches on either side of it."""
    events = mixed_events(200, 1, 5, bad_rate=0.0, user_only_rate=0.0)
    events[100]["event_properties"]["big"] = "y" * 100_000
    server = MixedAmplitude(5, p413=0.0, p429=0.0, p5xx=0.0)
    books = Books()
    report = asyncio.run(
        run_uploader(server, events, books, max_bytes=65_536, gzip=gzip_on, concurrency=1)
    )
    assert report.accepted == 200 and not books.dead
    assert server.arrival == {"device-0000": list(range(200))}
    big = [i for i, size in enumerate(server.raw_sizes) if size > 65_536]
    assert len(big) == 1 and server.counts[big[0]] == 1
    assert server.counts == [100, 1, 99]
    assert all(size <= 65_536 for i, size in enumerate(server.raw_sizes) if i not in big)
