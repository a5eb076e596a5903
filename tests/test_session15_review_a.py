"""Review (session 15, a) of the fixes made late in the session: staging's latest-ingested
copy first (fee4819), the load stage's holds (419c4de), the gzip fallback (e9a9009) and the
Amplitude emulator's all-or-nothing store (cfc5a60).

``xfail(strict=True)`` tests pin defects (the reason says what is wrong); the others guard
non-obvious behaviour of those fixes.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from mp2amp.config import load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.load import Uploader, UploadSettings
from mp2amp.transform.offline import transform_files
from shared_kit import serve_routes

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


# --- staging: the latest ingested copy first (fee4819) --------------------------------------


def mp_event(name: str, t: int, iid: str, ingested: int, **props: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"time": t, "distinct_id": "$device:dev-0001", "$device_id": "dev-0001",
                         "mp_lib": "web", "$insert_id": iid}
    p.update(props)
    p["mp_processing_time_ms"] = ingested
    return {"event": name, "properties": p}


def transform(root: Path, files: dict[str, list[dict[str, Any]]],
              dumps: Any = orjson.dumps) -> list[dict[str, Any]]:
    """``mp2amp transform`` in process (files written with ``dumps``): the events out."""
    folder = root / "in"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, records in files.items():
        path = folder / name
        lines = [dumps(r) for r in records]
        path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n"
                                  for x in lines))
        names.append(str(path))
    config = load_config(None, {"run.workdir": str(root / "work")}, env={})
    out, rejects = io.BytesIO(), io.BytesIO()
    result = transform_files(config, names, out, rejects)
    assert result.summary.balanced, result.summary.as_dict()
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def _copies() -> tuple[dict[str, Any], dict[str, Any]]:
    old = mp_event("Buy", T0 + 5, "iid-000000001", T0 * 1000 + 6_000, plan="free")
    new = mp_event("Buy", T0 + 5, "iid-000000001", T0 * 1000 + 90_000, plan="pro")
    return old, new


def _view(t: int, n: int) -> dict[str, Any]:
    return mp_event("View", t, f"iid-view-{n:04d}", t * 1000 + 1_000)


def test_overlapping_files_with_spaced_json_send_the_latest_ingested_copy(
        tmp_path: Path) -> None:
    old, new = _copies()
    files = {"a.jsonl": [_view(T0, 1), old, _view(T0 + 9, 2)],
             "b.jsonl": [_view(T0 + 1, 3), new, _view(T0 + 8, 4)]}
    events = transform(tmp_path, files, dumps=json.dumps)  # '"key": value'
    assert [e["event_properties"]["plan"] for e in events if e["event_type"] == "Buy"] == ["pro"]


def test_overlapping_compact_files_send_the_latest_ingested_copy(tmp_path: Path) -> None:
    # the same files written compactly: the fix works (guards the comparison above)
    old, new = _copies()
    files = {"a.jsonl": [_view(T0, 1), old, _view(T0 + 9, 2)],
             "b.jsonl": [_view(T0 + 1, 3), new, _view(T0 + 8, 4)]}
    events = transform(tmp_path, files)
    assert [e["event_properties"]["plan"] for e in events if e["event_type"] == "Buy"] == ["pro"]


def test_files_meeting_at_the_copys_time_send_the_latest_ingested_copy(tmp_path: Path) -> None:
    old, new = _copies()
    files = {"a.jsonl": [_view(T0, 1), old], "b.jsonl": [new, _view(T0 + 8, 4)]}
    events = transform(tmp_path, files)
    assert [e["event_properties"]["plan"] for e in events if e["event_type"] == "Buy"] == ["pro"]


def test_distinct_events_of_one_second_keep_their_ingestion_order(tmp_path: Path) -> None:
    cart = mp_event("Add to cart", T0, "iid-cart-0001", T0 * 1000 + 40)
    checkout = mp_event("Checkout", T0, "iid-checkout-1", T0 * 1000 + 95)
    events = transform(tmp_path, {"day.jsonl": [cart, checkout]})
    assert [e["event_type"] for e in events] == ["Add to cart", "Checkout"]


# --- load: holds (419c4de) -------------------------------------------------------------------


KEY = "test-key-session15-a"


def _ev(i: int, device: str) -> dict[str, Any]:
    return {"event_type": "view", "time": 1_700_000_000_000 + i * 1000,
            "insert_id": f"s15a-{i:04d}", "device_id": device}


def _quota_429(devices: dict[str, int]) -> dict[str, Any]:
    return {"code": 429, "error": "Too many requests for some devices and users",
            "eps_threshold": 1000, "throttled_devices": {}, "throttled_users": {},
            "exceeded_daily_quota_users": {}, "exceeded_daily_quota_devices": devices,
            "throttled_events": []}


class _Books:
    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.parked: list[str] = []

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        pass

    def on_batch_accepted(self, batch_id: str, events: Any) -> None:
        self.accepted += [e.event["insert_id"] for e in events]

    def on_dead_letter(self, *args: Any) -> None:
        pass

    def on_parked(self, event: dict[str, Any], origin: Any, reason: str,
                  batch_id: str) -> None:
        self.parked.append(event["insert_id"])


def test_a_device_parked_for_good_gets_its_later_events_parked_behind() -> None:
    # 419c4de holds exceeded_daily_quota_devices even when the refused event was parked for
    # good: the device's later event waits in that hold (take() diverts before it looks at
    # parked_keys), and when the hold ends it must still be parked behind, never sent ahead
    requests: list[list[str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        doc = orjson.loads(await request.read())
        requests.append([e["insert_id"] for e in doc["events"]])
        if len(requests) == 1:  # the first answer: dev-p is over its daily quota
            body: dict[str, Any] = _quota_429({"dev-p": 500_100})
            return web.Response(status=429, body=orjson.dumps(body),
                                content_type="application/json")
        body = {"code": 200, "events_ingested": len(doc["events"]), "payload_size_bytes": 1,
                "server_upload_time": 1}  # the quota's hour has turned
        return web.Response(status=200, body=orjson.dumps(body), content_type="application/json")

    books = _Books()

    async def main() -> None:
        async with serve_routes({("POST", "/batch"): handler}) as url:
            settings = UploadSettings(api_key=KEY, api_host=url, concurrency=1,
                                      backoff_base=0.005, backoff_cap=0.05, max_retries=3,
                                      park_retries=0, park_delay=0.3)
            async with Uploader(settings, observer=books) as up:
                await up.submit(_ev(1, "dev-p"), ("src.jsonl", 1), batch_key="w1")
                await up.flush("w1")
                for _ in range(100):  # until the first answer is in
                    if books.parked:
                        break
                    await asyncio.sleep(0.01)
                await up.submit(_ev(2, "dev-p"), ("src.jsonl", 2), batch_key="w2")
                await up.flush("w2")
                await asyncio.sleep(0.5)  # past park_delay
                await up.close()

    asyncio.run(main())
    assert books.parked[:1] == ["s15a-0001"]
    # the later event of dev-p waits behind its parked event (a resume sends both, in order)
    assert books.accepted == []
    assert sorted(books.parked) == ["s15a-0001", "s15a-0002"]
    assert all("s15a-0002" not in ids for ids in requests)


# --- Amplitude emulator: all-or-nothing store (cfc5a60) --------------------------------------


def _post(url: str, payload: Any) -> tuple[int, Any]:
    req = urllib.request.Request(url + "/batch", data=orjson.dumps(payload), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, orjson.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def test_a_failed_id_journal_write_does_not_store_the_events_twice(tmp_path: Path) -> None:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY))
    events = [{"event_type": "tap", "user_id": "user-00001", "time": 1_700_000_000_000}]
    with emu.running() as url:
        real = emu.store.append_ids

        def full_disk(entries: list[list[Any]]) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        emu.store.append_ids = full_disk  # type: ignore[method-assign]
        try:
            status, body = _post(url, {"api_key": KEY, "events": events})
        finally:
            emu.store.append_ids = real  # type: ignore[method-assign]
        assert (status, body["code"]) == (500, 500)  # "nothing was stored, send it again"
        assert _post(url, {"api_key": KEY, "events": events})[0] == 200  # the client does
        stored = list(emu.store.iter_events())
    assert len(stored) == 1


class _HalfWritten:
    """An append handle whose write lands half its bytes, then fails (the disk is full)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> None:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


def test_a_torn_id_journal_write_does_not_swallow_the_next_requests_ids(
        tmp_path: Path) -> None:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            save_every_s=3600))

    def one(user: str) -> list[dict[str, Any]]:
        return [{"event_type": "tap", "user_id": user, "insert_id": f"ins-{user}",
                 "time": 1_700_000_000_000}]

    with emu.running() as url:
        assert _post(url, {"api_key": KEY, "events": one("user-00001")})[0] == 200
        real = emu.store._ids_fh
        emu.store._ids_fh = _HalfWritten(real)
        try:
            assert _post(url, {"api_key": KEY, "events": one("user-00002")})[0] == 500
        finally:
            emu.store._ids_fh = real
        assert _post(url, {"api_key": KEY, "events": one("user-00002")})[0] == 200  # retry
        assert _post(url, {"api_key": KEY, "events": one("user-00003")})[0] == 200
        journal = emu.store.read_ids()
    users = {entry[1] for entry in journal if entry[0] == "u"}
    assert users == {"user-00001", "user-00002", "user-00003"}
