"""Every real Engage profile in shared/fixtures/wild goes through mp2amp's Engage pager.

The profiles are served by the Mixpanel emulator (three per page, so the pager follows
``session_id`` across pages) and must come back in order, byte for byte as JSON: the
integer ``$distinct_id``, ``$transactions`` lists and nested ``$campaigns`` included.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager

mixpanel = pytest.importorskip("mp2amp.emulators.mixpanel")

WILD = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "wild"
PROFILES = WILD / "mixpanel-engage-profiles.jsonl"

pytestmark = pytest.mark.skipif(
    not PROFILES.is_file(), reason=f"real-record fixtures not present at {WILD}")


def _project(root: Path, lines: list[bytes]) -> None:
    (root / "events").mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "project.json").write_text(json.dumps(
        {"project_id": 42, "timezone": "UTC", "legacy_time": False, "group_keys": []}))
    (root / "profiles" / "users.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))


def _pages(root: Path, **pager_kw: Any) -> tuple[list[Any], EngagePager]:
    emu = mixpanel.MixpanelEmulator(mixpanel.MixpanelConfig(
        data_dir=root, port=0, service_account="svc:pw", export_per_hour=1000,
        clock=time.time, engage_page_size=3))

    async def main() -> tuple[list[Any], EngagePager]:
        base = await emu.start()
        try:
            pager = EngagePager(MixpanelSettings(project_id=42, api_host=base,
                                                 service_account="svc:pw", per_hour=1000,
                                                 backoff_base=0.01), **pager_kw)
            return [r async for r in pager.records()], pager
        finally:
            await emu.stop()

    return asyncio.run(main())


def test_every_real_profile_comes_through_the_pager_as_sent(tmp_path: Path) -> None:
    lines = [line for line in PROFILES.read_bytes().splitlines() if line.strip()]
    assert len(lines) == 7
    _project(tmp_path / "p", lines)
    recs, pager = _pages(tmp_path / "p")
    assert (pager.total, pager.pages, pager.count) == (7, 3, 7)
    assert [orjson.dumps(r.record) for r in recs] == [orjson.dumps(orjson.loads(x)) for x in lines]
    assert [(r.source, r.line) for r in recs] == [("engage", i) for i in range(1, 8)]
    ids = [r.record["$distinct_id"] for r in recs]
    assert 1 in ids and type(ids[ids.index(1)]) is int  # the integer id stays an integer


def test_real_profiles_filtered_by_where_on_their_own_properties(tmp_path: Path) -> None:
    lines = [line for line in PROFILES.read_bytes().splitlines() if line.strip()]
    _project(tmp_path / "p", lines)
    profiles = [orjson.loads(x) for x in lines]
    with_email = [p for p in profiles if "$email" in p["$properties"]]
    assert 0 < len(with_email) < len(profiles)
    recs, pager = _pages(tmp_path / "p", where='defined(properties["$email"])')
    assert [orjson.dumps(r.record) for r in recs] == [orjson.dumps(p) for p in with_email]
    assert pager.count == len(with_email)
