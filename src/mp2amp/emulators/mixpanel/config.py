"""Settings of the Mixpanel emulator, and the project it serves (``DIR/project.json``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from mp2amp.errors import ConfigError, InputError

FAULT_KINDS: tuple[str, ...] = ("terminated_early", "drop", "split")


@dataclass
class MixpanelConfig:
    """Everything the emulator can be told. Defaults follow Mixpanel's documented limits.

    Credentials left at ``None`` mean "accept any credentials of the right shape": a
    Basic user with a password is a service account (``project_id`` still required), a
    user with an empty password is an API secret.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    project_id: int | None = None  # default: project.json's project_id
    service_account: str | None = None  # "user:secret"
    api_secret: str | None = None
    token: str | None = None  # project token: /import Basic auth; /track etc. ignore other tokens
    timezone: str | None = None  # export day boundaries; default: project.json's timezone if
    # legacy_time (a project created before 2023), else UTC
    # /api/2.0/export: 60 queries/hour, 3/second, 100 concurrent (per project)
    export_per_hour: int | None = 60
    export_per_second: int | None = 3
    export_concurrent: int | None = 100
    # Query API (engage): 60 queries/hour, 5 concurrent
    query_per_hour: int | None = 60
    query_concurrent: int | None = 5
    # Lexicon Schemas API: 5 requests/minute
    lexicon_per_minute: int | None = 5
    # ingestion: "2GB of uncompressed JSON/minute or ~30k events per second, measured on a
    # rolling 1 minute basis" (Mixpanel's MB/GB are binary: its 2MB limit is 2097152 bytes)
    ingest_events_per_minute: int | None = 30_000 * 60
    ingest_bytes_per_minute: int | None = 2 * 1024**3
    import_max_bytes: int = 10 * 1024 * 1024
    max_records_per_request: int = 2000
    track_max_age_days: float = 5.0
    engage_page_size: int = 1000
    fail_rate: float = 0.0
    seed: int = 0
    fault_kinds: Sequence[str] = FAULT_KINDS
    fault_after_lines: int | None = None  # None: a seeded position in the first 100 lines
    received_dir: Path | None = None  # default: DATA_DIR/received
    chunk_bytes: int = 64 * 1024
    chunk_delay: float = 0.0  # seconds between export body chunks: a slow link (tests stop a
    # client mid-download with it)
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        problems = []
        if self.service_account is not None and (
            ":" not in self.service_account or not self.service_account.split(":", 1)[1]
        ):
            problems.append("service_account must be USER:SECRET with a non-empty secret")
        if not 0.0 <= self.fail_rate <= 1.0:
            problems.append(f"fail_rate must be between 0 and 1, got {self.fail_rate}")
        unknown = [k for k in self.fault_kinds if k not in FAULT_KINDS]
        if unknown:
            problems.append(f"unknown fault kinds {unknown}; known: {list(FAULT_KINDS)}")
        if not 0.0 <= self.chunk_delay <= 60.0:
            problems.append(f"chunk_delay must be between 0 and 60 seconds, got {self.chunk_delay}")
        if self.engage_page_size < 1:
            problems.append("engage_page_size must be at least 1")
        for name in ("export_per_hour", "export_per_second", "export_concurrent",
                     "query_per_hour", "query_concurrent", "lexicon_per_minute",
                     "ingest_events_per_minute", "ingest_bytes_per_minute"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:  # None: no limit; 0 would refuse everything
                problems.append(f"{name} must be at least 1 (or None: no limit), got {limit}")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f"unknown timezone {self.timezone!r} (use an IANA name)")
        if problems:
            raise ConfigError(problems, source="mixpanel emulator")

    @property
    def received_path(self) -> Path:
        return self.received_dir if self.received_dir is not None else self.data_dir / "received"

    def __repr__(self) -> str:  # secrets never appear in reprs or logs
        return (
            f"MixpanelConfig(data_dir={str(self.data_dir)!r}, host={self.host!r}, "
            f"port={self.port}, project_id={self.project_id}, timezone={self.timezone!r}, "
            "credentials=***)"
        )


@dataclass(frozen=True)
class ProjectInfo:
    """What the emulator needs from ``project.json`` (contracts §1)."""

    project_id: int
    timezone: str
    legacy_time: bool
    group_keys: tuple[str, ...]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_project(data_dir: Path) -> ProjectInfo:
    """Read ``DIR/project.json``; a directory without one is served as an empty UTC project."""
    path = data_dir / "project.json"
    if not path.exists():
        return ProjectInfo(project_id=0, timezone="UTC", legacy_time=False, group_keys=())
    try:
        raw: Any = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); regenerate it with `mp2amp generate`") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    problems = []
    project_id = raw.get("project_id", 0)
    if not isinstance(project_id, int) or isinstance(project_id, bool):
        problems.append(f"field project_id must be an integer, got {project_id!r}")
        project_id = 0
    timezone = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"field timezone: unknown timezone {timezone!r}")
    legacy = raw.get("legacy_time", False)
    if not isinstance(legacy, bool):
        problems.append(f"field legacy_time must be true or false, got {legacy!r}")
    keys = raw.get("group_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        problems.append(f"field group_keys must be a list of strings, got {keys!r}")
        keys = []
    if problems:
        raise ConfigError(problems, source=str(path))
    return ProjectInfo(int(project_id), str(timezone), bool(legacy), tuple(keys))
