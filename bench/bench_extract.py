"""Extract throughput: records/s out of iter_records (gzipped JSON lines) and out of the
Raw Export client (emulator on loopback, whole windows to disk then read back).

Baselines, measured in the same run: the naive reader (``gzip.open`` + ``json.loads`` per
line, no accounting) and, for export, a plain aiohttp download of the same days.
Goal: extract must not be what limits migrate's end-to-end goal of 50k events/s.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from mp2amp.extract import iter_records
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import fetch_windows, iter_window_records


def _event(i: int, base: int) -> dict[str, Any]:
    return {"event": f"Event {i % 20}", "properties": {
        "time": base + i % 86_000, "distinct_id": f"user-{i % 5000}", "$insert_id": f"ins-{i}",
        "$browser": "Chrome", "$os": "Mac OS X", "$current_url": "https://example.com/p/" + str(i),
        "mp_lib": "web", "plan": "pro", "price": i % 100 / 3}}


def _write_days(root: Path, days: list[date], per_day: int) -> Path:
    events = root / "events"
    events.mkdir(parents=True)
    for day in days:
        base = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        body = "".join(json.dumps(_event(i, base)) + "\n" for i in range(per_day)).encode()
        (events / f"{day}.jsonl.gz").write_bytes(gzip.compress(body, 6))
    (root / "project.json").write_text(json.dumps({"project_id": 7, "timezone": "UTC",
                                                   "legacy_time": False}))
    return events


def _bench_files(events: Path) -> list[dict[str, Any]]:
    paths = sorted(str(p) for p in events.glob("*.jsonl.gz"))
    t0 = time.perf_counter()
    n = sum(1 for r in iter_records(paths) if r.record is not None)
    ours = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    m = 0
    for p in paths:
        with gzip.open(p, "rt") as fh:
            for line in fh:
                json.loads(line)
                m += 1
    naive = m / (time.perf_counter() - t0)
    assert n == m
    return [{"name": "extract: iter_records, gzipped JSONL", "value": ours, "unit": "records/s",
             "baseline": naive, "goal": ">= 200k records/s and >= the naive json.loads reader"}]


async def _bench_export(root: Path, days: list[date], total: int) -> list[dict[str, Any]]:
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    emu = MixpanelEmulator(MixpanelConfig(data_dir=root, port=0, service_account="u:p",
                                          export_per_hour=None, export_per_second=None))
    base = await emu.start()
    try:
        settings = MixpanelSettings(project_id=7, api_host=base, service_account="u:p",
                                    per_hour=100_000, per_second=100_000)
        t0 = time.perf_counter()
        n = 0
        async for w in fetch_windows(settings, days, root / "work", concurrency=4):
            n += sum(1 for r in iter_window_records(w) if r.record is not None)
        ours = n / (time.perf_counter() - t0)
        assert n == total
        t0 = time.perf_counter()
        m = 0
        async with aiohttp.ClientSession(auth=aiohttp.BasicAuth("u", "p")) as s:
            for day in days:
                params = {"project_id": "7", "from_date": str(day), "to_date": str(day)}
                async with s.get(base + "/api/2.0/export", params=params) as resp:
                    m += (await resp.read()).count(b"\n")
        plain = m / (time.perf_counter() - t0)
    finally:
        await emu.stop()
    return [{"name": "extract: Raw Export windows fetched, counted, read back", "value": ours,
             "unit": "records/s", "baseline": plain,
             "goal": "same order as a plain download (which parses nothing)"}]


def run(quick: bool) -> list[dict[str, Any]]:
    per_day = 20_000 if quick else 100_000
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(3 if quick else 5)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        events = _write_days(root, days, per_day)
        rows = _bench_files(events)
        rows += asyncio.run(_bench_export(root, days, per_day * len(days)))
    return rows
