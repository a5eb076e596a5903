"""Session-17 review: the Amplitude load path's less-used options (HTTP V2, EU residency,
batching limits), driven over loopback against scripted Amplitudes.

Each ``xfail(strict=True)`` test pins one defect (the reason says what is wrong) and asserts
the behaviour the reference / README asks for; the unmarked tests pin boundaries that hold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from mp2amp.errors import Mp2AmpError
from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.deadletter import read_dead_letters
from shared_kit import serve_routes

KEY = "httpv2-eu-review-key"
EVENT_MS = 1_700_000_000_000
OK = {"code": 200, "events_ingested": 1, "payload_size_bytes": 1, "server_upload_time": 1}


def _ev(i: int, device: str) -> dict[str, Any]:
    return {"event_type": "view", "device_id": device, "time": EVENT_MS + i,
            "insert_id": f"s17-{i:06d}"}


def _settings(url: str, **kw: Any) -> UploadSettings:
    base: dict[str, Any] = dict(api_key=KEY, api_host=url, endpoint="httpapi", region="eu",
                                concurrency=2, backoff_base=0.005, backoff_cap=0.02,
                                max_retries=3)
    base.update(kw)
    return UploadSettings(**base)


# --- defects ----------------------------------------------------------------------------


def test_a_throttled_devices_later_events_do_not_pile_up_past_the_pending_cap() -> None:
    # Amplitude throttles device-hot once (HTTP V2: pause it 30 s; 1.5 s here); the run goes
    # on submitting, half of its events for that device. Backpressure is 200 events.
    throttled: set[str] = set()

    async def handler(request: web.Request) -> web.Response:
        events = orjson.loads(await request.read())["events"]
        hot = [i for i, e in enumerate(events) if e["device_id"] == "device-hot"]
        if hot and "device-hot" not in throttled:
            throttled.add("device-hot")
            return web.json_response(
                {"code": 429, "error": "Too many requests for some devices and users",
                 "eps_threshold": 30, "throttled_devices": {"device-hot": 31},
                 "throttled_users": {}, "throttled_events": hot}, status=429)
        return web.json_response({**OK, "events_ingested": len(events)})

    async def run() -> tuple[int, int, int]:
        async with serve_routes({("POST", "/2/httpapi"): handler}) as url:
            settings = _settings(url, max_events=50, max_pending_events=200,
                                 throttle_wait=1.5)
            peak = 0
            async with Uploader(settings) as up:
                for i in range(4000):
                    device = "device-hot" if i % 2 else f"device-{i % 97:03d}"
                    await up.submit(_ev(i, device), ("src.jsonl", i + 1), batch_key="w")
                    peak = max(peak, up.holds.held_events)
                report = await up.close()
            return peak, settings.pending_cap, report.accepted

    peak, cap, accepted = asyncio.run(run())
    assert accepted == 4000
    assert peak <= cap, f"{peak} events held in memory with backpressure at {cap}"


@pytest.mark.parametrize("content_type, page", [
    ("text/html", "<html><head><title>400 The plain HTTP request was sent to HTTPS port"
                  "</title></head><body><center><h1>400 Bad Request</h1></center><hr>"
                  "<center>nginx</center></body></html>"),
    ("text/plain", "Bad Request"),
])
def test_a_400_that_is_not_amplitudes_answer_stops_the_run_nothing_dead_lettered(
        tmp_path: Path, content_type: str, page: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, text=page, content_type=content_type)

    async def run() -> tuple[BaseException | None, Any]:
        dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
        async with serve_routes({("POST", "/2/httpapi"): handler}) as url:
            try:
                async with Uploader(_settings(url, concurrency=1), dead_letters=dlq) as up:
                    for i in range(30):
                        await up.submit(_ev(i, f"device-{i:03d}"), ("src.jsonl", i + 1),
                                        batch_key="w")
                    return None, await up.close()
            except Mp2AmpError as exc:
                return exc, None
            finally:
                dlq.close()

    error, report = asyncio.run(run())
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert rows == [], f"{len(rows)} events dead-lettered ({rows[0]['reason']})"
    assert error is not None, report.to_dict()


@pytest.mark.parametrize("region, host", [
    ("eu", "https://api2.amplitude.com"),
    ("eu", "https://api.amplitude.com/"),
    ("us", "https://api.eu.amplitude.com"),
])
def test_a_region_contradicted_by_an_amplitude_api_host_is_refused_naming_both(
        region: str, host: str) -> None:
    from mp2amp.config import load_config
    from mp2amp.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, {"amplitude.region": region, "amplitude.api_host": host}, env={})
    text = str(info.value)
    assert "region" in text and host.rstrip("/") in text, text


@pytest.mark.parametrize("region", ["us", "eu"])
@pytest.mark.parametrize("host", ["http://127.0.0.1:8040", "https://amp-proxy.internal",
                                  "https://api2.amplitude.com.evil.example"])
def test_a_host_that_is_not_amplitudes_own_goes_with_either_region(region: str,
                                                                   host: str) -> None:
    from mp2amp.config import load_config

    config = load_config(None, {"amplitude.region": region, "amplitude.api_host": host},
                         env={})
    assert config.amplitude.api_host == host
    assert UploadSettings(api_key=KEY, region=region, api_host=host).url.startswith(host)


def test_upload_settings_refuse_an_amplitude_host_of_the_other_region_too() -> None:
    from mp2amp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"amplitude\.region is 'eu'"):
        UploadSettings(api_key=KEY, region="eu", api_host="https://api2.amplitude.com")
    assert UploadSettings(api_key=KEY, region="eu",
                          api_host="https://api.eu.amplitude.com").region == "eu"


# --- the fixes' boundaries ------------------------------------------------------------------


def test_a_foreign_400_stop_names_the_url_and_what_to_do_while_amplitudes_own_is_kept() -> None:
    from mp2amp.load.responses import classify

    ids = [("device-000", None)] * 3
    url = "http://amp.example:443/2/httpapi"
    for body in (b"", b"Bad Request", b"[]", b'{"message": "Bad Request"}'):
        v = classify(400, body, ids=ids, url=url)
        assert v.kind == "stop", body
        assert url in str(v.error) and "--resume" in str(v.error), v.error
    # Amplitude's own 400 that names no event still rejects the request (the run goes on)
    v = classify(400, b'{"code": 400, "error": "Invalid event JSON"}', ids=ids, url=url)
    assert v.kind == "reject_all" and v.reason == "request_rejected"
    key = classify(400, b'{"code": 400, "error": "Invalid API key: k"}', ids=ids, url=url)
    assert key.kind == "stop" and url in str(key.error)


def test_when_every_pending_event_is_a_held_devices_the_hold_ends_and_the_run_goes_on(
        fake_cls: Any) -> None:
    # one device only: once it is throttled, every pending event is held; submit() waits
    # for the cap, the hold's timer must still release them and submit() must resume
    fake = fake_cls(throttle_devices={"device-only": 2})

    async def run() -> tuple[Any, int]:
        url = await fake.start()
        try:
            settings = UploadSettings(api_key="test-key", api_host=url, concurrency=1,
                                      max_events=10, max_pending_events=20, throttle_wait=0.2,
                                      backoff_base=0.005, backoff_cap=0.02)
            peak = 0
            async with Uploader(settings) as up:
                for i in range(300):
                    await up.submit(_ev(i, "device-only"), ("src.jsonl", i + 1))
                    peak = max(peak, up.holds.held_events)
                return await up.close(), peak
        finally:
            await fake.stop()

    report, peak = asyncio.run(asyncio.wait_for(run(), timeout=60))
    assert report.accepted == 300 and report.throttles >= 2
    assert peak <= 20
    assert fake.arrival["device-only"] == [f"s17-{i:06d}" for i in range(300)]  # in order


def test_a_daily_quota_hold_is_bounded_its_events_parked_not_held_an_hour(
        fake_cls: Any, observer: Any) -> None:
    # device-q is over its daily quota all run; park_delay is the default hour. Its events
    # must not pile up in memory nor stall the run for an hour: once they fill half the
    # cap they are parked (the ledger keeps them; --resume sends them), in order
    fake = fake_cls(quota_devices={"device-q"})

    async def run() -> tuple[Any, int]:
        url = await fake.start()
        try:
            settings = UploadSettings(api_key="test-key", api_host=url, concurrency=2,
                                      max_events=10, max_pending_events=100,
                                      backoff_base=0.005, backoff_cap=0.02)
            assert settings.park_delay == 3600
            peak = 0
            async with Uploader(settings, observer=observer) as up:
                for i in range(2000):
                    device = "device-q" if i % 2 else f"device-{i % 37:03d}"
                    await up.submit(_ev(i, device), ("src.jsonl", i + 1))
                    peak = max(peak, up.holds.held_events)
                return await up.close(), peak
        finally:
            await fake.stop()

    report, peak = asyncio.run(asyncio.wait_for(run(), timeout=60))
    assert report.accepted == 1000 and report.parked == 1000
    assert report.submitted == report.settled
    assert peak <= 100
    parked = [e["insert_id"] for e, _, reason in observer.parked]
    assert parked == [f"s17-{i:06d}" for i in range(1, 2000, 2)]  # each once, in order
    carried = sum(1 for _, ids, _ in fake.requests for i in ids if int(i[4:]) % 2)
    assert carried < 100, f"{carried} events of the device over its quota were sent"


def test_a_small_quota_hold_keeps_its_retry_later_in_the_run(fake_cls: Any,
                                                             observer: Any) -> None:
    # a few events over the quota fill far less than half the cap: they wait park_delay in
    # memory and are tried again (here the quota has room again by then)
    fake = fake_cls(quota_devices={"device-q"})

    async def run() -> Any:
        url = await fake.start()
        try:
            settings = UploadSettings(api_key="test-key", api_host=url, concurrency=1,
                                      max_events=5, max_pending_events=100, park_delay=0.3,
                                      backoff_base=0.005, backoff_cap=0.02)
            async with Uploader(settings, observer=observer) as up:
                for i in range(60):
                    device = "device-q" if i in (3, 4) else f"device-{i % 7:03d}"
                    await up.submit(_ev(i, device), ("src.jsonl", i + 1))
                await asyncio.sleep(0.05)
                fake.quota_devices.clear()
                return await up.close()
        finally:
            await fake.stop()

    report = asyncio.run(asyncio.wait_for(run(), timeout=60))
    assert report.accepted == 60 and report.parked == 0 and not observer.parked
