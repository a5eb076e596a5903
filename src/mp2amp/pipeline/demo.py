"""``mp2amp demo``: the whole migration, end to end, on generated data and local emulators.

1. generate a Mixpanel project (dirty data on) with its ground truth;
2. start the Mixpanel and Amplitude emulators in-process on free loopback ports, the
   Amplitude one with a moderate fault rate (5xx answers, ingest-then-drop);
3. migrate through the Export API, exactly as against the real services;
4. read Amplitude back (Export API and segmentation) and put it next to Mixpanel:
   events per type, raw in Mixpanel, expected after the migration rules, and in Amplitude;
5. check every exported event against Mixpanel and the ground truth (``proof``): there
   once, for the right user and device, under its name, at the right instant, in the
   right session, with its location and device fields, its properties (and no others),
   their values and its groups, and its top-level revenue fields; then the total revenue
   of the expected events vs Amplitude's export (and segmentation's, when it answers).
Any difference, or a run whose counts do not add up, exits non-zero.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.config import load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude.segmentation import CostLimits
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.errors import ConfigError, InputError, Mp2AmpError, TerminalError
from mp2amp.extract.files import iter_records
from mp2amp.generate.project import MAX_USERS, GenerateConfig, generate_project
from mp2amp.load.settings import MAX_RETRIES
from mp2amp.pipeline.diskspace import is_disk_full, written_file
from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.progress import Reporter
from mp2amp.pipeline.proof import EventCheck, EventProof
from mp2amp.pipeline.proof_revenue import RevenueNames, RevenueTotals
from mp2amp.pipeline.readback import (
    askable_by_name,
    export_counts,
    segmentation_revenue,
    segmentation_totals,
    upload_hours,
)
from mp2amp.pipeline.result import MigrateResult
from mp2amp.pipeline.stopping import Terminated, signals_deferred
from mp2amp.proxyenv import bypass_proxy_for_loopback

EVENTS_PER_USER_DAY = 2.6  # what the generator produces on average over 14 days (measured)
DEMO_DAYS = 14
# --events as the CLI takes it; the most: the generator's MAX_USERS (users = events / 36.4)
MIN_EVENTS = 1_000
MAX_EVENTS = MAX_USERS * DEMO_DAYS * 26 // 10
# --fail-rate and --drop-rate at most (as the CLI takes them): at 0.9 each request failed
# 21 times in a row somewhere in every 200k demo, and no retry budget that avoids that
# finishes in minutes; at 0.5 each a request fails 3 times in 4, ~67 times in a row at worst
MAX_FAULT_RATE = 0.5
_AMP_KEY, _AMP_SECRET = "demo-amplitude-key", "demo-amplitude-secret"
_MP_SECRET = "demo-mixpanel-secret"
# The demo asks segmentation once per event type (~40 types x 15 days: over half the real
# 1000 per 5 minutes): its own emulator allows ten times the reference's budget, so that a
# second run (or more types) within 5 minutes is not made to wait for the window
_SEGMENTATION_BUDGET = CostLimits(per_5_minutes=10_000, per_hour=1_080_000)
# migrate's "how to go on" ("run the same `mp2amp migrate` command with --resume", "run
# again with --resume", ...): the demo has neither; running it again resumes
_RESUME_HINT = re.compile(r"\b(?:re)?(?:run|resume)\b[^.;:()]*?--resume`?(?: again)?")
_MIGRATE_COMMAND = re.compile(r"`?mp2amp migrate(?: --resume)?`?")
# a refused key (errors.classify_http): "run the same command again (`mp2amp migrate` with
# --resume: its run is recorded, nothing was lost)"
_AUTH_HINT = re.compile(r"run the same command again \(`mp2amp migrate` with --resume: "
                        r"([^)]*)\)")
# a full disk in migrate (diskspace.disk_full_message): the demo's work folder is inside
# its folder, which moves whole and is named by --workdir, not [run] workdir
_MOVE_HINT = re.compile(r"free some space, or move the work folder to a bigger disk and "
                        r"point \[run\] workdir at it, then run the same `mp2amp migrate` "
                        r"command with --resume")
# a work folder that cannot be written (diskspace.storage_error)
_WRITABLE_HINT = re.compile(r"or set \[run\] workdir to a writable folder \([^)]*\)")
# the read-back's "the migration itself is done: run the comparison again later": there
# is no comparison command, the demo run again in its folder compares
_COMPARE_HINT = re.compile(r"run the comparison again((?: in about \d+ minutes| later)?)")
# migrate's refusal to resume a run whose configuration changed (fingerprint.check_resume):
# the demo's configuration is its own, so only an earlier mp2amp's folder gets it
_CONFIG_CHANGED = "this configuration differs from the one the run started with"
# [transform.revenue] for the generated project: "Order Completed" carries the order's
# `revenue` (USD) and its `products` list of {product_id, price, quantity}. `price` is left
# out: it is also the catalogue price on every "Product Viewed" / "Product Added", which
# would book each view as a sale. Hence the items give only a single-item order's product
# id; the order-level revenue is the amount. "Order Refunded" is named a refund, but its
# amount is `refund_amount`, which one global name per field cannot also read.
DEMO_REVENUE: dict[str, Any] = {
    "revenue": "revenue", "product_id": "product_id", "currency": "currency",
    "items": "products", "refund_events": ["Order Refunded"]}
# what a stopped temporary demo's folder became (``_keep``)
KEPT, REMOVED, LEFT = "kept", "removed", "left"


class DemoStopped(Mp2AmpError):
    """The demo stopped on an error: its message says how to go on with the demo."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DemoInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped the demo; ``hint`` says what was kept, how to go on."""

    def __init__(self, hint: str, exit_code: int = 130) -> None:
        super().__init__(hint)
        self.hint = hint
        self.exit_code = exit_code


def export_dates(meta: dict[str, Any]) -> tuple[date, date]:
    """The Export API's ``from_date``/``to_date`` that cover a generated project
    (``project.json``): its own days for a project created before 2023 (``legacy_time``:
    dates in the project's timezone), else the UTC days its local days span (newer
    projects' dates are UTC, reference 1.6), one more west or east of UTC."""
    first = date.fromisoformat(meta["start"])
    end = first + timedelta(days=int(meta["days"]))  # the day after the last
    if meta["legacy_time"]:
        return first, end - timedelta(days=1)
    tz = ZoneInfo(meta["timezone"])
    since = datetime.combine(first, dtime(0), tz).astimezone(UTC)
    until = datetime.combine(end, dtime(0), tz).astimezone(UTC) - timedelta(microseconds=1)
    return since.date(), until.date()


@dataclass(slots=True)
class TypeRow:
    event_type: str
    mixpanel_raw: int
    expected: int
    amplitude_export: int
    amplitude_segmentation: int
    # False: segmentation was not asked (a name it reserves or cannot take in a URL, or a
    # raw name nothing expects and the export lacks): amplitude_segmentation is the export's
    segmentation_asked: bool = True

    @property
    def ok(self) -> bool:
        return self.expected == self.amplitude_export == self.amplitude_segmentation

    def as_dict(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "mixpanel_raw": self.mixpanel_raw,
                "expected": self.expected, "amplitude_export": self.amplitude_export,
                "amplitude_segmentation": self.amplitude_segmentation,
                "segmentation_asked": self.segmentation_asked, "ok": self.ok}


@dataclass(slots=True)
class DemoResult:
    workdir: str
    generated: dict[str, Any]
    migration: MigrateResult
    rows: list[TypeRow]
    daily_mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kept: bool = True  # the work folder is still there (False: a temporary one, removed)
    events: EventCheck | None = None  # the per-event check (None: not made)
    unreadable: int = 0  # Mixpanel records with no event to name (cut lines): no row
    revenue: RevenueTotals | None = None  # total revenue, expected vs Amplitude (None: not made)

    @property
    def ok(self) -> bool:
        return (self.migration.exit_code == 0 and all(r.ok for r in self.rows)
                and not self.daily_mismatches and (self.events is None or self.events.ok)
                and (self.revenue is None or self.revenue.ok))

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "workdir": self.workdir, "workdir_kept": self.kept,
                "seconds": round(self.seconds, 1),
                "generated": self.generated, "migration": self.migration.as_dict(),
                "event_types": [r.as_dict() for r in self.rows],
                "daily_mismatches": self.daily_mismatches,
                "mixpanel_unreadable": self.unreadable,
                "events": self.events.as_dict() if self.events is not None else None,
                "revenue": self.revenue.as_dict() if self.revenue is not None else None}


def run_demo(events: int = 200_000, workdir: Path | None = None, *, seed: int = 7,
             fail_rate: float = 0.05, drop_rate: float = 0.01,
             reporter: Reporter | None = None, legacy_time: bool = False) -> DemoResult:
    """The demo in ``workdir``, or in a new temporary folder that is removed when the demo
    passes (~400 MB at the default size; each `make demo` used to leave one behind) and
    kept, for a look, when it fails. Stopped by an error or Ctrl-C (``DemoStopped``,
    ``DemoInterrupted``), a temporary folder is kept and named when its project was
    generated (running the demo again in it resumes), else removed. ``legacy_time``: the
    project was created before 2023 (its export carries project-local times, its dates
    are project days), which the migration must shift to UTC."""
    if not MIN_EVENTS <= events <= MAX_EVENTS:  # before any folder is made or kept
        # not the generator's "--users" it would become, an option the demo does not have
        raise ConfigError([f"--events must be between {MIN_EVENTS:,} and {MAX_EVENTS:,}, "
                           f"got {events:,}; nothing was generated"], source="mp2amp demo")
    bad = [f"{name} must be between 0 and {MAX_FAULT_RATE}, got {rate}" for name, rate in
           (("--fail-rate", fail_rate), ("--drop-rate", drop_rate))
           if not 0 <= rate <= MAX_FAULT_RATE]
    if bad:
        raise ConfigError([*bad, "nothing was generated"], source="mp2amp demo")
    bypass_proxy_for_loopback()  # the emulators are on loopback, which no proxy can reach

    def run(root: Path) -> DemoResult:
        return _run_demo(root, events, seed, fail_rate, drop_rate, reporter, legacy_time)

    with _sigterm_stops():
        if workdir is not None:
            return _stop_said(Path(workdir), False, run)
        root = _temporary_folder()
        result = _stop_said(root, True, run)
        if result.ok:
            _remove_passed(root, result)
        return result


def demo_retries(fail_rate: float, drop_rate: float, events: int) -> int:
    """Failures in a row of one request before the demo's migration stops: the uploader's
    20, or as many as keep a stop anywhere in the run under one chance in a million for
    the faults asked for (a request fails with ``fail_rate``, or is dropped after ingest
    with ``drop_rate``; a 200k demo sends ~110 requests, counted here as one per 1,000
    events). The faults are the demo's own: a real run's retries stay the uploader's."""
    failing = fail_rate + (1 - fail_rate) * drop_rate
    default = MAX_RETRIES
    if failing <= 0:
        return default
    requests = max(50, events // 1000)
    return max(default, math.ceil(math.log(1e-6 / requests) / math.log(failing)))


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM (``timeout``, a cancelled CI job, ``docker stop``) raises ``Terminated``
    anywhere in the demo, as Ctrl-C does: generation, read-back and comparison included
    (migrate turns it into one inside its own run), so the stop is said and the temporary
    folder removed or named rather than the process dying silently. The previous handler
    is put back after; off the main thread SIGTERM keeps its meaning."""
    try:
        before = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # once: a second SIGTERM must not cut short the cleanup the first one started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _temporary_folder() -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix="mp2amp-demo-"))
    except OSError as exc:
        raise InputError(f"cannot make the demo's temporary folder in "
                         f"{tempfile.gettempdir()} ({exc.strerror or exc}): give --workdir "
                         "a folder on a writable disk with room (or set TMPDIR)") from None


def _remove_passed(root: Path, result: DemoResult) -> None:
    """Remove a passing demo's temporary folder; stopped halfway, it is named."""
    try:
        shutil.rmtree(root, ignore_errors=True)
    except KeyboardInterrupt as exc:
        raise DemoInterrupted(
            f"the demo passed (demo OK), but removing its temporary folder {root} was cut "
            "short: delete it", getattr(exc, "exit_code", 130)) from exc
    result.kept = root.exists()


def _stop_said(root: Path, temporary: bool, run: Callable[[Path], DemoResult]) -> DemoResult:
    """``run(root)``; an error or Ctrl-C is raised again saying how to go on with the demo
    (not with ``mp2amp migrate``), and whether its folder is kept."""
    try:
        return run(root)
    except Mp2AmpError as exc:
        kept = _keep(root, temporary)
        message = _demo_message(str(exc), root, temporary, kept)
        if message == str(exc):
            raise  # nothing to add: the error as it is (an InputError stays one)
        raise DemoStopped(message, exc.exit_code or 1) from exc
    except OSError as exc:  # outside migrate (which says its own): generation, say
        kept = _keep(root, temporary)
        message = _system_error(exc, root, kept == KEPT)
        raise DemoStopped(_demo_message(message, root, temporary, kept), 1) from exc
    except KeyboardInterrupt as exc:
        kept = _keep(root, temporary)
        raise DemoInterrupted(_interrupted_hint(root, temporary, kept),
                              getattr(exc, "exit_code", 130)) from exc


def _keep(root: Path, temporary: bool) -> str:
    """What becomes of the stopped demo's folder: a given one is kept; a temporary one
    when its project was generated, as the demo run again in it resumes, else it is
    removed (nothing in it saves time), or left when that fails or is stopped again."""
    if not temporary or (root / "mixpanel-project" / "project.json").is_file():
        return KEPT
    with suppress(KeyboardInterrupt):  # Ctrl-C again while removing: what is left is named
        shutil.rmtree(root, ignore_errors=True)
    return LEFT if root.exists() else REMOVED


def _system_error(exc: OSError, root: Path, kept: bool) -> str:
    """What an OS error outside migrate (a full disk while generating) stopped the demo
    with, and how to go on."""
    where, reason = written_file(exc), exc.strerror or str(exc)
    if is_disk_full(exc):
        said = f"writing {where}: {reason}" if where else reason
        if kept:
            return (f"the disk is full ({said}); free some space, then {_again(root)} (or "
                    f"move {root} to a bigger disk and give its new place to --workdir)")
        return (f"the disk is full ({said}); free some space, or give --workdir a folder on "
                "a bigger disk, then run the demo again")
    then = _again(root) if kept else "run the demo again"
    said = f"{where}: {reason}" if where else reason
    return f"the demo stopped on a system error ({said}); once that is fixed, {then}"


def _again(root: Path) -> str:
    return f"run `mp2amp demo --workdir {root}` again, with the same options, to resume"


def _demo_message(message: str, root: Path, temporary: bool, kept: str) -> str:
    """An error's message with migrate's (and the read-back's) hints turned into the
    demo's, and what became of a temporary folder."""
    message = _demo_hints(message, root, kept == KEPT)
    if not temporary:
        return message
    if kept != KEPT:
        return f"{message}; {_folder_gone(root, kept)}"
    if str(root) in message:
        return f"{message}; the demo's temporary folder {root} is kept (delete it when done)"
    return (f"{message}; the demo's temporary folder {root} is kept (delete it when done): "
            f"{_again(root)}")


def _demo_hints(message: str, root: Path, kept: bool) -> str:
    """``message`` saying how to go on with ``mp2amp demo``: in its kept folder, or (its
    folder removed) from the start."""
    again = _again(root) if kept else "run the demo again"
    moved = (f"free some space, then {again} (or move {root} to a bigger disk and give its "
             "new place to --workdir)") if kept else \
        "free some space, or give --workdir a folder on a bigger disk, then run the demo again"
    command = f"`mp2amp demo --workdir {root}`" if kept else "`mp2amp demo`"
    message = _MOVE_HINT.sub(lambda _: moved, message)
    message = _WRITABLE_HINT.sub(
        lambda _: f"then {again}" if kept else "or give --workdir a writable folder", message)
    message = _AUTH_HINT.sub(lambda m: f"{again} ({m[1]})" if kept else again, message)
    message = _COMPARE_HINT.sub(
        lambda m: f"run `mp2amp demo --workdir {root}` again{m[1]}, with the same options, "
                  "to compare (the migration is not repeated)" if kept else again, message)
    message = _RESUME_HINT.sub(lambda _: again, message)
    return _MIGRATE_COMMAND.sub(lambda _: command, message)


def _folder_gone(root: Path, kept: str) -> str:
    if kept == REMOVED:
        return f"the demo's temporary folder {root} was removed"
    return f"the demo's temporary folder {root} could not be removed entirely: delete it"


def _interrupted_hint(root: Path, temporary: bool, kept: str) -> str:
    if kept != KEPT:
        return _folder_gone(root, kept)
    where = "temporary folder" if temporary else "folder"
    return f"the demo's {where} {root} is kept: {_again(root)}"


def _run_demo(root: Path, events: int, seed: int, fail_rate: float, drop_rate: float,
              reporter: Reporter | None, legacy_time: bool = False) -> DemoResult:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is a file, not a folder" if root.is_file() else exc.strerror or str(exc)
        raise InputError(f"cannot use {root} as the demo's work folder: {why}; give "
                         "--workdir a folder (or leave it out)") from None
    # a kept demo is resumed: its read-back starts at the first run's upload hour, not
    # this one's (the events uploaded before are in earlier hours)
    first_start = root / "demo-started"
    if not first_start.is_file():
        first_start.write_text(datetime.now(UTC).isoformat())
    started = datetime.fromisoformat(first_start.read_text().strip())
    clock_start = datetime.now(UTC)
    project = root / "mixpanel-project"
    users = max(20, round(events / (DEMO_DAYS * EVENTS_PER_USER_DAY)))
    start = date(2024, 3, 1)
    if not (project / "project.json").exists():
        _generate(GenerateConfig(out=project, users=users, days=DEMO_DAYS, start=start,
                                 seed=seed, dirty=0.002, legacy_time=legacy_time))
    meta = orjson.loads((project / "project.json").read_bytes())
    # The options as the user gave them, kept beside the project: a resumed demo names
    # them (--events 1000, not the users derived from it) and any change is seen
    options = root / "demo-options.json"
    given = {"--events": events, "--seed": seed, "--legacy-time": legacy_time}
    if not options.is_file():
        options.write_bytes(orjson.dumps(given))
    kept = orjson.loads(options.read_bytes())
    differs = [f"{k} {kept.get(k)!r} (asked {v!r})" for k, v in given.items() if kept.get(k) != v]
    asked = {"users": users, "seed": seed, "legacy_time": legacy_time}
    if not differs:  # a folder kept by an mp2amp that wrote no options file: the project's
        differs = [f"{k} {meta.get(k)!r} (asked {v!r})" for k, v in asked.items()
                   if meta.get(k) != v]
    if differs:  # a kept demo is resumed: with other options it would report another project
        raise InputError(f"the demo folder {root} holds a project made with other options "
                         f"({', '.join(differs)}): give --workdir a new folder, or delete "
                         "this one, to run the demo with these")
    mp_emu = MixpanelEmulator(MixpanelConfig(
        data_dir=project, api_secret=_MP_SECRET, export_per_hour=None, export_per_second=None,
        seed=seed))
    amp_emu = AmplitudeEmulator(AmplitudeConfig(
        data_dir=root / "amplitude-data", api_key=_AMP_KEY, secret_key=_AMP_SECRET,
        fail_rate=fail_rate, drop_after_ingest_rate=drop_rate, seed=seed, timezone="UTC"),
        segmentation_limits=_SEGMENTATION_BUDGET)
    first, last = export_dates(meta)
    with mp_emu.running() as mp_url, amp_emu.running() as amp_url:
        config = load_config(None, {
            "mixpanel.api_host": mp_url, "mixpanel.project_id": meta["project_id"],
            "mixpanel.timezone": meta["timezone"], "mixpanel.legacy_time": meta["legacy_time"],
            "mixpanel.id_merge": meta["id_merge"],
            "source.from_date": first.isoformat(), "source.to_date": last.isoformat(),
            "amplitude.api_host": amp_url, "transform.groups": list(meta["group_keys"]),
            "transform.revenue": dict(DEMO_REVENUE),
            "run.workdir": str(root / "work"), "run.concurrency": 8,
        }, env={"AMPLITUDE_API_KEY": _AMP_KEY, "MIXPANEL_SECRET": _MP_SECRET})
        resume = (root / "work" / "ledger.sqlite").exists()
        try:
            result = migrate(config, resume=resume, reporter=reporter,
                             mixpanel_overrides={"per_hour": 100_000, "per_second": 1_000,
                                                 "backoff_base": 0.05, "backoff_cap": 1.0},
                             upload_overrides={
                                 "backoff_base": 0.05, "backoff_cap": 1.0,
                                 "max_retries": demo_retries(fail_rate, drop_rate, events)})
        except TerminalError as exc:
            if not resume or not str(exc).startswith(_CONFIG_CHANGED):
                raise
            # migrate's own words name its settings and fingerprint, not the demo's way on
            raise InputError(f"the demo folder {root} was migrated by an earlier mp2amp "
                             "with another configuration: give --workdir a new folder, or "
                             "delete this one, to run the demo with this mp2amp") from None
        # the groups, the session gap and the revenue names the migration makes them with
        proof = EventProof(tuple(meta["group_keys"]),
                           config.transform.session_gap_minutes * 60_000,
                           RevenueNames.of(DEMO_REVENUE))
        raw = proof.read_project(project, ZoneInfo(meta["timezone"]) if meta["legacy_time"]
                                 else None)
        since, until = upload_hours(started, datetime.now(UTC))
        by_type, by_day, _ = export_counts(amp_url, _AMP_KEY, _AMP_SECRET, since, until,
                                           proof.see)
        truth = orjson.loads((project / "truth" / "daily_counts.json").read_bytes())
        seg_first = min((d for days in truth.values() for d in days), default=first.isoformat())
        seg_last = max((d for days in truth.values() for d in days), default=last.isoformat())
        rows, daily = _compare(project, truth, by_type, by_day, amp_url,
                               date.fromisoformat(seg_first), date.fromisoformat(seg_last), raw)
        seg_revenue, why = segmentation_revenue(amp_url, _AMP_KEY, _AMP_SECRET,
                                                date.fromisoformat(seg_first),
                                                date.fromisoformat(seg_last))
    seconds = (datetime.now(UTC) - clock_start).total_seconds()
    return DemoResult(str(root), {"users": users, "days": meta["days"],
                                  "records": meta.get("events_written"),
                                  "timezone": meta["timezone"],
                                  "legacy_time": meta["legacy_time"]},
                      result, rows, daily, seconds, events=proof.finish(),
                      unreadable=proof.unreadable,
                      revenue=proof.revenue_totals(seg_revenue, why))


def _generate(config: GenerateConfig) -> None:
    """Generate into a sibling folder renamed at the end: a generation stopped halfway
    leaves no project that a later run would take as whole (or that ``generate`` would
    refuse as an existing ``--out``); that run starts the generation over."""
    project = config.out
    partial = project.with_name(project.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if project.exists():  # cut short by an mp2amp that generated in place (no project.json)
        shutil.rmtree(project)
    with signals_deferred(sigterm=True):  # never a KeyboardInterrupt inside compiled code
        generate_project(replace(config, out=partial))
    partial.rename(project)


def _compare(project: Path, truth: dict[str, dict[str, int]], by_type: Counter[str],
             by_day: Counter[tuple[str, str]], amp_url: str, first: date,
             last: date, raw: Counter[str] | None = None) -> tuple[list[TypeRow], list[str]]:
    """One row per name in the truth, in Amplitude or in the Mixpanel export (``raw``:
    records per name, read here when not given), and the (type, day) mismatches."""
    if raw is None:
        raw = _raw_counts(project)
    rows: list[TypeRow] = []
    daily: list[str] = []
    for etype in sorted(set(truth) | set(by_type) | set(raw)):
        expected_days = truth.get(etype, {})
        # a name segmentation reserves (_all, revenue_amount, ce:...) or cannot take in a
        # URL, or a raw name (hot-shard, identity record) that nothing expects and the
        # export lacks: the export's counts stand alone
        asked = askable_by_name(etype) and (etype in truth or etype in by_type)
        seg = segmentation_totals(amp_url, _AMP_KEY, _AMP_SECRET, etype, first, last) \
            if asked else None
        days = set(expected_days) | {d for (t, d) in by_day if t == etype} | {
            d for d, n in (seg or {}).items() if n}
        for day in sorted(days):
            want, got = expected_days.get(day, 0), by_day.get((etype, day), 0)
            counted = got if seg is None else seg.get(day, 0)  # the dashboard's day buckets
            if want != got or want != counted:
                also = f" (segmentation {counted})" if counted != got else ""
                daily.append(f"{etype} on {day}: expected {want}, Amplitude has {got}{also}")
        rows.append(TypeRow(etype, raw.get(etype, 0), sum(expected_days.values()),
                            by_type.get(etype, 0),
                            # a type segmentation cannot name: its export count stands
                            by_type.get(etype, 0) if seg is None else sum(seg.values()),
                            segmentation_asked=seg is not None))
    return rows, daily


def _raw_counts(project: Path) -> Counter[str]:
    """Records per event name in the Mixpanel export (every readable record)."""
    raw: Counter[str] = Counter()
    for rec in iter_records([str(project / "events")]):
        if rec.record is not None:
            raw[str(rec.record.get("event"))] += 1
    return raw


def default_workdir() -> Path | None:
    value = os.environ.get("MP2AMP_DEMO_WORKDIR")
    return Path(value) if value else None
