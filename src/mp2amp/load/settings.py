"""Uploader settings and the report it returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from mp2amp.errors import ConfigError, redact_userinfo
from mp2amp.load.batcher import (
    BATCH_MAX_BYTES,
    HTTPAPI_MAX_BYTES,
    MAX_EVENTS,
    REQUEST_LIMIT_BYTES,
    Limits,
)

Endpoint = Literal["batch", "httpapi"]
Region = Literal["us", "eu"]

HOSTS: dict[str, str] = {
    "us": "https://api2.amplitude.com",
    "eu": "https://api.eu.amplitude.com",
}
PATHS: dict[str, str] = {"batch": "/batch", "httpapi": "/2/httpapi"}


def host_region(api_host: str | None) -> Region | None:
    """The data center of one of Amplitude's own hosts (``api.eu.amplitude.com`` is the EU,
    ``api2.amplitude.com`` the US); ``None`` for other hosts (an emulator, a proxy)."""
    if not api_host:
        return None
    try:
        host = (urlsplit(api_host).hostname or "").lower()
    except ValueError:  # not a URL at all: the host check reports it
        return None
    if host != "amplitude.com" and not host.endswith(".amplitude.com"):
        return None
    return "eu" if host == "eu.amplitude.com" or host.endswith(".eu.amplitude.com") else "us"


def region_conflict(region: str | None, api_host: str | None) -> str | None:
    """The problem when ``region`` was given and ``api_host`` is one of Amplitude's own hosts
    for the other region (events of an EU project sent to the US host are refused as an
    unknown key, and the other way round). A region left unset has nothing to contradict:
    api_host alone picks the data center. Other hosts go with either region."""
    found = host_region(api_host)
    if region is None or found is None or found == region:
        return None
    shown = redact_userinfo(api_host or "")
    return (f"api_host {shown!r} is Amplitude's {found.upper()} host but amplitude.region is "
            f"{region!r}: if the project's data center is the {found.upper()}, set region = "
            f"{found!r} or leave region out (api_host then picks it); if it is the "
            f"{region.upper()}, remove api_host (region = {region!r} picks "
            f"{HOSTS.get(region, HOSTS['us'])})")


# How long a throttled device/user waits: Batch docs say "for example, 15 seconds",
# HTTP V2 says "pause ... for a period of 30 seconds".
THROTTLE_WAIT: dict[str, float] = {"batch": 15.0, "httpapi": 30.0}
# How long a request waits after a 429 that names no device or user (a per-project limit):
# "Wait 60 seconds before resending events" (amplitude-api.md §1.7, both endpoints).
PROJECT_THROTTLE_WAIT = 60.0
# A device's or user's events per second before Amplitude throttles it, when a 429 does not
# say (its ``eps_threshold``): Batch 1000, HTTP V2 30 (amplitude-api.md 429 sections).
DEVICE_EPS: dict[str, int] = {"batch": 1000, "httpapi": 30}


MAX_RETRIES = 20  # failures in a row of one request before the run stops (--resume goes on)


@dataclass(frozen=True, slots=True)
class UploadSettings:
    api_key: str = field(repr=False)
    endpoint: Endpoint = "batch"
    region: Region | None = None         # None: api_host's data center, else the US
    api_host: str | None = None          # e.g. the emulator: "http://127.0.0.1:8040"
    concurrency: int = 8                 # lanes = requests in flight at most
    max_events: int = MAX_EVENTS
    max_bytes: int | None = None         # default: 10 MB (batch), 1 MB (httpapi)
    min_id_length: int | None = 1        # sent as options.min_id_length; None = server's 5
    gzip: bool = True
    gzip_level: int = 1                  # ISA-L level 0..3; JSON compresses ~8x even at 1
    timeout: float = 120.0               # seconds per request
    max_retries: int = MAX_RETRIES       # consecutive failures of one request before stopping
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    throttle_wait: float | None = None   # default per endpoint (THROTTLE_WAIT)
    project_throttle_wait: float = PROJECT_THROTTLE_WAIT  # after a 429 naming nobody
    park_delay: float = 3600.0           # daily quota counts "in one-hour intervals"
    park_retries: int = 2                # quota rounds in this run before an event stays parked
    # backpressure: events queued, in flight or held (throttle, quota); default 2 full
    # batches per lane
    max_pending_events: int | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.api_key:
            problems.append("amplitude api key is empty: set AMPLITUDE_API_KEY")
        if self.endpoint not in PATHS:
            problems.append(f"amplitude.endpoint must be batch or httpapi, got {self.endpoint!r}")
        if self.region is not None and self.region not in HOSTS:
            problems.append(f"amplitude.region must be us or eu, got {self.region!r}")
        conflict = region_conflict(self.region, self.api_host)
        if conflict is not None:
            problems.append("amplitude." + conflict)
        if self.concurrency < 1:
            problems.append(f"run.concurrency must be >= 1, got {self.concurrency}")
        if not 1 <= self.max_events <= MAX_EVENTS:
            problems.append(f"max_events must be 1..{MAX_EVENTS}, got {self.max_events}")
        if self.max_bytes is not None and self.max_bytes < 1024:
            problems.append(f"max_bytes must be >= 1024, got {self.max_bytes}")
        limit = REQUEST_LIMIT_BYTES.get(self.endpoint)
        if self.max_bytes is not None and limit is not None and self.max_bytes > limit:
            # the lane's cap would grow back past the limit after each 413, all run long
            problems.append(f"amplitude.batch_max_bytes must be at most {limit:,} for the "
                            f"{self.endpoint} endpoint (Amplitude answers 413 above it), "
                            f"got {self.max_bytes:,}")
        if self.min_id_length is not None and self.min_id_length < 1:
            problems.append(f"min_id_length must be >= 1, got {self.min_id_length}")
        if not 0 <= self.gzip_level <= 3:
            problems.append(f"gzip_level must be 0..3 (ISA-L's levels), got {self.gzip_level}")
        if self.max_retries < 0 or self.park_retries < 0:
            problems.append("max_retries and park_retries must be >= 0")
        if self.project_throttle_wait < 0:
            problems.append("project_throttle_wait must be >= 0 seconds, got "
                            f"{self.project_throttle_wait}")
        if self.backoff_base <= 0 or self.backoff_cap < self.backoff_base:
            problems.append("backoff needs 0 < backoff_base <= backoff_cap")
        if problems:
            raise ConfigError(problems, source="upload settings")

    @property
    def url(self) -> str:
        host = (self.api_host or HOSTS[self.region or "us"]).rstrip("/")
        return host + PATHS[self.endpoint]

    @property
    def limits(self) -> Limits:
        default = BATCH_MAX_BYTES if self.endpoint == "batch" else HTTPAPI_MAX_BYTES
        return Limits(self.max_events, self.max_bytes or default)

    @property
    def device_eps(self) -> int:
        return DEVICE_EPS[self.endpoint]

    @property
    def throttle_seconds(self) -> float:
        return self.throttle_wait if self.throttle_wait is not None else THROTTLE_WAIT[self.endpoint]

    @property
    def pending_cap(self) -> int:
        # one request in flight and the next batch ready per lane: more only holds memory
        # (~1.7 MB per batch) while Amplitude is slower than the transform. Events held
        # for a throttled device or the daily quota count too (Uploader.submit_encoded)
        return self.max_pending_events or 2 * self.concurrency * self.max_events


CONNECT_FAILED = "connect_failed"  # ``requests_by_status``: no connection, nothing sent


@dataclass(slots=True)
class LoadReport:
    """What happened to every event handed to the uploader.

    submitted = accepted + sum(dead_lettered) + parked + skipped once ``close()`` returned.
    """

    submitted: int = 0
    sent: int = 0                 # events in batches that went out at least once
    accepted: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)  # by reason
    parked: int = 0
    skipped: int = 0              # in batches the caller said were already settled (resume)
    batches: int = 0
    batches_skipped: int = 0
    requests: int = 0
    # "200", "connection_error" (sent, then lost), CONNECT_FAILED (never sent)
    requests_by_status: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    throttles: int = 0
    splits: int = 0
    long_waits: int = 0           # server-given (Retry-After) waits over a minute, each logged
    longest_wait: float = 0.0     # seconds, the longest of them
    retry_after_capped: int = 0   # Retry-After values above responses.MAX_SERVER_WAIT, cut to it
    gzip_refused: int = 0         # gzip bodies Amplitude could not read, sent again uncompressed
    elapsed: float = 0.0

    @property
    def settled(self) -> int:
        return self.accepted + sum(self.dead_lettered.values()) + self.parked + self.skipped

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dead_lettered"] = dict(self.dead_lettered)
        d["requests_by_status"] = dict(self.requests_by_status)
        d["events_per_second"] = round(self.accepted / self.elapsed, 1) if self.elapsed else 0.0
        return d
