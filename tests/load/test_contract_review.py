"""Adversarial review of the Amplitude upload path against reference/amplitude-api.md.

Strict xfails are defects found by the review (the reason says what is wrong); the passing
tests pin edge cases of the contract the other load tests do not reach.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import Mp2AmpError, parse_retry_after
from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.deadletter import read_dead_letters
from mp2amp.load.responses import classify

KEY = "test-key"
IDS = [(f"dev-{i}", f"user-{i}") for i in range(8)]


def _settings(url: str, **kw: Any) -> UploadSettings:
    base: dict[str, Any] = dict(api_key=KEY, api_host=url, concurrency=1,
                                backoff_base=0.005, backoff_cap=0.05, throttle_wait=0.05)
    base.update(kw)
    return UploadSettings(**base)


def _ev(i: int, device: str | None = None, user: str | None = None, **kw: Any
        ) -> dict[str, Any]:
    e: dict[str, Any] = {"event_type": "view", "time": 1_700_000_000_000 + i * 1000,
                         "insert_id": f"r-{i:05d}", **kw}
    if device is not None:
        e["device_id"] = device
    if user is not None:
        e["user_id"] = user
    return e


async def _upload(url: str, events: list[dict[str, Any]], observer: Any, *,
                  dlq: DeadLetterFile | None = None, pause: float = 0.0,
                  on_pause: Any = None, **kw: Any) -> Any:
    async with Uploader(_settings(url, **kw), observer=observer, dead_letters=dlq) as up:
        for i, e in enumerate(events):
            await up.submit(e, ("src.jsonl", i + 1), batch_key="w")
        if pause:
            await up.flush("w")
            await asyncio.sleep(pause)
            if on_pause is not None:
                on_pause()
        return await up.close()


async def _with_emulator(tmp_path: Path, events: list[dict[str, Any]], observer: Any, *,
                         dlq: DeadLetterFile | None = None, **kw: Any
                         ) -> tuple[Any, AmplitudeEmulator]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY))
    url = await emu.start()
    try:
        report = await _upload(url, events, observer, dlq=dlq, **kw)
    finally:
        await emu.stop()
    return report, emu


# --- defects ---------------------------------------------------------------------------


def test_a_503_with_retry_after_as_an_http_date_is_waited_out(fake_cls, gen_events, observer):
    when = datetime.now(UTC) + timedelta(seconds=120)
    assert parse_retry_after(format_datetime(when, usegmt=True)) == pytest.approx(120, abs=2)

    async def run() -> Any:
        fake = fake_cls(fail_first=1, retry_after=format_datetime(
            datetime.now(UTC) + timedelta(seconds=3), usegmt=True))
        url = await fake.start()
        try:
            await _upload(url, gen_events(10), observer)
        finally:
            await fake.stop()
        return fake

    fake = asyncio.run(run())
    (t503, _, s1), (t200, _, s2) = fake.requests
    assert (s1, s2) == (503, 200)
    assert t200 - t503 >= 1.5   # the date was 2-3 s ahead


def test_a_200_that_is_not_amplitudes_json_is_not_counted_as_accepted(gen_events, observer):
    assert classify(200, b"<html><body>Welcome</body></html>", ids=IDS).kind != "accepted"

    async def proxy(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, text="<html><body>Welcome</body></html>",
                            content_type="text/html")

    async def run() -> Any:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/batch", proxy)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await _upload(f"http://127.0.0.1:{port}", gen_events(50), observer,
                                 max_retries=1)
        except Mp2AmpError:
            return None        # stopping the run is a correct answer too
        finally:
            await runner.cleanup()

    report = asyncio.run(run())
    assert not observer.accepted
    assert report is None or report.accepted == 0


def test_a_quota_event_on_a_device_also_throttled_waits_park_delay_not_throttle_wait(
        fake_cls, observer):
    events = [_ev(0, "device-shared", "user-quota"), _ev(1, "device-shared", "user-throt")]
    sent_before_close: list[int] = []

    async def run() -> Any:
        fake = fake_cls(quota_users={"user-quota"}, throttle_users={"user-throt": 1})
        url = await fake.start()

        def count() -> None:
            sent_before_close.append(sum("r-00000" in ids for _, ids, _ in fake.requests))

        try:
            await _upload(url, events, observer, park_delay=60.0, park_retries=2,
                          pause=0.6, on_pause=count)
        finally:
            await fake.stop()

    asyncio.run(run())
    # one 429 for it, then nothing until park_delay (60 s) has passed
    assert sent_before_close == [1]


def test_one_throttled_event_does_not_shrink_the_lane_to_one_event_requests(
        fake_cls, gen_events, observer):
    events = gen_events(2000, devices=2000)   # every device once, one 2000-event batch

    async def run() -> Any:
        fake = fake_cls(throttle_devices={"device-00003": 1})
        url = await fake.start()
        try:
            report = await _upload(url, events, observer)
        finally:
            await fake.stop()
        return fake, report

    fake, report = asyncio.run(run())
    assert report.accepted == 2000 and report.throttles == 1
    # the 429, the 1999 others, the held event: a handful of requests, not ~30
    assert len(fake.requests) <= 5, [len(ids) for _, ids, _ in fake.requests]


# --- contract edge cases that hold --------------------------------------------------------


def test_400_with_indices_past_the_request_drops_only_the_real_ones():
    doc = {"code": 400, "error": "Invalid field values on some events",
           "events_with_invalid_fields": {"time": [1, 50, -1]},
           "events_with_invalid_id_lengths": {"user_id": [8]}}
    v = classify(400, orjson.dumps(doc), ids=IDS)
    assert v.kind == "sort" and set(v.dead) == {1}
    assert not v.throttled and not v.parked   # 0, 2..7 are resent at once


def test_429_event_named_as_throttled_device_and_quota_user_is_parked_not_throttled():
    doc = {"code": 429, "error": "Too many requests for some devices and users",
           "eps_threshold": 1000, "throttled_devices": {"dev-2": 4000},
           "throttled_users": {"user-5": 4000}, "exceeded_daily_quota_users": {"user-2": 500200},
           "exceeded_daily_quota_devices": {"dev-6": 500900}, "throttled_events": [2, 5, 6]}
    v = classify(429, orjson.dumps(doc), ids=IDS)
    assert v.parked == {2, 6} and v.throttled == {5} and not v.dead


def test_an_event_in_three_400_lists_is_dead_lettered_once_the_rest_ingested(
        tmp_path, gen_events, observer):
    events = gen_events(30, devices=30)
    bad = events[7]
    del bad["event_type"]
    bad["time"] = "2024-01-01T00:00:00Z"
    bad["device_id"] = "abc"
    bad.pop("user_id", None)
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    report, emu = asyncio.run(_with_emulator(tmp_path, events, observer, dlq=dlq,
                                             min_id_length=5))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert [r["line"] for r in rows] == [8]
    assert report.accepted == 29 and sum(report.dead_lettered.values()) == 1
    assert emu.ingestor.events_stored == 29


@pytest.mark.parametrize("min_id_length, dead", [(None, {1}), (1, set()), (4, set())])
def test_4_and_5_character_ids_against_the_emulator(tmp_path, observer, min_id_length, dead):
    # None sends no options: Amplitude's default minimum of 5 applies
    events = [_ev(0, user="abcde"), _ev(1, user="abcd"), _ev(2, device="wxyz", user="user-1")]
    if min_id_length is None:
        events = events[:2]
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    report, _ = asyncio.run(_with_emulator(tmp_path, events, observer, dlq=dlq,
                                           min_id_length=min_id_length))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert {r["line"] - 1 for r in rows} == dead
    assert all(r["reason"] == "invalid_id_length" for r in rows)
    assert report.accepted == len(events) - len(dead)


def test_http_v2_events_either_side_of_the_1mb_request_limit(tmp_path, gen_events, observer):
    # gzip on the wire makes both tiny; the 1 MB limit is on the decompressed body
    small = gen_events(20, devices=20)
    fits = _ev(100, device="device-big-ok", pad="x" * 990_000)
    over = _ev(101, device="device-big-no", pad="x" * 1_050_000)
    events = [*small[:10], over, *small[10:], fits]
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    started = time.monotonic()
    report, emu = asyncio.run(_with_emulator(tmp_path, events, observer, dlq=dlq,
                                             endpoint="httpapi"))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(r["line"], r["reason"]) for r in rows] == [(11, "event_too_large")]
    assert report.accepted == 21 and emu.ingestor.events_stored == 21
    assert report.splits == 0 and time.monotonic() - started < 30


@pytest.mark.parametrize("endpoint, cap, limit", [("httpapi", 4_000_000, 1_000_000),
                                                  ("batch", 20 << 20, 20_000_000)])
def test_a_byte_cap_above_the_endpoint_limit_is_refused_or_clamped(endpoint, cap, limit):
    with pytest.raises(Mp2AmpError) as refused:
        UploadSettings(api_key=KEY, endpoint=endpoint, max_bytes=cap)
    assert (f"amplitude.batch_max_bytes must be at most {limit:,} for the {endpoint} "
            f"endpoint (Amplitude answers 413 above it), got {cap:,}") in str(refused.value)
    assert UploadSettings(api_key=KEY, endpoint=endpoint, max_bytes=limit).limits.max_bytes \
        == limit
