"""Settings of the Amplitude emulator; every limit defaults to Amplitude's documented value."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mp2amp.errors import ConfigError

HTTPAPI_EPS = 30  # per device/user, averaged over 30 s (HTTP V2)
BATCH_EPS = 1000  # per device/user, averaged over 30 s (Batch)
DAILY_QUOTA = 500_000  # per device/user, rolling 24 h in 1-hour steps; Batch only (reference 2.2)
HTTPAPI_MAX_BYTES = 1_000_000  # "request size exceeds 1MB" -> 413: a decimal MB passes
BATCH_MAX_BYTES = 20_000_000
MAX_EVENTS_PER_REQUEST = 2000
DEDUP_WINDOW_S = 7 * 24 * 3600
THROTTLE_WINDOW_S = 30


@dataclass
class AmplitudeConfig:
    """What ``mp2amp emulate amplitude`` takes as flags; ``now`` is the clock (epoch seconds).

    ``now`` drives dedup windows, quotas, throttling, ``server_upload_time`` and deletion
    days, so tests move time by passing their own callable instead of sleeping.
    """

    data_dir: Path
    api_key: str = "emulator-api-key"
    secret_key: str = "emulator-secret-key"
    host: str = "127.0.0.1"
    port: int = 0
    project_id: int = 187520
    eps_limit: int | None = None  # None: 30 for /2/httpapi, 1000 for /batch
    daily_quota: int = DAILY_QUOTA
    fail_rate: float = 0.0
    latency_ms: float = 0.0
    drop_after_ingest_rate: float = 0.0
    timezone: str = "UTC"
    seed: int = 0
    deletion_rate_per_s: float = 1.0  # User Privacy API: 1 request per second
    deletion_delay_days: int = 10  # jobs are scheduled 10-13 days after the first request
    save_every_s: float = 2.0  # state.json snapshots (the ID journal covers the time between)
    now: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        problems: list[str] = []
        for name in ("fail_rate", "drop_after_ingest_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must be between 0 and 1, got {value}")
        if self.latency_ms < 0:
            problems.append(f"latency_ms must be >= 0, got {self.latency_ms}")
        if self.eps_limit is not None and self.eps_limit < 1:
            problems.append(f"eps_limit must be >= 1, got {self.eps_limit}")
        if self.daily_quota < 1:
            problems.append(f"daily_quota must be >= 1, got {self.daily_quota}")
        if not self.api_key or not self.secret_key:
            problems.append("api_key and secret_key must not be empty")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not an IANA zone name")
        if problems:
            raise ConfigError(problems, source="amplitude emulator settings")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def eps_for(self, endpoint: str) -> int:
        if self.eps_limit is not None:
            return self.eps_limit
        return BATCH_EPS if endpoint == "batch" else HTTPAPI_EPS
