"""Second review (session 22) of commit 1b00eca: the daily-quota relief driven by accepted
events pinned in open batches (``Uploader._pinned``) and the parking of a device's events
behind its parked user (``Sender.take``). Scripted Amplitude answers over loopback
(``shared_kit.serve_routes``) through the real ``responses.classify``; no timed assertions.
Both defects it found are fixed: the relief counted accepted events a throttle kept open
(now only those of batches the long quota holds keep), and a user-only event's parked
ordering key parked that user's device events too (now only users Amplitude named over the
quota are parked behind)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from mp2amp.load import Uploader, UploadSettings
from mp2amp.pipeline.parked import replay_parked
from shared_kit import serve_routes

KEY = "test-key-s22-second"
T0 = 1_700_000_000_000


def ev(i: int, device: str | None, user: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"event_type": "view", "time": T0 + i * 1000, "insert_id": f"q-{i:05d}"}
    if device is not None:
        e["device_id"] = device
    if user is not None:
        e["user_id"] = user
    return e


def ok(doc: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"code": 200, "events_ingested": len(doc["events"]), "payload_size_bytes": 1,
                 "server_upload_time": 1}


def too_many(doc: dict[str, Any], *, quota_devices: set[str] = frozenset(),
             quota_users: set[str] = frozenset(),
             throttled_devices: set[str] = frozenset()) -> tuple[int, Any]:
    """Amplitude's /batch 429 as the emulator words it: the named ids and their indices."""
    idx = [i for i, e in enumerate(doc["events"])
           if e.get("device_id") in quota_devices | throttled_devices
           or e.get("user_id") in quota_users]
    return 429, {"code": 429, "error": "Too many requests for some devices and users",
                 "eps_threshold": 1000,
                 "throttled_devices": {d: 2000 for d in throttled_devices},
                 "throttled_users": {},
                 "exceeded_daily_quota_devices": {d: 500_001 for d in quota_devices},
                 "exceeded_daily_quota_users": {u: 500_001 for u in quota_users},
                 "throttled_events": idx}


class Books:
    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.parked: list[str] = []
        self.dead: list[str] = []

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        pass

    def on_batch_accepted(self, batch_id: str, events: Any) -> None:
        self.accepted += [e.event["insert_id"] for e in events]

    def on_dead_letter(self, event: dict[str, Any], origin: Any, reason: str, message: str,
                       batch_id: str | None = None) -> None:
        self.dead.append(event["insert_id"])

    def on_parked(self, event: dict[str, Any], origin: Any, reason: str,
                  batch_id: str) -> None:
        self.parked.append(event["insert_id"])


Script = Callable[[int, dict[str, Any]], tuple[int, Any]]


async def upload(script: Script, events: list[dict[str, Any]],
                 prepare: Callable[[Uploader], Awaitable[None]] | None = None,
                 **kw: Any) -> tuple[Books, Any, list[list[str]]]:
    books = Books()
    seen: list[list[str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        doc = orjson.loads(await request.read())
        seen.append([e["insert_id"] for e in doc["events"]])
        status, body = script(len(seen) - 1, doc)
        return web.Response(status=status, body=orjson.dumps(body),
                            content_type="application/json")

    async with serve_routes({("POST", "/batch"): handler}) as url:
        base: dict[str, Any] = dict(api_key=KEY, api_host=url, concurrency=1,
                                    backoff_base=0.005, backoff_cap=0.05, throttle_wait=0.05,
                                    max_retries=3, endpoint="batch")
        base.update(kw)
        async with Uploader(UploadSettings(**base), observer=books) as up:
            if prepare is not None:
                await prepare(up)
            for i, e in enumerate(events):
                await up.submit(e, ("src.jsonl", i + 1), batch_key="w")
            report = await up.close()
    return books, report, seen


# --- defects -----------------------------------------------------------------------------


def test_events_pinned_by_a_throttle_do_not_park_the_quota_s_held_event() -> None:
    """One lane, batches of 10, pending cap 100. Device quota-Q is refused once for the daily
    quota (held, park_delay an hour); hot-T, with an event in every batch, is throttled for a
    while, so each batch waits for its hot-T event with 9 accepted events. Q's own hold keeps
    open one batch (8 accepted events): README: the quota's events are parked only when the
    accepted events of batches *a quota hold keeps open* fill half the cap. A throttle ends
    in seconds; nothing here needs parking, and Q's quota has room again at the end, so the
    close's last try delivers it: nothing parked, exit 0."""
    events = []
    for i in range(300):
        if i == 0:
            device = "quota-Q"
        elif i % 10 == 1:
            device = "hot-T"
        else:
            device = f"dev-{i:05d}"
        events.append(ev(i, device))
    total = len(events)
    state = {"accepted": set(), "t_refusals": 0}

    def script(n: int, doc: dict[str, Any]) -> tuple[int, Any]:
        ids = {e["insert_id"] for e in doc["events"]}
        devices = {e["device_id"] for e in doc["events"]}
        quota = {"quota-Q"} if "quota-Q" in devices and \
            len(state["accepted"]) < total - 1 else set()
        throttled = set()
        if "hot-T" in devices and state["t_refusals"] < 6:
            state["t_refusals"] += 1
            throttled = {"hot-T"}
        if quota or throttled:
            return too_many(doc, quota_devices=quota, throttled_devices=throttled)
        state["accepted"] |= ids
        return ok(doc)

    books, report, _ = asyncio.run(upload(script, events, max_events=10,
                                          max_pending_events=100, park_delay=3600,
                                          park_retries=2, throttle_wait=0.1))
    assert report.throttles > 0
    assert books.parked == [], f"parked {books.parked} (report.parked={report.parked})"
    assert sorted(books.accepted) == sorted(e["insert_id"] for e in events)


class ParkedLedger:
    """The two ledger reads ``replay_parked`` makes: an earlier run parked a user_id-only
    event of ``user-U`` (its user was over the quota that day) in a batch a crash left
    unfinished; nothing else is parked."""

    def unfinished_parked_events(self) -> Iterator[bytes]:
        yield orjson.dumps({"event_type": "view", "user_id": "user-U", "time": T0 - 5000,
                            "insert_id": "old-0001"})

    def parked_events(self) -> Iterator[tuple[str, str, bytes]]:
        return iter(())


def test_a_resume_does_not_park_a_user_s_device_events_behind_its_user_only_event() -> None:
    """The user_id-only event's batch is sent again with its window (parked.py: "such a
    device has all its events parked again in this run"): its "device" is the user's own
    lane of user_id-only events. The user's events on real devices are another Amplitude
    device each, with no parked event before them; Amplitude accepts everything here."""
    events = [ev(0, "dev-A", "user-U"), ev(1, "dev-A", "user-W"), ev(2, "dev-B", "user-U"),
              ev(3, "dev-C", "user-W")]

    async def prepare(up: Uploader) -> None:
        await replay_parked(ParkedLedger(), up)  # type: ignore[arg-type]

    books, _report, _ = asyncio.run(upload(lambda n, doc: ok(doc), events, prepare=prepare))
    assert books.parked == [], f"parked {books.parked} of a user Amplitude never refused"
    assert sorted(books.accepted) == [e["insert_id"] for e in events]


# --- guard (passes): events parked by the relief are delivered once, in order, on resume --


def test_relief_parked_events_reach_amplitude_once_in_order_over_resumes(
        tmp_path: Any, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """migrate against the emulator with a small daily quota, park_delay an hour and a small
    pending cap (the relief parks), then --resume a day later until nothing is parked: every
    event stored once, each device's in time order, every run balanced."""
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "pipeline"))
    from migrate_kit import (
        FAST,
        Clock,
        amplitude,
        assert_exactly_once,
        make_config,
        order_breaks,
        small_events,
        transform_outcome,
    )

    from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, migrate

    events = small_events(tmp_path)
    expected, _, _ = transform_outcome(events, tmp_path / "transform")
    clock = Clock()
    settings = {**FAST, "park_delay": 3600, "park_retries": 2, "concurrency": 2,
                "max_events": 10, "max_pending_events": 40}
    with amplitude(tmp_path / "amp", daily_quota=12, now=clock) as url:
        cfg = make_config(events, tmp_path / "work", url)
        result = migrate(cfg, upload_overrides=settings)
        assert result.exit_code == EXIT_PARKED and result.totals["balanced"]
        assert "parked now instead of held" in caplog.text  # the relief fired
        for _ in range(6):
            clock.offset += 25 * 3600
            result = migrate(cfg, resume=True, upload_overrides=settings)
            assert result.totals["balanced"], result.as_dict()["problems"]
            if result.exit_code != EXIT_PARKED:
                break
        assert result.exit_code == EXIT_OK and result.totals["parked"] == 0
        assert_exactly_once(url, expected)
    assert order_breaks(tmp_path / "amp") == []
