"""The uploader against the real Amplitude emulator (in-process, loopback) under faults."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import AuthError
from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.batcher import ENVELOPE_BYTES, REQUEST_LIMIT_BYTES
from mp2amp.load.deadletter import read_dead_letters
from mp2amp.load.sender import Sender

KEY = "emulator-key-123"


def fast_clock(speed: float = 100.0) -> Any:
    """Emulator time that runs ``speed`` times faster, so 30-second throttle windows pass
    in a fraction of a second (the emulator takes its clock as a setting)."""
    t0, real0 = 1_750_000_000.0, time.monotonic()
    return lambda: t0 + (time.monotonic() - real0) * speed


async def run_upload(tmp_path: Path, events: list[dict[str, Any]], observer: Any, *,
                     faults: dict[str, Any] | None = None, emu_kw: dict[str, Any] | None = None,
                     dlq: DeadLetterFile | None = None, api_key: str = KEY,
                     pause: float = 0.0, **kw: Any) -> tuple[Any, list[list[Any]]]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            **(emu_kw or {})))
    url = await emu.start()
    try:
        async with aiohttp.ClientSession() as http:
            if faults:
                async with http.post(f"{url}/_emulator/faults", json=faults) as r:
                    assert r.status == 200, await r.text()
            base: dict[str, Any] = dict(api_key=api_key, api_host=url, concurrency=4,
                                        backoff_base=0.005, backoff_cap=0.05, throttle_wait=0.05)
            base.update(kw)
            try:
                async with Uploader(UploadSettings(**base), observer=observer,
                                    dead_letters=dlq) as up:
                    for i, e in enumerate(events):
                        await up.submit(e, ("day.jsonl", i + 1), batch_key="2024-01-01")
                    if pause:  # the run goes on (other windows) while parked events wait
                        await up.flush("2024-01-01")
                        await asyncio.sleep(pause)
                    report = await up.close()
            finally:
                async with http.get(f"{url}/_emulator/insert_ids") as r:
                    stored = orjson.loads(await r.read())
        return report, stored
    finally:
        await emu.stop()


def assert_exactly_once(stored: list[list[Any]], expected: list[str]) -> None:
    ids = [row[1] for row in stored]
    assert sorted(ids) == sorted(expected)
    assert all(row[2] == 1 for row in stored)


def test_high_fault_rates_end_with_exactly_the_expected_set(tmp_path, gen_events, observer):
    events = gen_events(6000, devices=60)
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, max_events=250,
        faults={"fail_rate": 0.35, "drop_after_ingest_rate": 0.25, "seed": 11}))
    assert_exactly_once(stored, [e["insert_id"] for e in events])
    assert report.accepted == 6000 and report.settled == 6000
    assert report.retries > 0 and report.requests_by_status["connection_error"] > 0
    assert sorted(observer.accepted_ids()) == sorted(e["insert_id"] for e in events)


def test_429_storm_with_a_small_eps_limit(tmp_path, gen_events, observer):
    events = gen_events(3000, devices=10)
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, max_events=200, endpoint="httpapi",
        emu_kw={"now": fast_clock(200.0)}, faults={"eps_limit": 5}))
    assert_exactly_once(stored, [e["insert_id"] for e in events])
    assert report.throttles > 0 and report.requests_by_status["429"] > 0
    assert not report.dead_lettered


def test_a_hot_device_above_its_whole_rate_budget_still_gets_through(tmp_path, gen_events,
                                                                     observer):
    # eps_limit 2 averaged over 30 s: at most 60 events of one device per window, while a
    # request would carry up to 200 of them; the lane shrinks its requests until they fit
    events = gen_events(400, devices=1)
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, max_events=200, endpoint="httpapi",
        emu_kw={"now": fast_clock(300.0)}, faults={"eps_limit": 2}))
    assert_exactly_once(stored, [e["insert_id"] for e in events])
    assert report.throttles > 0


def test_413_on_the_1mb_http_v2_limit_splits(tmp_path, gen_events, observer, monkeypatch):
    # A cap past the endpoint's limit is refused up front; Amplitude answering 413 below
    # the cap (a limit lowered, or counted another way) is what this one stands for.
    monkeypatch.setitem(REQUEST_LIMIT_BYTES, "httpapi", 8_000_000)
    events = gen_events(2500, devices=5)
    for e in events:
        e["event_properties"]["pad"] = "x" * 900
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, endpoint="httpapi", max_bytes=8_000_000, concurrency=2))
    assert_exactly_once(stored, [e["insert_id"] for e in events])
    assert report.splits > 0 and report.requests_by_status["413"] == report.splits


def test_a_full_http_v2_batch_at_the_default_cap_is_accepted_without_a_413(
        tmp_path, gen_events, observer, monkeypatch):
    # ~640-byte events: a batch closes on bytes (~1560 events), not on the 2000-event cap
    events = gen_events(4000, devices=1)
    for e in events:
        e["event_properties"]["pad"] = "x" * 500
    sizes: list[int] = []
    body = Sender.body

    def recording(self: Sender, items: Any) -> tuple[bytes, int]:
        out = body(self, items)
        sizes.append(out[1])
        return out

    monkeypatch.setattr(Sender, "body", recording)
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, endpoint="httpapi", concurrency=1,
        emu_kw={"eps_limit": 1_000_000}))
    assert_exactly_once(stored, [e["insert_id"] for e in events])
    assert report.requests_by_status == {"200": report.requests} and report.splits == 0
    event_size = max(len(orjson.dumps(e)) for e in events)
    cap = UploadSettings(api_key="k", endpoint="httpapi").limits.max_bytes
    assert cap - 2 * event_size - ENVELOPE_BYTES < max(sizes) <= cap  # batches did fill


def test_invalid_events_are_dead_lettered_with_their_origin(tmp_path, gen_events, observer):
    events = gen_events(1500, devices=30)
    bad = {3: "event_type", 400: "time", 401: "time", 1499: "device_id"}
    for i, fld in bad.items():
        if fld == "event_type":
            del events[i]["event_type"]
        elif fld == "time":
            events[i]["time"] = "2024-01-01"
        else:
            events[i]["device_id"] = "abc"   # shorter than min_id_length=5
            events[i].pop("user_id", None)
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, dlq=dlq, min_id_length=5,
        faults={"fail_rate": 0.2, "seed": 5}))
    dlq.close()
    assert_exactly_once(stored, [e["insert_id"] for i, e in enumerate(events) if i not in bad])
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted(r["line"] for r in rows) == sorted(i + 1 for i in bad)
    assert all(r["source"] == "day.jsonl" and r["message"] for r in rows)
    by_line = {r["line"]: r["reason"] for r in rows}
    assert by_line[1500] == "invalid_id_length"
    assert sum(report.dead_lettered.values()) == 4 and report.settled == 1500


def test_per_device_order_is_kept_under_faults(tmp_path, gen_events, observer):
    events = gen_events(3000, devices=12)
    _, stored = asyncio.run(run_upload(
        tmp_path, events, observer, max_events=50, concurrency=6,
        faults={"fail_rate": 0.3, "drop_after_ingest_rate": 0.1, "seed": 2}))
    order: dict[str, list[str]] = {}
    for who, insert_id, _ in stored:   # the emulator lists events in the order it stored them
        order.setdefault(who, []).append(insert_id)
    expected: dict[str, list[str]] = {}
    for e in events:
        expected.setdefault(e["device_id"], []).append(e["insert_id"])
    assert order == expected


def test_invalid_api_key_stops_the_run(tmp_path, gen_events, observer):
    with pytest.raises(AuthError, match="AMPLITUDE_API_KEY") as info:
        asyncio.run(run_upload(tmp_path, gen_events(20), observer, api_key="wrong-key-999"))
    assert "wrong-key-999" not in str(info.value)
    assert not observer.accepted


def test_daily_quota_is_parked_then_sent_when_the_hours_roll_over(tmp_path, gen_events,
                                                                   observer):
    events = gen_events(900, devices=3)
    # 24 emulator hours pass in under a second: the quota of 150/day frees up during the run
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, max_events=100, park_delay=0.05, park_retries=100,
        pause=2.5, emu_kw={"now": fast_clock(100_000.0), "daily_quota": 150}))
    assert_exactly_once(stored, [e["insert_id"] for e in events])
    assert report.requests_by_status["429"] > 0 and report.parked == 0 and not observer.parked


def test_daily_quota_still_exceeded_at_close_is_parked_for_resume(tmp_path, gen_events,
                                                                  observer):
    events = gen_events(600, devices=3)
    report, stored = asyncio.run(run_upload(
        tmp_path, events, observer, max_events=100, park_delay=3600, park_retries=2,
        emu_kw={"daily_quota": 150}))
    parked = sorted(e["insert_id"] for e, _, _ in observer.parked)
    # the emulator admits a request only when every id in it stays under the quota, so at
    # least 600 - 3 * 150 events are left over; each device's parked events are its last ones
    assert report.parked == len(parked) >= 600 - 3 * 150
    for device in {e["device_id"] for e in events}:
        mine = [e["insert_id"] for e in events if e["device_id"] == device]
        mine_parked = [i for i in mine if i in set(parked)]
        assert mine_parked == mine[len(mine) - len(mine_parked):]
    assert_exactly_once(stored, sorted(set(e["insert_id"] for e in events) - set(parked)))
    assert report.settled == 600 and report.elapsed < 60  # did not wait out park_delay
