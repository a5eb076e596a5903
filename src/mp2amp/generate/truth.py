"""Ground truth of a generated project: who is behind every event, and what a correct
migration must produce.

Attribution rule (the expected Amplitude ``user_id`` in ``truth/event_person.tsv.gz``;
the identity stage implements the same rule):

1. Records with no usable id (``distinct_id`` missing or one of ``undefined``, ``null``,
   ``0``, the all-zero UUID, and no ``$device_id``/``$user_id``): user and device are
   both empty; they are not counted anywhere else in the truth.
2. Hot-shard records (``event == "$hotshard_events"``) are read as
   ``mp_original_event_name`` / ``mp_original_distinct_id`` first, then as below.
3. A record that names a user - ``$user_id``, or (no ``$user_id`` and no ``$device_id``)
   a ``distinct_id`` that is not a device id - belongs to that user's **canonical** id.
   Canonical id of a cluster = the id that appears as ``$user_id`` on its events
   (every person has exactly one). In original ID merge, ``$create_alias`` (``alias`` ->
   ``distinct_id``) and ``$merge`` (``$distinct_ids[1]`` -> ``[0]``) add aliases and
   legacy ids that server-side events use as ``distinct_id``; they resolve to the
   canonical id. ``$identify`` joins ``$anon_distinct_id``/``$anon_id`` (a device id) to
   ``distinct_id``/``$identified_id`` - unless that device is already joined to
   another user, in which case Mixpanel refuses the merge and so does the truth.
4. A record with only a device (``$device_id``, or ``distinct_id`` ``"$device:<id>"``
   in simplified / ``<id>`` in original mode) belongs to the **first user ever seen
   with that device**: the ``$user_id`` of the earliest (by ``time``) record carrying
   both that ``$device_id`` and a ``$user_id`` (simplified), or the user of the earliest
   accepted ``$identify`` for it (original). This is retroactive: anonymous events
   *before* the login count for that user too. A device never seen with a user gives
   an empty user. Shared devices follow the same rule: after a second person logs in on
   a device (their own events carry their ``$user_id`` and are theirs) and logs out,
   the device's anonymous events still belong to the first user. The generator makes
   the first user's login strictly earlier (an earlier day) than any other user's.
5. The device column is ``$device_id`` (or the id inside ``$device:``); empty for
   server-side events, which carry no device.

Column 1 is ``$insert_id``; events without one (old iOS SDKs), and events whose
``$insert_id`` an earlier, distinct event already carries (dirt ``reused_insert_ids``:
another second, so Mixpanel keeps both), get ``@<events/YYYY-MM-DD.jsonl.gz>:<line>`` -
the file and 1-based line where the record starts. So a reader looks an event up by its
``$insert_id`` first and, when that key is taken by an earlier event, by its line. Daily counts are per **UTC** day of the event's real instant. Metrics use the
Amplitude identity ``user_id or device_id`` as "who".
"""

from __future__ import annotations

from bisect import bisect_left
from collections import _count_elements  # type: ignore[attr-defined]  # C counting loop
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from mp2amp.generate.writer import FLUSH_AT, GzipLines, write_json

DAY_MS = 86_400_000
_first = itemgetter(0)

RETENTION_DAYS = (1, 7)
RETENTION_DEFINITION = (
    "who = user_id or device_id from event_person; cohort = UTC day of a person's first "
    "counted event; day_N = cohort members with any counted event on cohort day + N "
    "(UTC); counted = every event in daily_counts"
)
FUNNEL_DEFINITION = (
    "ordered funnel over the whole window, no conversion time limit: step k counts the "
    "people (user_id or device_id) who did step k at or after the first time they did "
    "step k-1 (strictly later in time); duplicates and unusable records excluded"
)


def utc_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, tz=UTC).strftime("%Y-%m-%d")


class Truth:
    """Collects the truth while events stream; memory grows with people, not events."""

    def __init__(self, root: Path, funnels: dict[str, tuple[str, ...]], origin_day: int) -> None:
        self.root = root
        self.event_person = GzipLines(root / "event_person.tsv.gz")
        self._daily: dict[int, dict[str, int]] = {}  # UTC day -> event name -> count
        self.funnels = funnels
        self._funnel_state: dict[str, dict[str, int]] = {name: {} for name in funnels}
        self._funnel_counts: dict[str, list[int]] = {n: [0] * len(s) for n, s in funnels.items()}
        # per funnel: its steps, who -> steps reached, people per step; each funnel event -> its funnels
        self._funnel_runs = [(steps, self._funnel_state[fname], self._funnel_counts[fname])
                             for fname, steps in funnels.items()]
        self._funnels_of: dict[str, tuple[int, ...]] = {}
        for number, steps in enumerate(funnels.values()):
            for step in dict.fromkeys(steps):
                self._funnels_of[step] = (*self._funnels_of.get(step, ()), number)
        self._funnel_events = frozenset(self._funnels_of)
        self._touched: dict[frozenset[str], tuple[int, ...]] = {}  # funnel events of a run -> their funnels
        # who -> bit d set when active on UTC day origin_day + d (no event is before the window)
        self._origin = origin_day
        self._activity: dict[str, int] = {}
        self.counted = 0
        self.unusable = 0

    def unusable_event(self, key: str) -> None:
        self.event_person.write(f"{key}\t\t\n".encode())
        self.unusable += 1

    def event(self, key: str, name: str, t_ms: int, user: str, device: str) -> None:
        self.events([key.encode()], [(name,)], [t_ms], f"\t{user}\t{device}\n".encode(), user or device)

    def events(self, keys: list[bytes], steps: Sequence[tuple[Any, ...]], times: list[int],
               row_end: bytes, who: str) -> None:
        """Counted events in time order that share a user and a device (a run of one
        session): their keys, steps whose first item is the event name, and instants.
        ``row_end`` is the tab-separated user, device and newline that follow each key in
        ``event_person``. Per-event work is left to C where it can be: a join for the rows,
        a count of the names per UTC day; funnels look at runs holding their events only."""
        rows = self.event_person.pending  # (event_person.lines is not kept: no one names its lines)
        rows.append(row_end.join(keys) + row_end)  # one piece per run: the .gz chunks as they always were
        if len(rows) >= FLUSH_AT:
            self.event_person.flush()
        self.counted += len(keys)
        names = list(map(_first, steps))
        day = times[0] // DAY_MS
        if day == times[-1] // DAY_MS:
            counts = self._daily.get(day)
            if counts is None:
                counts = self._daily[day] = {}
            _count_elements(counts, names)
            activity = self._activity
            activity[who] = activity.get(who, 0) | 1 << (day - self._origin)
        else:  # a run across UTC midnight
            start = 0
            while start < len(times):
                stop = bisect_left(times, (day + 1) * DAY_MS, start)
                if stop > start:
                    _count_elements(self._daily.setdefault(day, {}), names[start:stop])
                    self._activity[who] = self._activity.get(who, 0) | 1 << (day - self._origin)
                start, day = stop, day + 1
        if self._funnel_events.isdisjoint(names):
            return
        # each funnel's next step for who, in order: the first later event with its name
        hits = self._funnel_events.intersection(names)
        touched = self._touched.get(hits)
        if touched is None:  # the funnels these events are steps of (their order does not matter)
            touched = self._touched[hits] = tuple(sorted({n for name in hits for n in self._funnels_of[name]}))
        for number in touched:
            funnel, state, people = self._funnel_runs[number]
            reached = state.get(who, 0)
            if reached == len(funnel) or funnel[reached] not in names:
                continue
            want = funnel[reached]
            for name in names:  # greedy: each step at its first occurrence after the one before
                if name == want:
                    people[reached] += 1
                    reached += 1
                    if reached == len(funnel):
                        break
                    want = funnel[reached]
            state[who] = reached

    def daily_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        rows = sorted((name, day, count) for day, counts in self._daily.items() for name, count in counts.items())
        for name, day, count in rows:
            out.setdefault(name, {})[utc_day(day)] = count
        return out

    def metrics(self) -> dict[str, Any]:
        cohorts: dict[int, list[int]] = {}
        for bits in self._activity.values():
            first = (bits & -bits).bit_length() - 1
            row = cohorts.setdefault(self._origin + first, [0] * (1 + len(RETENTION_DAYS)))
            row[0] += 1
            for i, n in enumerate(RETENTION_DAYS, start=1):
                row[i] += (bits >> (first + n)) & 1
        return {
            "identity": "user_id if not empty else device_id (truth/event_person.tsv.gz)",
            "funnels": [
                {"name": f"{fname} funnel", "industry": fname, "steps": list(steps),
                 "definition": FUNNEL_DEFINITION, "people": self._funnel_counts[fname]}
                for fname, steps in self.funnels.items()
            ],
            "retention": {
                "definition": RETENTION_DEFINITION,
                "days": list(RETENTION_DAYS),
                "cohorts": {utc_day(day): {"size": row[0], **{f"day_{n}": row[i] for i, n in
                                                              enumerate(RETENTION_DAYS, start=1)}}
                            for day, row in sorted(cohorts.items())},
            },
            "people": len(self._activity),
        }

    def close(self) -> None:
        self.event_person.close()
        write_json(self.root / "daily_counts.json", self.daily_counts())
        write_json(self.root / "metrics.json", self.metrics())
