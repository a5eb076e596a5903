"""Per-device order and exactly-once delivery with far more devices than the uploader's
bounded caches hold (session 22 review). The real Amplitude emulator over loopback; the
load package's bounds are monkeypatched small so little data reaches the scale paths."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.load import Uploader, UploadSettings
from mp2amp.load import uploader as uploader_mod

KEY = "emulator-key-123"
T0 = 1_700_000_000_000


def fast_clock(speed: float = 100.0) -> Any:
    t0, real0 = 1_750_000_000.0, time.monotonic()
    return lambda: t0 + (time.monotonic() - real0) * speed


class Recorder:
    def __init__(self) -> None:
        self.sent: set[str] = set()
        self.accepted: dict[str, list[str]] = {}
        self.dead: list[tuple[str, str]] = []
        self.parked: list[str] = []

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        assert batch_id not in self.sent
        self.sent.add(batch_id)

    def on_batch_accepted(self, batch_id: str, events: Any) -> None:
        assert batch_id not in self.accepted
        self.accepted[batch_id] = [e.event["insert_id"] for e in events]

    def on_dead_letter(self, event: dict[str, Any], origin: Any, reason: str, message: str,
                       batch_id: str | None = None) -> None:
        self.dead.append((event["insert_id"], reason))

    def on_parked(self, event: dict[str, Any], origin: Any, reason: str,
                  batch_id: str) -> None:
        self.parked.append(event["insert_id"])


def events_for(devices: int, per_device: int, *, users: bool = True,
               prefix: str = "e") -> list[dict[str, Any]]:
    """Round-robin over ``devices`` devices, time ascending."""
    out = []
    n = devices * per_device
    for i in range(n):
        d = i % devices
        ev: dict[str, Any] = {"event_type": f"type_{i % 5}", "device_id": f"device-{d:06d}",
                              "time": T0 + i * 1000, "insert_id": f"{prefix}-{i:08d}"}
        if users:
            ev["user_id"] = f"user-{d:06d}"
        out.append(ev)
    return out


async def upload(tmp_path: Path, events: list[dict[str, Any]], *,
                 emu_kw: dict[str, Any] | None = None, faults: dict[str, Any] | None = None,
                 keys: list[str] | None = None, observer: Any = None,
                 **kw: Any) -> tuple[Any, list[dict[str, Any]], list[list[Any]]]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            **(emu_kw or {})))
    url = await emu.start()
    try:
        async with aiohttp.ClientSession() as http:
            if faults:
                async with http.post(f"{url}/_emulator/faults", json=faults) as r:
                    assert r.status == 200, await r.text()
            base: dict[str, Any] = dict(api_key=KEY, api_host=url, concurrency=4,
                                        backoff_base=0.002, backoff_cap=0.01,
                                        throttle_wait=0.02, endpoint="batch")
            base.update(kw)
            async with Uploader(UploadSettings(**base), observer=observer) as up:
                for i, e in enumerate(events):
                    key = keys[i] if keys else "2024-01-01"
                    await up.submit(e, ("day.jsonl", i + 1), batch_key=key)
                report = await up.close()
            async with http.get(f"{url}/_emulator/insert_ids") as r:
                ids = orjson.loads(await r.read())
    finally:
        await emu.stop()
    stored = list(emu.store.iter_events())
    return report, stored, ids


def order_problems(stored: list[dict[str, Any]]) -> list[str]:
    """Devices whose stored events (in storage order) go back in event time."""
    last: dict[str, int] = {}
    bad = []
    for ev in stored:
        d = ev.get("device_id") or ("u:" + str(ev.get("user_id")))
        if d in last and ev["time"] < last[d]:
            bad.append(f"{d}: {ev['insert_id']} at {ev['time']} after {last[d]}")
        last[d] = max(last.get(d, ev["time"]), ev["time"])
    return bad


def once_problems(ids: list[list[Any]], expected: list[str]) -> list[str]:
    counts = Counter()
    for row in ids:
        counts[row[1]] += row[2]
    missing = [i for i in expected if counts[i] == 0]
    twice = [i for i, c in counts.items() if c > 1]
    return [f"missing {len(missing)}: {missing[:5]}", f"twice {len(twice)}: {twice[:5]}"] \
        if missing or twice else []


# --- guards that hold: order and exactly-once with thousands of devices, a lane cache of 8 --


def test_thousands_of_devices_with_a_tiny_lane_cache_under_faults_and_throttles(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices evicted from the lane cache come back to their lane; 5xx, dropped answers,
    per-device/user 429s, 413 splits and 400 dead letters keep every device's stored events
    in time order, each insert_id stored once."""
    monkeypatch.setattr(uploader_mod, "LANE_CACHE", 8)
    from mp2amp.load import settings as settings_mod
    monkeypatch.setattr(settings_mod, "REQUEST_LIMIT_BYTES",
                        {"batch": 20_000_000, "httpapi": 4_000_000})
    events = events_for(1500, 6)
    for i, e in enumerate(events):
        d = i % 1500
        e["user_id"] = f"user-{d % 150:06d}"
        if d % 7 == 0:
            del e["device_id"]  # a user_id-only event: its lane is its user's
        e["event_properties"] = {"pad": "x" * (40_000 if i % 3 == 0 else 100)}
        if i % 101 == 0:
            e["time"] = "bad"  # a 400 naming it: dead-lettered, the rest sent again
    keys = [f"w{i // 1000}" for i in range(len(events))]
    rec = Recorder()
    report, stored, ids = asyncio.run(upload(
        tmp_path, events, keys=keys, observer=rec, endpoint="httpapi", max_bytes=2_000_000,
        max_events=80, max_pending_events=300, concurrency=5,
        emu_kw={"eps_limit": 1, "now": fast_clock(30)},
        faults={"fail_rate": 0.15, "drop_after_ingest_rate": 0.1, "seed": 5}))
    dead = {i for i, _ in rec.dead}
    assert dead == {e["insert_id"] for e in events if e["time"] == "bad"}
    assert min(report.splits, report.throttles, report.retries) > 0, report
    assert order_problems(stored) == []
    assert once_problems(ids, [e["insert_id"] for e in events if e["insert_id"] not in dead]) == []


# --- defects (fixed) -----------------------------------------------------------------


def test_accepted_events_pinned_by_a_held_device_stay_within_the_pending_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One device over the daily quota, with an event in about every batch of its lane:
    once it is held, each later batch of that lane is accepted but for that device's event,
    and the batch (BatchState.accepted: every accepted Submitted with its bytes) waits for
    the hold (park_delay, an hour; a throttle's 30 s alike). Backpressure counts only the
    held events, so the run keeps submitting while accepted events pile up."""
    monkeypatch.setattr(uploader_mod, "LANE_CACHE", 8)
    cap, batch = 100, 200
    peak = {"events": 0, "bytes": 0}
    original = Uploader.accepted

    def accepted(self: Uploader, items: Any) -> None:
        original(self, items)
        pinned = [i for s in self._batches.values() for i in s.accepted]
        if len(pinned) > peak["events"]:
            peak["events"] = len(pinned)
            peak["bytes"] = sum(len(i.data) for i in pinned)

    monkeypatch.setattr(Uploader, "accepted", accepted)
    events = []
    for i in range(12_000):
        device = "hot-device-1" if i % 200 == 0 else f"device-{i // 2:06d}"
        events.append({"event_type": "x", "device_id": device, "time": T0 + i,
                       "insert_id": f"e-{i:08d}", "event_properties": {"pad": "y" * 200}})
    rec = Recorder()
    report, stored, _ids = asyncio.run(upload(
        tmp_path, events, observer=rec, emu_kw={"daily_quota": 5}, max_events=batch,
        max_pending_events=cap, concurrency=2, park_delay=3600))
    assert report.parked > 0 and order_problems(stored) == []
    # at most the cap plus one batch's events in memory, whatever they wait for
    assert peak["events"] <= cap + batch, (
        f"{peak['events']} accepted events ({peak['bytes']:,} bytes) held in memory waiting "
        f"for a held device's event, with max_pending_events={cap}")
