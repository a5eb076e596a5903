"""The sections of ``mp2amp.toml``: one frozen dataclass each, with defaults and checks.

To add an option, add a field with a default to its section; the loader reads its type.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mp2amp.errors import ConfigError, redact_userinfo
from mp2amp.identity.pattern import pattern_problem
from mp2amp.load.batcher import REQUEST_LIMIT_BYTES
from mp2amp.load.settings import region_conflict
from mp2amp.transform.configured import ambiguous
from mp2amp.transform.settings import RevenueSettings

if typing.TYPE_CHECKING:
    from mp2amp.transform.plan import TrackingPlan
    from mp2amp.transform.privacy import PrivacyRules
    from mp2amp.transform.settings import TransformSettings

DEFAULT_FILE = "mp2amp.toml"
HASH_SALT_ENV = "MP2AMP_HASH_SALT"


class Secret:
    """A credential: compares and hashes like its value, prints as ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _env(name: str) -> dict[str, str]:
    """Field metadata: the value comes only from this environment variable."""
    return {"env": name}


def _check(fn: Callable[[Any], str | None]) -> dict[str, Callable[[Any], str | None]]:
    """Field metadata: ``fn(value)`` returns a problem (without the key) or None."""
    return {"check": fn}


def _positive(value: int) -> str | None:
    return None if value > 0 else f"must be positive, got {value}"


def _between(low: int, high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be {low}..{high}, got {value}"
    return check


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("America")
        return f"{value!r} is not an IANA timezone (like 'America/Los_Angeles' or 'UTC')"
    return None


def _host(value: str) -> str | None:
    """An http(s) URL a request can be made to: a host, and a port of 1..65535 if given
    (a bad one only showed after minutes of backoff)."""
    bad = f"{redact_userinfo(value)!r} is not an http(s) URL like 'http://127.0.0.1:8040'"
    if not re.match(r"^https?://[^/\s]+", value):
        return bad
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for "99999", "80a"
    except ValueError as exc:
        return f"{bad} ({exc})"
    if not parts.hostname or port == 0:
        return f"{bad} (no host, or port 0)"
    return None


def _mixpanel_host(value: str) -> str | None:
    """``_host``, without credentials in the URL: Mixpanel's requests carry their own
    Authorization (MIXPANEL_SERVICE_ACCOUNT or MIXPANEL_SECRET), which the HTTP client
    cannot combine with a user:password in the URL (it stopped the run with a traceback)."""
    problem = _host(value)
    if problem is None and urlsplit(value).username is not None:
        return (f"{redact_userinfo(value)!r} carries credentials (user:password@): Mixpanel's "
                "come only from MIXPANEL_SERVICE_ACCOUNT or MIXPANEL_SECRET; remove them "
                "from the URL")
    return problem


def _regex(value: str) -> str | None:
    return pattern_problem(value)


def _not_a_file(path: Path) -> str:
    return "is a folder, not a file" if path.is_dir() else "does not exist"


def _names(value: tuple[str, ...]) -> str | None:
    return "names must be non-empty" if any(not v for v in value) else None


# Field metadata: strings that are local paths (relative to the config file's folder) or
# URLs (s3://, gs://, kept as they are).
_LOCATIONS = {"location": True}

# The [transform.revenue] keys that name a property
REVENUE_NAME_KEYS = ("price", "quantity", "revenue", "product_id", "revenue_type", "currency",
                     "items")

_TIMEZONE = "an IANA timezone such as 'UTC' or 'America/Los_Angeles'"
_PROPERTY = "a property name"

# What each text key takes, for the problem a blank value (`timezone = ""`, as a template
# with an unset variable writes it) gets instead of a silent default or a baffling check:
# key (list indexes left out) -> (what to give, what removing the key does when its
# default is None). Every text key but the locations has one (a test walks the sections);
# Literal and date keys say it themselves.
BLANK_HINTS: dict[str, tuple[str, str | None]] = {
    "mixpanel.api_host": ("an http(s) URL such as 'https://eu.mixpanel.com'",
                          "to use the region's own host"),
    "mixpanel.timezone": (_TIMEZONE, None),
    "mixpanel.timezone_changes.timezone": (_TIMEZONE, None),
    "amplitude.api_host": ("an http(s) URL such as 'https://api.eu.amplitude.com'",
                           "to use the region's own host"),
    "amplitude.region": ("one of us, eu", "for api_host's data center, else us"),
    "transform.groups": (_PROPERTY, None),
    "transform.user_id_pattern": ("a regular expression such as '^[0-9a-f]{24}$'", None),
    **{f"transform.revenue.{key}": (_PROPERTY, None) for key in REVENUE_NAME_KEYS},
    "transform.revenue.refund_events": ("an event name", None),
    "privacy.drop_properties": (_PROPERTY, None),
    "privacy.hash_properties": (_PROPERTY, None),
}


# --- sections ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimezoneChange:
    """From ``since`` on (the project-local date), exports use ``timezone``."""

    since: date
    timezone: str = field(metadata=_check(_timezone))


@dataclass(frozen=True, slots=True)
class MixpanelConfig:
    project_id: int | None = field(default=None, metadata=_check(_positive))
    region: Literal["us", "eu", "in"] = "us"
    api_host: str | None = field(default=None, metadata=_check(_mixpanel_host))
    timezone: str = field(default="UTC", metadata=_check(_timezone))
    legacy_time: bool = False
    timezone_changes: tuple[TimezoneChange, ...] = ()
    id_merge: Literal["simplified", "original"] = "simplified"
    # event times that look read in the wrong zone (pipeline/timecheck.py): stop before
    # anything is sent, or warn and go on; not part of the run's fingerprint
    time_check: Literal["stop", "warn"] = "stop"
    service_account: Secret | None = field(default=None, metadata=_env("MIXPANEL_SERVICE_ACCOUNT"))
    secret: Secret | None = field(default=None, metadata=_env("MIXPANEL_SECRET"))
    # Raw Export API limits (Mixpanel: 60 queries an hour, 3 a second); raise only for
    # the local emulator, Mixpanel answers 429 above them.
    export_per_hour: int = field(default=60, metadata=_check(_positive))
    export_per_second: int = field(default=3, metadata=_check(_positive))

    def problems(self) -> list[str]:
        out = []
        dates = [c.since for c in self.timezone_changes]
        if dates != sorted(set(dates)):
            out.append("timezone_changes: dates must be in increasing order, each once")
        if self.timezone_changes and not self.legacy_time:
            out.append("timezone_changes: only legacy_time projects store project-local time; "
                       "set legacy_time = true or remove the changes")
        return out


EXPORT_EARLIEST = date(2011, 7, 10)  # Raw Export's first day (reference: export API)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    from_date: date | None = None
    to_date: date | None = None
    files: tuple[str, ...] = field(default=(), metadata=_LOCATIONS)  # paths, globs, URLs
    identity_table: str | None = field(default=None, metadata=_LOCATIONS)  # Data Pipelines
    # fsspec options for s3:// and gs:// files, e.g. {endpoint_url = "http://127.0.0.1:9000"};
    # any TOML value, as s3fs wants booleans (anon = true) and tables (client_kwargs)
    storage_options: dict[str, Any] = field(default_factory=dict)
    # a file cut short (a .gz without its end): "stop" the migration before anything of it
    # is sent, so that it can be restored and resumed; "keep" what it holds up to the damage
    damaged_files: Literal["stop", "keep"] = "stop"
    # Export API days per query: Mixpanel allows 60 queries an hour, so one-day windows take
    # ~18 h for three years whatever their size; a small project can ask several days at once
    # (a failed stream then fetches all of them again)
    export_window_days: int = field(default=1, metadata=_check(_between(1, 31)))

    def problems(self) -> list[str]:
        if self.from_date and self.to_date and self.from_date > self.to_date:
            return [f"to_date: {self.to_date} is before from_date {self.from_date}"]
        if self.from_date and self.from_date < EXPORT_EARLIEST:
            # Mixpanel's 400 "from_date cannot be earlier than 2011-07-10", found only once
            # the run was recorded and its first query spent
            return [f"from_date: {self.from_date} is before {EXPORT_EARLIEST}, the first day "
                    "Mixpanel's Export API serves; set it to that day or later"]
        if (self.from_date is None) != (self.to_date is None):
            return ["from_date/to_date: give both, or neither"]
        if self.files and self.from_date is not None:
            # files are read whole: the dates would be ignored without a word
            return ["files: give files or from_date/to_date (the Export API), not both; "
                    "files are read whole, so remove from_date/to_date to migrate the files"
                    ", or files to export those days"]
        return []


@dataclass(frozen=True, slots=True)
class AmplitudeConfig:
    # Unset: api_host's data center when it is Amplitude's own host, else the US. Only a
    # region given is checked against an Amplitude api_host (region_conflict).
    region: Literal["us", "eu"] | None = None
    api_host: str | None = field(default=None, metadata=_check(_host))
    endpoint: Literal["batch", "httpapi"] = "batch"
    output_dir: str | None = field(default=None, metadata=_LOCATIONS)
    # Batch size cap in bytes (count is capped at 2000); default 10 MB for batch, 1 MB httpapi;
    # at most Amplitude's request limit: 20 MB (batch), 1 MB (httpapi: checked with the endpoint)
    batch_max_bytes: int | None = field(default=None, metadata=_check(_between(1024, 20_000_000)))
    # Sent as options.min_id_length: mp2amp keeps Mixpanel IDs shorter than Amplitude's 5
    min_id_length: int = field(default=1, metadata=_check(_between(1, 1024)))
    # seconds a 429 naming no device or user (a project-wide limit) waits: Amplitude says 60
    project_throttle_wait: float = field(default=60.0, metadata=_check(_between(0, 900)))
    # request bodies gzipped; false for a proxy that cannot pass them (also found by itself)
    gzip: bool = True
    api_key: Secret | None = field(default=None, metadata=_env("AMPLITUDE_API_KEY"))
    secret_key: Secret | None = field(default=None, metadata=_env("AMPLITUDE_SECRET_KEY"))

    def problems(self) -> list[str]:
        # checked here too (not only by the uploader), so that it is named with the file
        # and the file's other problems, in one report
        out = []
        limit = REQUEST_LIMIT_BYTES.get(self.endpoint)
        if self.batch_max_bytes is not None and limit is not None \
                and self.batch_max_bytes > limit:
            out.append(f"batch_max_bytes: at most {limit:,} for the {self.endpoint} endpoint "
                       f"(Amplitude answers 413 above it), got {self.batch_max_bytes:,}")
        conflict = region_conflict(self.region, self.api_host)
        if conflict is not None:
            out.append(conflict)
        return out



def configured_names(revenue: Mapping[str, object], groups: Iterable[object]) -> dict[str, str]:
    """Config key -> the property it names, from ``[transform.revenue]``'s values and the
    group keys (values that are not names are left out: their keys report them)."""
    names = {f"transform.revenue.{key}": name for key in REVENUE_NAME_KEYS
             if isinstance(name := revenue.get(key), str) and name}
    return names | {f"transform.groups ({name!r})": name for name in groups
                    if isinstance(name, str) and name}


# The [transform.revenue] table is the transform's own settings type: one definition of
# which properties carry revenue (checked by its ``problems()``).
RevenueConfig = RevenueSettings


@dataclass(frozen=True, slots=True)
class TransformConfig:
    plan: Path | None = None
    session_gap_minutes: int = field(default=30, metadata=_check(_between(1, 24 * 60)))
    groups: tuple[str, ...] = field(default=(), metadata=_check(_names))
    retroactive: bool = True  # a device's anonymous events carry the user it later joins
    user_id_pattern: str | None = field(default=None, metadata=_check(_regex))
    amplitude_event_names: bool = False  # $mp_web_page_view -> [Amplitude] Page Viewed ...
    revenue: RevenueConfig = field(default_factory=RevenueConfig)

    def configured_names(self) -> dict[str, str]:
        """Config key -> the property it names, for the reports about them."""
        r = self.revenue
        return configured_names({key: getattr(r, key) for key in REVENUE_NAME_KEYS},
                                self.groups)

    def problems(self) -> list[str]:
        out = []
        if len(self.groups) > 5:
            out.append(f"groups: Amplitude allows 5 group types, got {len(self.groups)}")
        if len(set(self.groups)) != len(self.groups):
            out.append("groups: a group key is listed twice")
        if self.plan is not None and not self.plan.is_file():
            out.append(f"plan: the tracking plan {self.plan} {_not_a_file(self.plan)}")
        return out


_ID_PROPERTIES = frozenset({"distinct_id", "$user_id", "$device_id"})
_IP_PROPERTIES = ("ip", "$ip")  # Amplitude's ip field: an address or nothing


@dataclass(frozen=True, slots=True)
class PrivacyConfig:
    ip: Literal["keep", "drop"] = "keep"
    drop_properties: tuple[str, ...] = field(default=(), metadata=_check(_names))
    hash_properties: tuple[str, ...] = field(default=(), metadata=_check(_names))
    hash_salt: Secret | None = field(default=None, metadata={"env_or_file": HASH_SALT_ENV})
    exclude_users: Path | None = None
    drop_before: date | None = None

    def problems(self) -> list[str]:
        out = []
        if self.hash_properties and self.hash_salt is None:
            out.append(f"hash_salt: hash_properties needs a salt; set hash_salt here or the "
                       f"{HASH_SALT_ENV} environment variable (unsalted hashes of e-mails "
                       f"are reversible)")
        for key, names in (("drop_properties", self.drop_properties),
                           ("hash_properties", self.hash_properties)):
            ids = [n for n in names if n in _ID_PROPERTIES]
            if ids:
                # they become Amplitude's user_id/device_id, not event properties: the
                # lists would leave them in clear without a word
                out.append(f"{key}: {', '.join(ids)} cannot be dropped or hashed here: they "
                           "become the events' user_id/device_id, which these lists do not "
                           "touch; leave such people out with exclude_users, or pseudonymize "
                           "the IDs in the export before the migration")
        ips = [n for n in _IP_PROPERTIES if n in self.hash_properties]
        if ips:
            out.append(f"hash_properties: {', '.join(ips)} cannot be hashed: it becomes "
                       "Amplitude's ip field, which takes only an IP address, so its hash "
                       "would be dropped without a word; set ip = \"drop\" to keep the IP "
                       "from Amplitude, and remove it from hash_properties")
        if self.exclude_users is not None and not self.exclude_users.is_file():
            out.append(f"exclude_users: the excluded-users file {self.exclude_users} "
                       f"{_not_a_file(self.exclude_users)}")
        return out


@dataclass(frozen=True, slots=True)
class RunConfig:
    workdir: Path = Path(".mp2amp")
    concurrency: int = field(default=8, metadata=_check(_between(1, 64)))
    memory_budget: int = field(default=200_000, metadata=_check(_between(1_000, 10**9)))
    # transform worker processes of the load pass; None: one per core beyond the first
    transform_workers: int | None = field(default=None, metadata=_check(_between(0, 4)))


@dataclass(frozen=True, slots=True)
class Config:
    mixpanel: MixpanelConfig = MixpanelConfig()
    source: SourceConfig = SourceConfig()
    amplitude: AmplitudeConfig = AmplitudeConfig()
    transform: TransformConfig = TransformConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    run: RunConfig = RunConfig()
    path: Path | None = field(default=None, metadata={"internal": True})

    @property
    def keep_ip(self) -> bool:
        return self.privacy.ip == "keep"

    def tracking_plan(self) -> TrackingPlan:
        from mp2amp.transform.plan import TrackingPlan, load_plan

        return load_plan(self.transform.plan) if self.transform.plan else TrackingPlan.keep_all()

    def privacy_rules(self) -> PrivacyRules:
        from mp2amp.transform.privacy import PrivacyRules, load_excluded_users

        p = self.privacy
        excluded = load_excluded_users(p.exclude_users) if p.exclude_users else frozenset()
        return PrivacyRules(
            keep_ip=self.keep_ip,
            drop_properties=p.drop_properties,
            hash_properties=p.hash_properties,
            salt=p.hash_salt.reveal() if p.hash_salt else None,
            excluded_users=excluded,
            drop_before=p.drop_before,
        )

    def transform_settings(self) -> TransformSettings:
        """The mapping core's settings. The plan and the excluded-users file are read here;
        their problems are reported together, each prefixed with its file."""
        from mp2amp.transform.settings import TransformSettings

        problems: list[str] = []
        plan = privacy = None
        try:
            plan = self.tracking_plan()
        except ConfigError as exc:
            problems += _plan_problems(exc, self.transform.plan)
        try:
            privacy = self.privacy_rules()
        except ConfigError as exc:
            problems += exc.problems
        if plan is not None and privacy is not None:
            problems += _hashed_but_typed(plan, privacy)
            problems += renamed_privacy_names(plan, privacy.drop_properties,
                                              privacy.hash_properties)
        if plan is not None:
            problems += ambiguous(plan, self.transform.configured_names())
        if problems or plan is None or privacy is None:
            raise ConfigError(problems, source=str(self.path) if self.path else None)
        m, t = self.mixpanel, self.transform
        privacy = privacy.reading_lists(plan)  # a hashed list's JSON text: as the plan reads it
        return TransformSettings(
            timezone=m.timezone,
            legacy_time=m.legacy_time,
            timezone_changes=tuple((c.since.isoformat(), c.timezone)
                                   for c in m.timezone_changes),
            revenue=t.revenue,
            group_keys=t.groups,
            keep_ip=self.keep_ip,
            plan=plan,
            privacy=privacy,
            amplitude_event_names=t.amplitude_event_names,
        )


def referenced_file_problems(plan: Path | None, exclude_users: Path | None,
                             hashed: frozenset[str] = frozenset(),
                             configured: Mapping[str, str] | None = None,
                             dropped: frozenset[str] = frozenset()) -> list[str]:
    """The problems of the tracking plan and the excluded-users file, each naming its file,
    a plan type a ``hashed`` property cannot take and a ``configured`` name (config key ->
    property) the plan makes ambiguous: for the report of a config file whose own problems
    stop it before ``transform_settings()`` reads them (one round of fixing, not two)."""
    from mp2amp.transform.plan import load_plan
    from mp2amp.transform.privacy import load_excluded_users

    problems: list[str] = []
    if plan is not None:
        try:
            loaded = load_plan(plan)
            problems += _typed_but_hashed(loaded, hashed)
            problems += renamed_privacy_names(loaded, dropped, hashed)
            problems += ambiguous(loaded, configured or {})
        except ConfigError as exc:
            problems += _plan_problems(exc, plan)
    if exclude_users is not None:
        try:
            load_excluded_users(exclude_users)
        except ConfigError as exc:
            problems += exc.problems
    return problems


def renamed_privacy_names(plan: TrackingPlan, dropped: Collection[str],
                          hashed: Collection[str]) -> list[str]:
    """Config problems: a privacy list naming the plan's new name of a property it does
    not name itself. The rules run on the Mixpanel names, before the plan renames, so the
    value would go out in clear under the new name."""
    rules = list(plan.properties.items())
    rules += [(name, rule) for event in plan.events.values()
              for name, rule in event.properties.items()]
    problems = set()
    for key, names, covered in (("drop_properties", dropped, set(dropped)),
                                ("hash_properties", hashed, {*dropped, *hashed})):
        for source, rule in rules:
            new = rule.rename
            if new is not None and new != source and new in names and source not in covered:
                problems.add(f"privacy.{key}: {new!r} is the tracking plan's new name of the "
                             f"Mixpanel property {source!r}; the privacy rules apply to "
                             f"Mixpanel names, before the plan renames, so {source!r} would "
                             f"go out in clear as {new!r}: list {source!r} in {key}")
    return sorted(problems)


def _plan_problems(exc: ConfigError, plan: Path | None) -> list[str]:
    return [f"{exc.source or plan}: {p}" for p in exc.problems]


def _hashed_but_typed(plan: TrackingPlan, privacy: PrivacyRules) -> list[str]:
    """A property the privacy rules hash reaches the plan as hex text (a list of it for a
    list): a plan type that takes neither would reject every event that carries it."""
    return _typed_but_hashed(plan, privacy.hash_properties)


def _typed_but_hashed(plan: TrackingPlan, hashed: Collection[str]) -> list[str]:
    rules = [(name, rule) for name, rule in plan.properties.items()]
    rules += [(name, rule) for event in plan.events.values()
              for name, rule in event.properties.items()]
    return sorted({f"privacy.hash_properties: {name!r} is hashed (hex text, or a list of "
                   f"it for a list) before the tracking plan sees it, and the plan types it "
                   f"{rule.type}: every event with it would be rejected; type it string or "
                   "list in the plan, or stop hashing it"
                   for name, rule in rules
                   if name in hashed
                   and rule.type not in (None, "string", "list")})
