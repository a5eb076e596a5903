"""The classifier on the exact bodies the Amplitude emulator answers (raw HTTP, no uploader)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import AuthError, ServerError
from mp2amp.load.responses import Verdict, classify

KEY = "bodies-key-1"


def ev(i: int, **kw: Any) -> dict[str, Any]:
    return {"event_type": "view", "device_id": f"device-{i:04d}", "time": 1_700_000_000_000 + i,
            "insert_id": f"b-{i}", **kw}


async def exchange(tmp_path: Path, requests: list[tuple[str, Any]],
                   faults: dict[str, Any] | None = None, **cfg: Any) -> list[Verdict]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY, **cfg))
    url = await emu.start()
    out = []
    try:
        async with aiohttp.ClientSession() as http:
            if faults:
                async with http.post(f"{url}/_emulator/faults", json=faults) as r:
                    assert r.status == 200
            for path, payload in requests:
                body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                events = payload.get("events", []) if isinstance(payload, dict) else []
                ids = [(e.get("device_id"), e.get("user_id")) for e in events] \
                    if isinstance(events, list) else []
                async with http.post(url + path, data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    out.append(classify(r.status, await r.read(), ids=ids))
    finally:
        await emu.stop()
    return out


def test_emulator_400_and_413_bodies(tmp_path: Path):
    many = [ev(i) for i in range(2001)]
    bad = [ev(0), ev(1, time="soon"), {"device_id": "device-0002", "insert_id": "x"},
           ev(3, device_id="ab")]
    verdicts = asyncio.run(exchange(tmp_path, [
        ("/batch", {"api_key": KEY, "events": [ev(0)]}),
        ("/batch", {"api_key": "not-the-key", "events": [ev(0)]}),
        ("/batch", b"{not json"),
        ("/batch", {"api_key": KEY}),
        ("/batch", {"api_key": KEY, "events": many}),
        ("/2/httpapi", {"api_key": KEY, "events": bad, "options": {"min_id_length": 5}}),
    ]))
    ok, wrong_key, not_json, missing, too_many, invalid = verdicts
    assert ok.kind == "accepted"
    assert wrong_key.kind == "stop" and isinstance(wrong_key.error, AuthError)
    assert "not-the-key" not in str(wrong_key.error)
    assert not_json.kind == "reject_all" and "Invalid JSON" in not_json.message
    assert missing.kind == "reject_all" and "events" in missing.message
    assert too_many.kind == "split"
    assert invalid.kind == "sort" and set(invalid.dead) == {1, 2, 3}
    assert invalid.dead[3][0] == "invalid_id_length"
    assert {invalid.dead[1][0], invalid.dead[2][0]} <= {"invalid_field", "missing_field"}


def test_emulator_429_and_5xx_bodies(tmp_path: Path):
    hot = [ev(0) for _ in range(40)]
    verdicts = asyncio.run(exchange(tmp_path, [
        ("/2/httpapi", {"api_key": KEY, "events": hot}),
        ("/2/httpapi", {"api_key": KEY, "events": [*hot, ev(7)]}),
    ], faults={"eps_limit": 1}))
    first, second = verdicts
    assert first.kind in ("accepted", "sort")
    assert second.kind == "sort" and "device-0000" in second.throttled_devices
    assert second.throttled == frozenset(range(40))  # device-0007's event is resent at once
    [quota] = asyncio.run(exchange(tmp_path / "q", [
        ("/batch", {"api_key": KEY, "events": [ev(0) for _ in range(5)]}),
    ], daily_quota=3))
    assert quota.kind == "sort" and quota.parked == frozenset(range(5))
    [failed] = asyncio.run(exchange(tmp_path / "f", [
        ("/batch", {"api_key": KEY, "events": [ev(0)]})], faults={"fail_rate": 1.0}))
    assert failed.kind == "retry" and isinstance(failed.error, ServerError)
