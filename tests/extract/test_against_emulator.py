"""Export client and Engage pager against mp2amp's Mixpanel emulator, over loopback."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mp2amp.errors import AuthError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.export import WindowFile, fetch_windows, iter_window_records

mixpanel = pytest.importorskip("mp2amp.emulators.mixpanel")

DAYS = [date(2024, 3, d) for d in (1, 2, 3)]
PER_DAY = 40
PROFILES = 250


def write_project(root: Path) -> dict[str, list[dict[str, Any]]]:
    (root / "events").mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "project.json").write_text(json.dumps(
        {"project_id": 42, "timezone": "UTC", "legacy_time": False, "group_keys": []}))
    by_day = {}
    for day in DAYS:
        base = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        evs = [{"event": f"E{i % 3}", "properties": {
            "time": base + i * 60, "distinct_id": f"u{i}", "$insert_id": f"{day}-{i}",
            "note": "x" * 50}} for i in range(PER_DAY)]
        body = "".join(json.dumps(e) + "\n" for e in evs).encode()
        (root / "events" / f"{day}.jsonl.gz").write_bytes(gzip.compress(body))
        by_day[day.isoformat()] = evs
    profiles = [{"$distinct_id": f"u{i}", "$properties": {"$email": f"u{i}@x.io", "n": i}}
                for i in range(PROFILES)]
    (root / "profiles" / "users.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(p) + "\n" for p in profiles).encode()))
    return by_day


def emulator(root: Path, **kw: Any) -> Any:
    opts: dict[str, Any] = {"data_dir": root, "port": 0, "service_account": "svc:pw",
                            "export_per_hour": 1000, "clock": time.time}
    opts.update(kw)
    return mixpanel.MixpanelEmulator(mixpanel.MixpanelConfig(**opts))


def client(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "backoff_base": 0.01}
    opts.update(kw)
    return MixpanelSettings(**opts)


async def control(base: str, path: str, body: dict[str, Any]) -> Any:
    async with aiohttp.ClientSession() as s, s.post(base + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def stats(base: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(base + "/_emulator/stats") as resp:
        return await resp.json()


def check_windows(windows: list[WindowFile], by_day: dict[str, list[dict[str, Any]]]) -> None:
    assert sorted(w.day for w in windows) == DAYS
    for w in windows:
        recs = list(iter_window_records(w))
        assert w.record_count == len(recs) and w.rejected_count == 0
        assert [r.record for r in recs] == by_day[w.day.isoformat()]


def test_faults_refetch_whole_windows_and_every_record_arrives_once(tmp_path: Path) -> None:
    by_day = write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj")

    async def main() -> tuple[list[WindowFile], Any]:
        base = await emu.start()
        try:
            await control(base, "/_emulator/faults",
                          {"queue": ["terminated_early", "drop", "split"], "after_lines": 5})
            windows = [w async for w in fetch_windows(client(base), DAYS, tmp_path / "work",
                                                      concurrency=3)]
            return windows, await stats(base)
        finally:
            await emu.stop()

    windows, st = asyncio.run(main())
    check_windows(windows, by_day)
    assert st["faults_injected"] == {"terminated_early": 1, "drop": 1, "split": 1}
    served = st["requests"]["export_requests"] - st["requests"].get("export_429", 0)
    assert served == len(DAYS) + 2  # two windows fetched again
    assert sorted(w.attempts for w in windows) == [1, 2, 2]


def test_429_from_the_emulator_is_waited_out(tmp_path: Path) -> None:
    by_day = write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj", export_per_second=1)

    async def main() -> tuple[list[WindowFile], Any]:
        base = await emu.start()
        try:
            windows = [w async for w in fetch_windows(client(base, per_second=100), DAYS[:2],
                                                      tmp_path / "work", concurrency=2)]
            return windows, await stats(base)
        finally:
            await emu.stop()

    windows, st = asyncio.run(main())
    assert st["requests"].get("export_429", 0) >= 1
    for w in windows:
        assert [r.record for r in iter_window_records(w)] == by_day[w.day.isoformat()]


def test_wrong_credentials_against_the_emulator(tmp_path: Path) -> None:
    write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj")

    async def main() -> None:
        base = await emu.start()
        try:
            async for _ in fetch_windows(client(base, service_account="svc:bad"), DAYS,
                                         tmp_path / "work"):
                pass
        finally:
            await emu.stop()

    with pytest.raises(AuthError, match="MIXPANEL_SERVICE_ACCOUNT"):
        asyncio.run(main())


def test_engage_pages_through_every_profile(tmp_path: Path) -> None:
    write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj", engage_page_size=100)

    async def main() -> tuple[list[Any], EngagePager]:
        base = await emu.start()
        try:
            pager = EngagePager(client(base))
            return [r async for r in pager.records()], pager
        finally:
            await emu.stop()

    recs, pager = asyncio.run(main())
    assert pager.total == PROFILES and pager.pages == 3 and pager.count == PROFILES
    assert [r.record["$distinct_id"] for r in recs] == [f"u{i}" for i in range(PROFILES)]
    assert [r.line for r in recs] == list(range(1, PROFILES + 1))
    assert recs[0].source == "engage"


def test_engage_where_and_output_properties(tmp_path: Path) -> None:
    write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj", engage_page_size=100)

    async def main() -> list[Any]:
        base = await emu.start()
        try:
            pager = EngagePager(client(base), where='properties["n"] < 5',
                                output_properties=["n"])
            return [r.record async for r in pager.records()]
        finally:
            await emu.stop()

    got = asyncio.run(main())
    assert [p["$properties"] for p in got] == [{"n": i} for i in range(5)]


def test_engage_bad_credentials(tmp_path: Path) -> None:
    write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj")

    async def main() -> None:
        base = await emu.start()
        try:
            async for _ in EngagePager(client(base, service_account="svc:nope")).records():
                pass
        finally:
            await emu.stop()

    with pytest.raises(AuthError, match="engage"):
        asyncio.run(main())
