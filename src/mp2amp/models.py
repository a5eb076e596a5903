"""Small value types shared by the stages (extract -> identity -> transform -> load).

They live here, not in any one stage, so that stages depend on this module and not on
each other. All are immutable and cheap: they are created once per record on the hot path.
The two made for every record (``SourceRecord``, ``Emitted``) are immutable by convention
only: a frozen dataclass's ``__init__`` goes through ``object.__setattr__`` and costs
~1 us, three times a plain slotted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mp2amp.errors import Rejection

# A record's key (beside "event" and "properties", never sent) saying its time is UTC
# whatever the project: Data Pipelines always write UTC, so a legacy project's local-time
# conversion (``legacy_time``) must not shift their events (reference: timezones).
UTC_TIME_MARK = "mp2amp_time_is_utc"

JSONDict = dict[str, Any]


@dataclass(slots=True)
class SourceRecord:
    """One record read from a source, with where it came from.

    Exactly one of ``record`` and ``rejection`` is set: a line that could not be parsed
    still yields a SourceRecord, so that it is counted and dead-lettered, never lost.
    """

    source: str
    line: int
    record: JSONDict | None
    rejection: Rejection | None = None
    # The exact JSON text ``record`` was parsed from, where it is one (a whole line of a
    # JSONL source): staging stores it as is instead of serializing the record again.
    raw: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The Amplitude identity of one event after the identity stage."""

    user_id: str | None
    device_id: str | None
    # The cluster's user when ``retroactive`` is off withholds it from an anonymous event:
    # the privacy rules still exclude that user's events (not part of equality).
    owner: str | None = field(default=None, compare=False)


# the rule of a hot shard's renamed $identify / $create_alias / $merge once restored: the
# transform's event_outcome makes it an IdentityRecord (its detail is the event's name)
IDENTITY_RECORD = "identity_record"


@dataclass(frozen=True, slots=True)
class Skip:
    """A record deliberately not sent because a configured rule said so (counted by rule)."""

    rule: str
    detail: str = ""


# --- what the transform stream yields for every source record: exactly one of these ---


@dataclass(slots=True)
class Emitted:
    event: JSONDict
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class Rejected:
    rejection: Rejection


@dataclass(frozen=True, slots=True)
class Skipped:
    skip: Skip
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    insert_id: str
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """``$identify`` / ``$create_alias`` / ``$merge``: fed to the identity graph, not sent."""

    event: str
    source: str
    line: int


Outcome = Emitted | Rejected | Skipped | Duplicate | IdentityRecord
