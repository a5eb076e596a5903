"""The uploader's observer that writes to the ledger: what makes a crash resumable.

Order of writes, and why it is safe at any instant:
  1. ``on_batch_sent``  -> batch row ``sent`` (before the request leaves)
  2. ``on_dead_letter`` / ``on_parked`` -> rows keyed by the event's origin (idempotent),
     naming their batch
  3. ``on_batch_accepted`` -> batch row ``done``; when the window's last batch is done and
     the window was flushed, the window is ``loaded``.
A crash before 3 leaves the batch ``sent``: resume sends it again with the same insert_ids,
and drops the parked events it left; its dead letters stay listed until their events, sent
again, are accepted or parked (or refused again: the same row). An
event's accepting or parking drops any dead letter an earlier attempt left for it in the
same transaction, so no event counts as both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from mp2amp.ledger import Ledger
from mp2amp.load.observer import Origin, Submitted
from mp2amp.load.settings import LoadReport
from mp2amp.pipeline.progress import Counters

PARKED_KEY = "parked"


def origin_key(origin: Origin) -> str:
    return orjson.dumps([origin[0], origin[1]]).decode()


def _dumps(event: Any) -> bytes:
    try:
        return orjson.dumps(event)
    except TypeError:
        return orjson.dumps(repr(event))


class LedgerObserver:
    """Implements ``mp2amp.load.observer.LoadObserver`` on top of the ledger."""

    def __init__(self, ledger: Ledger, counters: Counters, key_to_window: dict[str, str],
                 on_window_loaded: Callable[[str], None],
                 merged_into: dict[str, str] | None = None) -> None:
        self.ledger = ledger
        # An event's window is its source, unless that window was merged into another
        # (pipeline/overlaps.py): then the records, so their outcomes, count there.
        self.merged_into = merged_into or {}
        self.counters = counters
        self.key_to_window = key_to_window
        self.on_window_loaded = on_window_loaded
        self.expected: dict[str, int] = {}  # window -> batches in all, known after flush
        self._sizes: dict[str, int] = {}
        self._parked_in: dict[str, int] = {}  # batch -> its events parked (daily quota)
        # records with their outcome without Amplitude: never to be sent (duplicates,
        # identity records, skips, rejections)
        self.unsent_records = 0
        # records of the windows earlier runs loaded (a resume): replayed, never sent;
        # less their events still parked, which this run delivers (``resume_from``)
        self.earlier = 0
        self.loaded_before: frozenset[str] = frozenset()
        self._skipped = 0  # events of batches an earlier run delivered, skipped so far
        # parked events replayed and settled in this run whose records count already, in
        # a done batch of a window not loaded (skipped, ``report.skipped``)
        self._replayed_counted = 0
        # before this run's first outcome from Amplitude its pace is unknown: records done
        # without it so far are done, but not the pace (the ETA reads "?")
        self._paced = False
        self._unpaced = 0  # records done without Amplitude, counted so
        self._clocked = False  # the pace's clock restarted at this run's first own event

    def resume_from(self, windows: Iterable[Any],
                    parked: Mapping[str, Mapping[str, int]]) -> int:
        """Records the earlier runs' windows settled (shown as done, not as this run's
        pace): those of the ``loaded`` windows, less their events still parked
        (``Ledger.parked_counts``), which this run replays as its own work."""
        loaded = {w.window_id: w.records for w in windows if w.state == "loaded"}
        self.loaded_before = frozenset(loaded)
        self.earlier = sum(loaded.values()) - sum(
            parked.get(window, {}).get("parked", 0) for window in loaded)
        return self.earlier

    def refresh(self, report: LoadReport) -> None:
        """Copy the uploader's live report into the counters: records done (their events
        accepted, dead-lettered or parked, or never to be sent), events accepted,
        retries, throttles. Called by the progress ticker while requests are in flight."""
        c = self.counters
        outcomes = report.accepted + sum(report.dead_lettered.values()) + report.parked
        settled = outcomes + report.skipped - self._replayed_counted
        if not self._clocked and (report.submitted or outcomes):
            self._clocked = True  # the first event of its own: the pace's clock starts
            c.pace_from_now()
        if report.skipped != self._skipped:  # done, by an earlier run: not this run's pace
            c.done_earlier(report.skipped - self._skipped)
            self._skipped = report.skipped
        if not self._paced:  # an unserializable event is dead-lettered without Amplitude
            unserializable = report.dead_lettered.get("unserializable", 0)
            self._paced = outcomes > unserializable
            if not self._paced:
                unanswered = self.unsent_records + unserializable
                c.done_earlier(unanswered - self._unpaced)
                self._unpaced = unanswered
        # a parked batch's events count in the report before the batch is done
        c.done = min(c.total, self.earlier + self.unsent_records + settled)
        c.sent = report.accepted
        c.retries = report.retries
        c.throttles = report.throttles

    def window_of(self, batch_id: str) -> str:
        return self.key_to_window[batch_id.split("/", 1)[0]]

    # --- LoadObserver ------------------------------------------------------------------

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        self._sizes[batch_id] = n
        if batch_id.startswith(PARKED_KEY + "/"):
            self.ledger.sending()  # the run's key digest, before the replay leaves
            return
        key, _, rest = batch_id.partition("/")
        seq = int(rest.rsplit("/", 1)[-1]) if rest else 0
        self.ledger.batch_sent(batch_id, self.key_to_window[key], seq, n)

    def on_batch_accepted(self, batch_id: str, events: Sequence[Submitted]) -> None:
        if batch_id.startswith(PARKED_KEY + "/"):
            self._sizes.pop(batch_id, None)
            for item in events:  # each with its event's dead letter dropped, if any
                self.ledger.resolve_parked(origin_key(item.origin), "accepted")
                self._replayed(item.origin)
            return
        n = self._sizes.pop(batch_id, len(events))
        parked = self._parked_in.pop(batch_id, 0)  # reported before the batch is done
        window = self.ledger.batch_done(batch_id, accepted=len(events),
                                        dead_lettered=n - len(events) - parked, parked=parked,
                                        accepted_origins=[e.origin for e in events])
        self.check_window(window)

    def on_dead_letter(self, event: dict[str, Any], origin: Origin, reason: str,
                       message: str, batch_id: str | None = None) -> None:
        self.counters.dead_letters += 1
        window = self.merged_into.get(origin[0], origin[0])
        # tied to its batch: a batch not done is sent again whole by a resume, which
        # keeps its dead letters until their events get another outcome
        batch = None if batch_id is None or batch_id.startswith(PARKED_KEY + "/") else batch_id
        # one step: killed between the two, a parked event would be replayed (and maybe
        # accepted) with its dead letter on record
        with self.ledger.atomic():
            self.ledger.add_rejects([(origin[0], origin[1], window, "amplitude", reason,
                                      message, None, _dumps(event).decode(), batch)])
            self.ledger.resolve_parked(origin_key(origin), "dead_lettered")
        if batch_id is not None and batch_id.startswith(PARKED_KEY):
            self._replayed(origin)

    def on_parked(self, event: dict[str, Any], origin: Origin, reason: str,
                  batch_id: str = PARKED_KEY) -> None:
        batch = PARKED_KEY if batch_id.startswith(PARKED_KEY) else batch_id
        self.ledger.park(self.merged_into.get(origin[0], origin[0]), batch, origin_key(origin),
                         _dumps(event), reason)
        if batch != PARKED_KEY:
            self._parked_in[batch] = self._parked_in.get(batch, 0) + 1
        else:  # a replayed parked event parked again
            self._replayed(origin)

    def _replayed(self, origin: Origin) -> None:
        """A replayed parked event settled: its record counts already if its window was
        not loaded (its done batch is skipped); else it is this run's work (``earlier``)."""
        if self.merged_into.get(origin[0], origin[0]) not in self.loaded_before:
            self._replayed_counted += 1

    # --- windows -----------------------------------------------------------------------

    def flushed(self, window: str, batches: int) -> None:
        self.expected[window] = batches
        self.check_window(window)

    def check_window(self, window: str) -> None:
        want = self.expected.get(window)
        if want is not None and self.ledger.done_batch_count(window) >= want:
            del self.expected[window]
            self.on_window_loaded(window)
