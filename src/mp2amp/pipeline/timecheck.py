"""Do the event times read as the project's? A check on the staged windows before the load.

Why: a project created before 2023 exports its times as the project's wall clock, not UTC
(reference: mixpanel-api.md, legacy time). Read with the wrong ``[mixpanel] timezone`` /
``legacy_time``, every event lands hours off in Amplitude, and a sent event cannot be moved.
Mixpanel stamps each event with when it ingested it (``mp_processing_time_ms``, else
``$mp_api_timestamp_ms``, always UTC): web events arrive seconds after they happen, so when
most events instead sit a steady whole number of quarter hours from their ingestion, the
times were read in the wrong zone. Mobile events sent late spread out and never make one
such bucket the most common, so they do not raise it; history ``/import``-ed days later is
further off than any zone and is left out of the shares.

A sample is enough: lines spread over each staged window (staged files are sorted by time,
so the first lines would be a day's first minutes: an hourly sync's delays would look like a
zone there), every window sampled, ``MAX_SAMPLES`` in all. The check reads the staged line's
UTC key and the ingestion stamp's digits, nothing else.

``stop`` stops the run only when something is left to send (a window not loaded whose
batches are not all done, events parked for the daily quota): a finished run resumed would send nothing more, so there the
check only reports, as ``warn`` does, and the run ends as finished runs do.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.accounting import totals, window_counts
from mp2amp.pipeline.import_folder import WROTE_KEY
from mp2amp.pipeline.staging import UNKNOWN_TIME, staged_key

log = logging.getLogger("mp2amp.migrate")

BUCKET_MS = 15 * 60_000  # zone offsets are whole quarter hours
HOUR = 4  # buckets
PER_WINDOW = 400
MIN_PER_WINDOW = 20
PARTS = 20  # places a big window is sampled at
SMALL_FILE = 4 << 20  # read whole: its parts could overlap
MAX_SAMPLES = 40_000
MIN_SAMPLES = 200  # fewer say nothing either way
MOST = 0.6  # the share of the zone-like sample one shift (and its DST neighbour) must hold
AT_ZERO_AT_MOST = 0.2  # and the share left within 7.5 minutes of their ingestion
# One zone's wall clock read as another's: at most UTC+14 against UTC-12, either way.
# Further off is history imported later, which no zone explains: left out of the shares.
_ZONE_LIKE = range(-26 * HOUR, 26 * HOUR + 1)
_STAMP = re.compile(rb'"(?:mp_processing_time_ms|\$mp_api_timestamp_ms)"\s*:\s*(\d{12,14})\s*[,}]')


@dataclass(frozen=True, slots=True)
class TimeHint:
    offset_minutes: int  # how much later the times read are than Mixpanel's instants
    share: float
    sampled: int  # zone-like samples: the share's base
    at: float = 0.0  # a sampled event's UTC seconds, for a configured zone's offset
    read_as: str | None = None  # the zone a legacy_time config reads the times in
    sent: int = 0  # events of this run already in Amplitude (or its import files)
    to_files: bool = False  # the S3-import sink: written to import files, not sent
    parked: int = 0  # events parked for Amplitude's daily quota: a resume sends them
    finished: bool = False  # nothing is left to send: every batch done, none parked
    unsent: int = 0  # in batches sent with no answer recorded (a crash): maybe in Amplitude
    files_left: bool = False  # an unfinished attempt's import files may be in output_dir

    def as_dict(self) -> dict[str, Any]:
        return {"looks_offset_minutes": self.offset_minutes, "share": round(self.share, 3),
                "sampled": self.sampled, "looks_like_zone": _zone(self.zone_minutes())}

    def zone_minutes(self) -> int:
        """The UTC offset of the zone whose wall clock the times look like."""
        return self.offset_minutes + (0 if self.read_as is None else _offset(self.read_as,
                                                                             self.at))

    def message(self, stopping: bool = False, final: bool = False) -> str:
        """What the check found and what to do: ``stopping`` (the run stops now), else a
        warning as the load begins, or ``final`` once the run is over."""
        later = self.offset_minutes > 0  # the times read are later than the ingestion
        zone = self.zone_minutes()
        if self.read_as is None:
            cause = (f"as when the wall clock of a zone at UTC{_zone(zone)} is read as UTC "
                     "(the config reads the times as UTC: legacy_time = false)")
        else:
            cause = (f"as when the wall clock of a zone at UTC{_zone(zone)} is read as "
                     f"{self.read_as} (legacy_time = true"
                     + (", while the times look like UTC: legacy_time = false" if zone == 0
                        else "") + ")")
        head = (f"the event times look {_span(self.offset_minutes)} "
                f"{'later' if later else 'earlier'} than Mixpanel ingested them ({self.share:.0%} "
                f"of the {self.sampled} events sampled; a few seconds earlier is usual), "
                f"{cause}. A project created before 2023 exports its own timezone's wall "
                "clock: set [mixpanel] timezone to that zone and legacy_time = true; a newer "
                "one exports UTC: legacy_time = false. Then migrate in a new work folder. ")
        done = self._done()
        if self.finished:  # a finished run resumed: stopping it would protect nothing
            verb = "written" if self.to_files else "sent"
            return head + done + (f"Nothing was left to be {verb}: the run {verb} nothing "
                                  "more" if final else f"Nothing is left to be {verb}: the "
                                  f"run is not stopped, and nothing more is {verb}")
        waiting = (f"{self.parked} events parked for Amplitude's daily quota are not sent "
                   "yet. ") if self.parked else ""
        if stopping:
            return head + (done or "Nothing was sent. ") + waiting + (
                'If the times are right as they are, set [mixpanel] time_check = "warn" '
                "and run the same command with --resume")
        if final:
            return head + "The run went on with these times ([mixpanel] time_check = warn)"
        return head + done + ("The run goes on ([mixpanel] time_check = warn): stop it "
                              "(Ctrl-C) unless the times are meant so")

    def _done(self) -> str:
        """What of the run is out already: recorded, and sent with no answer recorded (a
        crash: Amplitude may have those, the resume sends them again)."""
        if self.to_files and self.files_left:  # the counts cover only some of the files
            return ("Import files of an earlier attempt of this run may be in [amplitude] "
                    "output_dir: do not import them (the run removes them when it goes on). ")
        if self.to_files:
            return (f"{self.sent} events of this run are written to import files in "
                    "[amplitude] output_dir (do not import them if the times are wrong). "
                    if self.sent else "")
        unsure = (f"up to {self.unsent} {'more ' if self.sent else ''}events of this run may "
                  "be in Amplitude (sent before the run stopped, with no answer recorded)")
        told = "Amplitude cannot move them: delete them there if the times are wrong"
        if self.sent:
            return (f"{self.sent} events of this run are in Amplitude already ({told})"
                    + (f", and {unsure}" if self.unsent else "") + ". ")
        return f"{unsure[0].upper()}{unsure[1:]} ({told}). " if self.unsent else ""


def _span(minutes: int) -> str:
    hours, rest = divmod(abs(minutes), 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def _zone(minutes: int) -> str:
    hours, rest = divmod(abs(minutes), 60)
    return f"{'+' if minutes >= 0 else '-'}{hours}:{rest:02d}"


def _offset(zone: str, at: float) -> int:
    """``zone``'s UTC offset in minutes at the UTC instant ``at``."""
    delta = datetime.fromtimestamp(at, UTC).astimezone(ZoneInfo(zone)).utcoffset()
    return 0 if delta is None else round(delta.total_seconds() / 60)


def _spread(path: Path, want: int) -> Iterator[bytes]:
    """About ``want`` whole lines spread over the file: every k-th line of a small one,
    else runs of lines from ``PARTS`` places (apart enough not to overlap)."""
    size = path.stat().st_size
    if size <= SMALL_FILE:
        lines = path.read_bytes().splitlines(keepends=True)
        yield from lines[::max(1, len(lines) // want)][:want]
        return
    per_part = max(1, want // PARTS)
    with open(path, "rb") as f:
        for part in range(PARTS):
            at = size * part // PARTS
            f.seek(at)
            if at:
                f.readline()  # the rest of a line cut by the seek
            for _ in range(per_part):
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                yield line


def sample(paths: list[Path]) -> tuple[Counter[int], dict[int, float]]:
    """Quarter-hour buckets of (ingested - event time) over lines spread across each file,
    and for each bucket one of its events' UTC seconds (a configured zone's offset is
    taken there: one odd device clock must not decide it)."""
    buckets: Counter[int] = Counter()
    at: dict[int, float] = {}
    want = max(MIN_PER_WINDOW, min(PER_WINDOW, MAX_SAMPLES // max(1, len(paths))))
    step = max(1, len(paths) * want // MAX_SAMPLES)  # past that, every step-th window
    for path in paths[::step]:
        try:
            for line in _spread(path, want):
                found = _STAMP.search(line)
                if found is None:
                    continue
                try:
                    key = staged_key(line)
                except ValueError:  # a line cut short: the load names it
                    continue
                if key == UNKNOWN_TIME:
                    continue
                bucket = round((int(found.group(1)) - key * 1000) / BUCKET_MS)
                buckets[bucket] += 1
                at.setdefault(bucket, key)
        except OSError:  # gone: restaged or named elsewhere
            continue
    return buckets, at


def verdict(buckets: Counter[int], at: dict[int, float] | None = None,
            read_as: Callable[[float], str | None] = lambda _: None, sent: int = 0,
            to_files: bool = False) -> TimeHint | None:
    """A hint when one shift (with its DST neighbour an hour away) holds most of the
    zone-like sample and few events sit at zero."""
    zone_like = {b: c for b, c in buckets.items() if b in _ZONE_LIKE}
    sampled = sum(zone_like.values())
    if sampled < MIN_SAMPLES or zone_like.get(0, 0) > AT_ZERO_AT_MOST * sampled:
        return None

    def held(b: int) -> int:  # a DST zone's days sit at two shifts an hour apart
        return zone_like[b] + max(zone_like.get(b - HOUR, 0), zone_like.get(b + HOUR, 0))

    bucket = max((b for b in zone_like if abs(b) >= 2), key=held, default=0)
    if bucket == 0 or held(bucket) < MOST * sampled:
        return None
    instant = (at or {}).get(bucket, 0.0)
    return TimeHint(offset_minutes=-bucket * 15, share=held(bucket) / sampled, sampled=sampled,
                    at=instant, read_as=read_as(instant), sent=sent, to_files=to_files)


def check_event_times(paths: list[Path],
                      read_as: Callable[[float], str | None] = lambda _: None,
                      sent: int = 0, to_files: bool = False) -> TimeHint | None:
    """``read_as``: the zone a legacy_time config reads a time at that UTC instant in
    (its timezone_changes applied), None when the config reads UTC."""
    buckets, at = sample(paths)
    return verdict(buckets, at, read_as, sent, to_files)


def check_before_load(config: Any, ledger: Ledger) -> TimeHint | None:
    """The check on every staged window, before the load: ``stop`` raises (nothing more
    is sent) when something is left to send, else the hint is logged (module docstring)."""
    windows = ledger.windows()
    done = totals(window_counts(ledger))
    hint = check_event_times([Path(w.staged_path) for w in windows if w.staged_path],
                             configured_zone(config), int(done.get("sent", 0)),
                             to_files=config.amplitude.output_dir is not None)
    if hint is None:
        return None
    parked = int(done.get("parked", 0))
    batches = ledger.batch_counts()
    finished = not parked and _all_sent(batches, windows)
    hint = replace(hint, parked=parked, finished=finished,
                   unsent=sum(c[2] for c in batches.values()),
                   files_left=not finished and ledger.get_meta(WROTE_KEY) is not None)
    if config.mixpanel.time_check == "stop" and not hint.finished:
        raise TerminalError(hint.message(stopping=True))  # a wrong zone cannot be undone
    log.warning(hint.message())
    return hint


def _all_sent(batches: dict[str, tuple[int, int, int]], windows: list[Any]) -> bool:
    """Every window loaded, or cut into batches that are all done: a crash after the
    last batch's answer and before ``mark_loaded`` leaves nothing to send either. A
    window's batch count is recorded (``counts["batches"]``) once it is cut whole; one
    not cut yet (no count) has events to send. ``batches``: ``Ledger.batch_counts``."""

    def sent(w: Any) -> bool:
        if w.state == "loaded":
            return True
        cut = w.counts.get("batches")
        made, done, _ = batches.get(w.window_id, (0, 0, 0))
        return isinstance(cut, int) and cut == made and made == done

    return all(sent(w) for w in windows)


def configured_zone(config: Any) -> Callable[[float], str | None]:
    """The zone ``config`` reads a time at a UTC instant in: None when it reads UTC (not
    legacy_time), else its timezone, or the one of the last timezone_changes entry in
    force by then (its date as a UTC date: a day's precision is all the message needs)."""
    mixpanel = config.mixpanel
    if not mixpanel.legacy_time:
        return lambda _: None

    def zone(at: float) -> str | None:
        day = datetime.fromtimestamp(at, UTC).date()
        current: str = mixpanel.timezone
        for change in mixpanel.timezone_changes:
            if change.since <= day:
                current = change.timezone
        return current

    return zone
