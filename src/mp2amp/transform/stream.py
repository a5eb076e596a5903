"""The transform chain over a stream of source records: exactly one outcome per record.

    record unusable (extract's rejection)            -> Rejected
    $identify / $create_alias / $merge               -> IdentityRecord (fed the graph in pass 1)
    Transformer.event(): Rejection | Skip            -> Rejected | Skipped
    same insert_id as an earlier event               -> Duplicate
    otherwise: session_id added                      -> Emitted

Deduplication runs on events the transformer accepted, so a duplicate of a rejected or
skipped record counts under that reason, and a duplicate never advances a session.
What the transformer counts for an event (``Transformer.stats()``: truncations,
flattenings, revenue_not_a_number...) is taken off it as the event comes out and kept
only once the Deduper accepts the event: a duplicate is not sent, so not counted.
``TransformSummary`` counts what was read (independently of the outcomes, by wrapping the
record iterator) and what came out, and checks the ledger's invariant
``read = out + identity + duplicates + skipped + rejected``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mp2amp.errors import InvariantViolation, Rejection
from mp2amp.identity.ids import IDENTITY_EVENTS
from mp2amp.models import (
    IDENTITY_RECORD,
    Duplicate,
    Emitted,
    IdentityRecord,
    Outcome,
    Rejected,
    Resolved,
    Skip,
    Skipped,
    SourceRecord,
)
from mp2amp.transform.dedup import Deduper
from mp2amp.transform.events import Transformer
from mp2amp.transform.sessions import Sessionizer

# ``Transformer.stats()``: what the transform changed, per section ("truncated",
# "flattened", "other") and property
Stats = dict[str, dict[str, int]]


class Resolver(Protocol):
    """The identity graph after pass 1 (``mp2amp.identity.IdentityGraph``)."""

    def resolve(self, props: dict[str, Any]) -> Resolved: ...


class EventTransformer(Protocol):
    """The pure mapping core (``mp2amp.transform.events.Transformer``)."""

    raw_ms: int  # the last event's source time (ms): its insert_id's, the Deduper's key

    def event(self, record: dict[str, Any], ids: Resolved) -> dict[str, Any] | Rejection | Skip: ...


def transform_stream(
    records: Iterable[SourceRecord],
    graph: Resolver,
    transformer: EventTransformer,
    sessionizer: Sessionizer,
    deduper: Deduper,
) -> Iterator[Outcome]:
    """One outcome per source record, in input order (see the module docstring). Once
    the records are all read, ``transformer.stats()`` counts no duplicate."""
    # Each record's counts are taken off the transformer (a few truth tests when it
    # counted nothing, the common case) and kept here unless it is a duplicate; they go
    # back into the transformer when the stream ends.
    kept = take_stats(transformer) or {}  # counted before this stream: kept
    sections = counters_of(transformer)
    truncated, flattened, counts = (c for _, c in sections) if sections else ((), (), ())
    try:
        for src in records:
            out = transform_record(src, graph, transformer)
            delta = take_counts(sections) if truncated or flattened or counts else None
            if isinstance(out, Emitted):
                event = out.event
                if deduper.is_duplicate(event["insert_id"], transformer.raw_ms):
                    yield Duplicate(event["insert_id"], out.source, out.line)
                    continue  # not sent: its counts are dropped
                if "session_id" not in event:
                    event["session_id"] = sessionizer.session_id(
                        event.get("device_id"), event.get("user_id"), event["time"])
            if delta:
                add_stats(kept, delta)
            yield out
    finally:
        if kept:
            give_back(transformer, kept)


def take_stats(transformer: EventTransformer) -> Stats | None:
    """What ``transformer`` counted since the last call (None: nothing), its counters then
    cleared. A few truth tests when nothing was counted."""
    if not isinstance(transformer, Transformer):
        return None
    values, counts = transformer.values, transformer.counts
    if not (values.truncated or values.flattened or counts):
        return None
    stats = transformer.stats()
    values.truncated.clear()
    values.flattened.clear()
    counts.clear()
    return stats


def counters_of(transformer: EventTransformer) -> tuple[tuple[str, Counter[str]], ...]:
    """The transformer's counters by their ``stats()`` section (none: not a Transformer)."""
    if not isinstance(transformer, Transformer):
        return ()
    values = transformer.values
    return (("truncated", values.truncated), ("flattened", values.flattened),
            ("other", transformer.counts))


def take_counts(sections: tuple[tuple[str, Counter[str]], ...]) -> Stats:
    """``take_stats`` from ``counters_of``' counters, only the sections that counted: the
    per-event path (one event's counts, a key or two)."""
    taken: Stats = {}
    for name, counter in sections:
        if counter:
            taken[name] = dict(counter)
            counter.clear()
    return taken


def give_back(transformer: EventTransformer, stats: Stats) -> None:
    """``take_stats``' counts added back into ``transformer``'s."""
    for section, into in counters_of(transformer):
        into.update(stats.get(section, {}))


def add_stats(total: Stats, delta: Stats) -> None:
    """Add ``delta`` (``take_stats``') into ``total``."""
    for section, counts in delta.items():
        into = total.setdefault(section, {})
        for key, n in counts.items():
            into[key] = into.get(key, 0) + n


def sub_stats(total: Stats, delta: Stats) -> None:
    """Take ``delta`` (added before) back off ``total``: a count down to 0 goes, as if it
    had never been made (the report lists no property cut 0 times)."""
    for section, counts in delta.items():
        into = total.get(section)
        if into is None:
            continue
        for key, n in counts.items():
            left = into.get(key, 0) - n
            if left > 0:
                into[key] = left
            else:
                into.pop(key, None)


def transform_record(src: SourceRecord, graph: Resolver,
                     transformer: EventTransformer) -> Emitted | Rejected | Skipped | IdentityRecord:
    """The pure half of the chain, one record at a time: its outcome, or the event before
    deduplication and sessions (the stateful half, which needs the records in order).
    The event always has an ``insert_id``: Mixpanel's dedup key, see insert_id.py."""
    record = src.record
    if record is None:
        return Rejected(_rejection(src))
    props = record.get("properties")
    event = record.get("event")
    if not isinstance(props, dict):
        props = None  # the transformer rejects it with the reason
    elif isinstance(event, str) and event in IDENTITY_EVENTS:
        return IdentityRecord(event, src.source, src.line)  # as graph.observe() decided
    ids = graph.resolve(props) if props is not None else Resolved(None, None)
    return event_outcome(transformer.event(record, ids), record, src.source, src.line)


def event_outcome(out: dict[str, Any] | Rejection | Skip, record: Any, source: str,
                  line: int) -> Emitted | Rejected | Skipped | IdentityRecord:
    """What ``Transformer.event`` gave for the record at ``source``:``line``, as an outcome."""
    if isinstance(out, Rejection):
        # named where it is, as the reader's own rejections are: the message is read alone
        # (a log line, a dead letter shown by itself); the transformer knows no file
        where = f"{source} line {line}"
        message = out.message if out.message.startswith(where) else f"{where}: {out.message}"
        return Rejected(Rejection(out.reason, message, out.field, source, line,
                                  record if out.record is None else out.record))
    if isinstance(out, Skip):
        if out.rule == IDENTITY_RECORD:  # restored from a hot shard: fed the graph, not skipped
            return IdentityRecord(out.detail, source, line)
        return Skipped(out, source, line)
    return Emitted(out, source, line)


def _rejection(src: SourceRecord) -> Rejection:
    rej = src.rejection
    if rej is None:  # extract's contract says this cannot happen; never lose the record
        return Rejection("unreadable", "the reader gave no record and no reason",
                         source=src.source, line=src.line)
    if rej.source is None or rej.line is None:
        return rej.located(src.source, src.line)
    return rej


@dataclass(slots=True)
class TransformSummary:
    """What a transform run read and what became of it; ``check()`` enforces the sum."""

    records_read: int = 0
    events_out: int = 0
    identity_records: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # by rule
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    files: set[str] = field(default_factory=set)

    def reading(self, records: Iterable[SourceRecord]) -> Iterator[SourceRecord]:
        """Pass the records through, counting each one read."""
        for src in records:
            self.records_read += 1
            self.files.add(src.source)
            yield src

    def read(self, source: str) -> None:
        """Count one record read from ``source`` (for callers without an iterator)."""
        self.records_read += 1
        self.files.add(source)

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, Emitted):
            self.events_out += 1
        elif isinstance(outcome, Rejected):
            self.rejected[outcome.rejection.reason] += 1
        elif isinstance(outcome, Skipped):
            self.skipped[outcome.skip.rule] += 1
        elif isinstance(outcome, Duplicate):
            self.duplicates += 1
        else:
            self.identity_records += 1

    @property
    def accounted(self) -> int:
        return (self.events_out + self.identity_records + self.duplicates
                + sum(self.skipped.values()) + sum(self.rejected.values()))

    @property
    def balanced(self) -> bool:
        return self.records_read == self.accounted

    def check(self) -> None:
        """Raise InvariantViolation when the counts do not add up."""
        if not self.balanced:
            raise InvariantViolation(
                f"counts do not add up: read {self.records_read} records but accounted for "
                f"{self.accounted} (out {self.events_out} + identity {self.identity_records} "
                f"+ duplicates {self.duplicates} + skipped {sum(self.skipped.values())} "
                f"+ rejected {sum(self.rejected.values())}); the output is incomplete, "
                "do not load it")

    def as_dict(self) -> dict[str, Any]:
        return {
            "records_read": self.records_read,
            "events_out": self.events_out,
            "identity_records": self.identity_records,
            "duplicates": self.duplicates,
            "skipped": dict(sorted(self.skipped.items())),
            "rejected": dict(sorted(self.rejected.items())),
            "files": len(self.files),
            "balanced": self.balanced,
        }
