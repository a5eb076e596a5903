"""Do the event times read as the project's? A check on the staged windows before the load.

Why: a project created before 2023 exports its times as the project's wall clock, not UTC
(reference: mixpanel-api.md, legacy time). Read with the wrong ``[mixpanel] timezone`` /
``legacy_time``, every event lands hours off in Amplitude, and a sent event cannot be moved.
Mixpanel stamps each event with when it ingested it (``mp_processing_time_ms``, else
``$mp_api_timestamp_ms``, always UTC): web events arrive seconds after they happen, so when
most events instead sit a steady whole number of quarter hours from their ingestion, the
times were read in the wrong zone. Mobile events sent late spread out and never make one
such bucket the most common, so they do not raise it.

A sample is enough (the first lines of each staged window, up to ``MAX_SAMPLES``): the
check reads the staged line's UTC key and the ingestion stamp's digits, nothing else.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mp2amp.pipeline.staging import UNKNOWN_TIME, staged_key

BUCKET_MS = 15 * 60_000  # zone offsets are whole quarter hours
PER_WINDOW = 400
MAX_SAMPLES = 40_000
MIN_SAMPLES = 200  # fewer say nothing either way
MOST = 0.6  # the share of the sample one shifted bucket must hold
AT_ZERO_AT_MOST = 0.2  # and the share left within 7.5 minutes of their ingestion
_OFFSETS = range(-14 * 4, 12 * 4 + 1)  # UTC-12..UTC+14 read as UTC: the buckets they make
_STAMP = re.compile(rb'"(?:mp_processing_time_ms|\$mp_api_timestamp_ms)":(\d{12,14})[,}]')


@dataclass(frozen=True, slots=True)
class TimeHint:
    offset_minutes: int  # the zone's offset the times look read in (local = UTC + this)
    share: float
    sampled: int

    def as_dict(self) -> dict[str, Any]:
        return {"looks_offset_minutes": self.offset_minutes, "share": round(self.share, 3),
                "sampled": self.sampled}

    def message(self, stopping: bool = False) -> str:
        later = self.offset_minutes > 0  # the times read are later than the ingestion
        return (f"the event times look {_span(self.offset_minutes)} "
                f"{'later' if later else 'earlier'} than Mixpanel ingested them ({self.share:.0%} "
                f"of the {self.sampled} events sampled; a few seconds earlier is usual), as "
                f"when the wall clock of a zone at UTC{_zone(self.offset_minutes)} is read as "
                f"UTC, or UTC times as the wall clock of a zone at "
                f"UTC{_zone(-self.offset_minutes)}. A project created before 2023 exports its "
                "own timezone's wall clock: set [mixpanel] timezone to that zone and "
                "legacy_time = true; a newer one exports UTC: legacy_time = false. Then "
                "migrate in a new work folder. " + (
                    "Nothing was sent: if the times are right as they are, set [mixpanel] "
                    'time_check = "warn" and run the same command with --resume'
                    if stopping else "Amplitude cannot move events once sent: stop this run "
                    "(Ctrl-C) unless the times are meant so"))


def _span(minutes: int) -> str:
    hours, rest = divmod(abs(minutes), 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def _zone(minutes: int) -> str:
    hours, rest = divmod(abs(minutes), 60)
    return f"{'+' if minutes >= 0 else '-'}{hours}:{rest:02d}"


def sample(paths: Iterable[Path]) -> Counter[int]:
    """Quarter-hour buckets of (ingested - event time) over the first lines of each file."""
    buckets: Counter[int] = Counter()
    taken = 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                for n, line in enumerate(f):
                    if n >= PER_WINDOW or taken >= MAX_SAMPLES:
                        break
                    found = _STAMP.search(line)
                    if found is None:
                        continue
                    try:
                        key = staged_key(line)
                    except ValueError:  # a line cut short: the load names it
                        continue
                    if key == UNKNOWN_TIME:
                        continue
                    buckets[round((int(found.group(1)) - key * 1000) / BUCKET_MS)] += 1
                    taken += 1
        except OSError:  # gone: restaged or named elsewhere
            continue
        if taken >= MAX_SAMPLES:
            break
    return buckets


def verdict(buckets: Counter[int]) -> TimeHint | None:
    """A hint when one shifted bucket holds most of the sample and few events sit at zero."""
    sampled = sum(buckets.values())
    if sampled < MIN_SAMPLES:
        return None
    bucket, count = max(((b, c) for b, c in buckets.items() if b in _OFFSETS),
                        key=lambda bc: bc[1], default=(0, 0))
    if abs(bucket) < 2 or count < MOST * sampled or buckets[0] > AT_ZERO_AT_MOST * sampled:
        return None
    return TimeHint(offset_minutes=-bucket * 15, share=count / sampled, sampled=sampled)


def check_event_times(paths: Iterable[Path]) -> TimeHint | None:
    return verdict(sample(paths))
