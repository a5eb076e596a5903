"""Session 18 review: the real records of shared/fixtures/wild, field by field.

Every wild Mixpanel export event was taken through ``mp2amp migrate`` (files, the Export
API of UTC and legacy projects, the S3-import sink) and ``mp2amp transform`` and compared
with the reference mapping (platform-conventions.md §3, amplitude-api.md §1, docs/mapping.md).
No defect was confirmed in this area; the tests below guard behaviour that was confirmed
correct in ways the existing wild tests do not reach:

* the lines reader rejoins every real record split across two or three lines between its
  real neighbours (Mixpanel's export splits records; the existing wild tests split one);
* a legacy project in a half-hour zone (the wild README's "India: ``time`` *ahead* of
  ingestion" oddity, whose records are held out) served by the Export API: every real
  record reaches Amplitude at its UTC instant, times in ms, floats and ms times included;
* the transformer's memoized path gives, for every real record shape it has learnt, the
  same Amplitude event as a fresh transformer when one property's value changes type.
"""

from __future__ import annotations

import copy
import gzip
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.extract.lines import parse_lines
from mp2amp.models import Resolved
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.transform import Transformer, TransformSettings

WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"

pytestmark = pytest.mark.skipif(not WILD.is_dir(), reason=f"wild fixtures not present at {WILD}")

EXPORT = "mixpanel-export-events.jsonl"
INGEST = "mixpanel-ingestion-payloads.jsonl"
API_KEY = "wild-s18-key"
MS_ABOVE = 100_000_000_000  # a larger Mixpanel "time" is already in milliseconds
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}
MIXPANEL_FAST = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01,
                 "backoff_cap": 0.05}


def raw_lines(name: str) -> list[bytes]:
    return [line for line in (WILD / name).read_bytes().splitlines() if line.strip()]


def objects(lines: list[bytes]) -> list[dict[str, Any]]:
    return [v for v in map(orjson.loads, lines) if isinstance(v, dict)]


# === the lines reader: every real record split across lines ==================================


def test_every_real_record_split_in_two_anywhere_is_rejoined_between_its_neighbours() -> None:
    lines = raw_lines(EXPORT) + raw_lines(INGEST)
    for i, line in enumerate(lines):
        around = [lines[i - 1], line, lines[(i + 1) % len(lines)]]
        want = objects(around)
        for cut in range(1, len(line)):
            head, tail = line[:cut], line[cut:]
            if not head.strip() or not tail.strip():
                continue
            recs = list(parse_lines("wild", [around[0], head, tail, around[2]]))
            assert [r.record for r in recs if r.record is not None] == want, (i + 1, cut)
            assert len(recs) == 3, (i + 1, cut)


def test_every_real_export_record_split_in_three_is_rejoined() -> None:
    # middle pieces that are JSON by themselves (a number, "...", an object) included
    lines = raw_lines(EXPORT)
    for i, line in enumerate(lines):
        around = [lines[i - 1], line, lines[(i + 1) % len(lines)]]
        want = objects(around)
        for first in range(1, len(line), 7):
            for second in range(first + 1, len(line), 11):
                pieces = [line[:first], line[first:second], line[second:]]
                if not all(p.strip() for p in pieces):
                    continue
                recs = list(parse_lines("wild", [around[0], *pieces, around[2]]))
                got = [r.record for r in recs if r.record is not None]
                assert got == want, (i + 1, first, second)


# === a legacy project in a half-hour zone, through the Export API ============================


@contextmanager
def amplitude(data: Path) -> Iterator[str]:
    with AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY)).running() as url:
        yield url


def stored(data: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if not k.startswith("_")}
            for e in EventStore(data).iter_events()]


def _as_local(record: dict[str, Any], zone: ZoneInfo) -> tuple[dict[str, Any], int, date]:
    """The record as a legacy project in ``zone`` stores it (its ``time`` the local wall
    clock written as UTC, in the same unit and type), its real UTC ms and its local day."""
    out = copy.deepcopy(record)
    props = out["properties"]
    raw = props["time"]
    utc_s = raw / 1000 if raw > MS_ABOVE else raw
    offset = datetime.fromtimestamp(utc_s, UTC).astimezone(zone).utcoffset()
    assert offset is not None
    wall = utc_s + offset.total_seconds()
    if raw > MS_ABOVE:
        props["time"] = round(wall * 1000)
    else:
        props["time"] = wall if type(raw) is float else int(wall)
    return out, round(utc_s * 1000), datetime.fromtimestamp(wall, UTC).date()


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Australia/Lord_Howe"])
def test_real_records_of_a_half_hour_zone_legacy_project_land_at_their_utc_instant(
    tmp_path: Path, zone: str
) -> None:
    """The wild README's India record (``time`` 5.5 h *ahead* of Mixpanel's ingestion) is
    held out; here every real export record is stored the way such a project stores it
    (Asia/Kolkata, +5:30; Lord Howe, +10:30/+11 with a 30-minute DST) and migrated through
    the Mixpanel emulator's Export API with ``legacy_time``: each reaches Amplitude at the
    instant it has in the UTC file, in ms, floats and ms times included."""
    tz = ZoneInfo(zone)
    by_day: dict[date, list[bytes]] = {}
    want: Counter[tuple[str, int]] = Counter()  # (event, UTC ms) of the records sent
    for line in raw_lines(EXPORT):
        record = orjson.loads(line)
        local, utc_ms, day = _as_local(record, tz)
        by_day.setdefault(day, []).append(orjson.dumps(local))
        if record["properties"].get("distinct_id") and record["event"] != "$hotshard_record":
            want[(record["event"], utc_ms)] += 1
    root = tmp_path / "mp"
    (root / "events").mkdir(parents=True)
    (root / "profiles").mkdir()
    for day, lines in by_day.items():
        (root / "events" / f"{day.isoformat()}.jsonl.gz").write_bytes(
            gzip.compress(b"\n".join(lines) + b"\n"))
    (root / "profiles" / "users.jsonl.gz").write_bytes(gzip.compress(b""))
    (root / "project.json").write_bytes(orjson.dumps(
        {"project_id": 4242, "timezone": zone, "legacy_time": True, "group_keys": []}))
    emulator = MixpanelEmulator(MixpanelConfig(data_dir=root, export_per_hour=None,
                                               export_per_second=None))
    with emulator.running() as mp_url, amplitude(tmp_path / "amp") as url:
        cfg = load_config(None, {
            "source.from_date": min(by_day).isoformat(),
            "source.to_date": max(by_day).isoformat(),
            "source.export_window_days": 31,
            "mixpanel.api_host": mp_url, "mixpanel.project_id": 4242,
            "mixpanel.timezone": zone, "mixpanel.legacy_time": True,
            "amplitude.api_host": url, "run.workdir": str(tmp_path / "work"),
        }, env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "wild-secret"})
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=MIXPANEL_FAST)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert (result.totals["read"], result.totals["sent"], result.totals["skipped"],
            result.totals["rejected"]) == (21, 17, 1, 3)
    got = stored(tmp_path / "amp")
    assert sum(want.values()) == len(got) == 17
    assert Counter((e["event_type"], e["time"]) for e in got) == want
    assert all(type(e["time"]) is int for e in got)


# === the memoized path on every real record shape ===========================================

_VALUES: tuple[Any, ...] = (
    "x", "", " ", "é", "a" * 1100, 0, 1, -1, 0.0, -0.0, 1.5, 812.0, True, False, None,
    [1, "a"], {"k": 1}, "US", "iOS", "Android", "web", "12", "0", "Mac OS X", "$direct",
)


@pytest.mark.parametrize("settings", [
    TransformSettings(),
    TransformSettings(legacy_time=True, timezone="America/Los_Angeles"),
], ids=["utc", "legacy-pacific"])
def test_a_learnt_real_shape_with_one_value_changed_maps_as_a_fresh_transformer_does(
    settings: TransformSettings,
) -> None:
    records = objects(raw_lines(EXPORT))
    ids = Resolved("wild-user-1", "wild-device-1")
    for record in records:
        learnt = Transformer(settings)
        for _ in range(2):  # the first sight learns the shape, the second its context
            learnt.event(copy.deepcopy(record), ids)
        for key in record["properties"]:
            if key == "time":
                continue
            for value in _VALUES:
                changed = copy.deepcopy(record)
                changed["properties"][key] = value
                fast = learnt.event(copy.deepcopy(changed), ids)
                fresh = Transformer(settings).event(copy.deepcopy(changed), ids)
                if isinstance(fresh, dict):
                    assert isinstance(fast, dict), (record["event"], key, value, fast)
                    assert orjson.dumps(fast, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
                        fresh, option=orjson.OPT_SORT_KEYS), (record["event"], key, value)
                else:
                    assert repr(fast) == repr(fresh), (record["event"], key, value)
