"""``generate_project``: write a synthetic Mixpanel project (layout: docs/contracts.md §1).

Day by day in the project's timezone, person by person, events go straight into that
day's gzip file; nothing holds more than one buffer of lines, so memory grows with the
number of people (their plans and truth keys), never with the number of events.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mp2amp.errors import ConfigError
from mp2amp.generate import profiles
from mp2amp.generate.dirt import SHORT, Dirt, short_id_share
from mp2amp.generate.industries import FUNNELS, INDUSTRIES
from mp2amp.generate.people import plan_people
from mp2amp.generate.planner import DayPlanner
from mp2amp.generate.schema import SchemaSampler
from mp2amp.generate.sessions import Emitter
from mp2amp.generate.truth import DAY_MS, Truth
from mp2amp.generate.writer import GzipLines, write_json, write_jsonl_gz

ID_MERGE = ("simplified", "original")
MAX_DAYS = 3660
MAX_USERS = 10_000_000


@dataclass(frozen=True, slots=True)
class GenerateConfig:
    out: Path
    users: int = 1000
    days: int = 7
    start: date = date(2024, 1, 1)
    seed: int = 1
    id_merge: str = "simplified"
    timezone: str = "America/Los_Angeles"
    legacy_time: bool = False
    dirty: float = 0.001
    industries: tuple[str, ...] = INDUSTRIES
    project_id: int = 3_141_592
    gzip: bool = True  # False: events/YYYY-MM-DD.jsonl (the emulator and extract read both)


@dataclass(slots=True)
class GenerateResult:
    out: str
    days: int
    users: int
    records_written: int
    events_generated: int
    events_counted: int
    identity_events: int
    files: list[str] = field(default_factory=list)
    dirt: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_industries(value: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of industry names."""
    if value.strip() == "all":
        return INDUSTRIES
    return tuple(part.strip() for part in value.split(",") if part.strip())


# Mixpanel keeps no event before 1971 (its import refuses earlier times); the last day
# leaves room for the days after it that a run touches (timezones, the day after).
FIRST_START = date(1971, 1, 1)
LAST_END = date(9998, 12, 31)


def validate(config: GenerateConfig, problems: list[str] | None = None) -> ZoneInfo:
    """Every problem of ``config`` (after ``problems`` found before it was made) at once."""
    problems = list(problems or [])
    if not 1 <= config.users <= MAX_USERS:
        problems.append(f"--users must be between 1 and {MAX_USERS:,}, got {config.users}")
    if not 1 <= config.days <= MAX_DAYS:
        problems.append(f"--days must be between 1 and {MAX_DAYS}, got {config.days}")
    if 1 <= config.days <= MAX_DAYS and not (
            FIRST_START <= config.start <= LAST_END - timedelta(days=config.days - 1)):
        problems.append(f"--start and --days must keep the days between {FIRST_START} and "
                        f"{LAST_END}, got {config.start} for {config.days} day(s)")
    if config.id_merge not in ID_MERGE:
        problems.append(f"--id-merge must be simplified or original, got {config.id_merge!r}")
    if not 0.0 <= config.dirty <= 0.2:
        problems.append(f"--dirty must be a rate between 0 and 0.2, got {config.dirty}")
    bad = [i for i in config.industries if i not in INDUSTRIES]
    if bad or not config.industries:
        problems.append(f"--industry must be all or among {', '.join(INDUSTRIES)}, got {', '.join(bad) or 'nothing'}")
    tz: ZoneInfo | None = None
    try:
        tz = ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"--timezone {config.timezone!r} is not an IANA timezone (e.g. America/Los_Angeles)")
    if config.out.exists() and (not config.out.is_dir() or any(config.out.iterdir())):
        problems.append(f"--out {config.out} exists and is not an empty directory; choose a new one")
    elif not config.out.exists():
        parent = next((p for p in config.out.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            problems.append(f"--out {config.out} cannot be created: {parent} is a file")
    if problems or tz is None:
        raise ConfigError(problems, source="mp2amp generate")
    return tz


def _day_bounds(day: date, tz: ZoneInfo) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def generate_project(config: GenerateConfig) -> GenerateResult:
    started = time.perf_counter()
    tz = validate(config)
    out = config.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # under a file, or not writable
        raise ConfigError([f"--out {out} cannot be created ({exc.strerror or exc}); choose "
                           "a folder that can be"], source="mp2amp generate") from None
    rng = Random(config.seed)
    industries = tuple(dict.fromkeys(config.industries))
    people = plan_people(rng, config.users, config.days, industries, config.id_merge,
                         short_id_share(config.dirty))
    dirt = Dirt(config.dirty)
    start_ms = _day_bounds(config.start, tz)[0]
    truth = Truth(out / "truth", {name: FUNNELS[name] for name in industries}, start_ms // DAY_MS)
    schema = SchemaSampler()
    emitter = Emitter(rng, config.id_merge, config.legacy_time, tz, dirt, truth, schema)
    planner = DayPlanner(emitter, people, config.id_merge)
    files: list[str] = []
    lines_written = 0
    for offset in range(config.days):
        day = config.start + timedelta(days=offset)
        label = f"events/{day.isoformat()}.jsonl" + (".gz" if config.gzip else "")
        day_start, day_end = _day_bounds(day, tz)
        with GzipLines(out / label, compress=config.gzip) as day_file:
            emitter.start_day(day_file, label, day_start, day_end)
            planner.run(offset, day_start, day_end)
        lines_written += day_file.lines
        files.append(label)
    truth.close()
    dirt.counts[SHORT] = emitter.short_id_events
    write_jsonl_gz(out / "profiles/users.jsonl.gz", profiles.user_profiles(people, start_ms))
    write_jsonl_gz(out / "profiles/groups/company_id.jsonl.gz", profiles.group_profiles(people, start_ms))
    write_jsonl_gz(out / "identity/mappings.jsonl.gz", profiles.identity_mappings(people, config.id_merge))
    write_json(out / "schema.json", schema.response(profiles.profile_property_types(), list(industries)))
    result = GenerateResult(
        out=str(out), days=config.days, users=config.users, records_written=emitter.records,
        events_generated=emitter.generated, events_counted=truth.counted,
        identity_events=emitter.identity_events, files=files, dirt=dict(dirt.counts),
    )
    write_json(out / "truth/summary.json", {
        "records_written": emitter.records,
        "events_by_kind": {
            "generated": emitter.generated, "counted": truth.counted, "unusable": truth.unusable,
            "identity": emitter.identity_events, "server_side": emitter.server_side,
            "no_insert_id": emitter.no_insert_id, "malformed_lost": dirt.counts["malformed_lines"],
            "duplicate_copies": dirt.counts["duplicates"],
        },
        "dirt": dict(dirt.counts),
        "dirt_rate": config.dirty,
        "identity_events": emitter.identity_events,
        "lines_written": lines_written,
    })
    write_json(out / "project.json", {
        "project_id": config.project_id, "timezone": config.timezone,
        "legacy_time": config.legacy_time, "id_merge": config.id_merge,
        "start": config.start.isoformat(), "days": config.days, "seed": config.seed,
        "users": config.users, "industries": list(industries), "dirty": config.dirty,
        "group_keys": ["company_id"], "events_written": emitter.records,
    })
    result.seconds = round(time.perf_counter() - started, 3)
    return result
