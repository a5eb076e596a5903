"""The demo's per-event proof: every event a correct migration sends is in Amplitude once,
for the right person, at the right instant, under its name, with its properties and
their values.

Counts per (type, day) cannot see an event given to another person, an hour off on the
same day, stripped of its properties, or lost while another is stored twice. So each
exported event is matched, by its Amplitude ``insert_id``, with what the Mixpanel export
and the generator's ground truth say of it:

* who: ``truth/event_person.tsv.gz`` (the expected ``user_id`` and ``device_id`` by
  ``$insert_id``, or by ``@events/<file>:<line>`` for an event without one or whose
  ``$insert_id`` an earlier distinct event has; an empty device, a server-side event, is
  not compared); the rows the truth counts are the events expected in Amplitude, rows
  with neither user nor device are unusable records;
* the join key: the ``insert_id`` the migration derives from the record as Mixpanel stored
  it (``transform.insert_id``; a hot-shard record as restored);
* what: its name as ``event_type``, cut to 1024 characters as Amplitude takes it (a blank
  name, or one that is not valid text, is not compared);
* when: the record's ``time``, in a legacy project (``legacy_time``) project-local wall
  time turned into UTC (either instant of an hour the clocks repeat);
* properties: every custom property (not a ``$`` property, none the default-property
  mapping renames) is among Amplitude's ``event_properties``, and so is the readable name
  of every default property the mapping keeps on every platform (``mp_lib``,
  ``current_page_title`` as ``[Amplitude] Page Title``, ...: ``proof_fields.KEPT``, the
  names docs/mapping.md documents, not ``transform.mapping``'s); and no other name is
  there than those, the readable (or, when taken, Mixpanel) names of its other default
  properties and the page names of a ``$current_url``;
* values: every custom and kept default property whose value the transform sends as it
  is (text of at most 1024 characters, a number, a boolean, lists and objects of those)
  has that value in Amplitude (``$direct`` referrers as ``EMPTY``), compared through a
  128-bit BLAKE2b digest of them all, kind by kind (an integer and the same float are one
  JSON number; ``true``, ``1`` and ``"1"`` are three values; objects whatever their key
  order);
* fields: platform, OS, device model, brand and manufacturer, carrier, app version,
  country, region, city and DMA as the documented conversions make them from the record
  (``proof_fields.expected_fields``; an unlisted country code is not compared);
* sessions: each device's (else user's) expected events in time order, a new session
  after a gap over ``[transform] session_gap_minutes``, named by its first event's time;
* groups: with group analytics on a key (the demo's ``company_id``), an event is in the
  groups its keys name (a name: text stripped and cut to 1024 characters, or an integral
  number as its digits; a list: its distinct usable names in order), at most 10 names an
  event in key order as Amplitude tracks them, and in none where no value makes a name.
  Worked out here from those rules, not with the transform's code, which it checks;
* revenue: the top-level revenue fields ``[transform.revenue]`` makes of the record
  (``proof_revenue``: docs/mapping.md's rules stated again), as the export shows them
  (``$price``, ``$quantity``, ``$revenue``, ``$productId``, ``$revenueType``), and the
  total revenue of the expected events vs the export's, per UTC day. Not ``currency``:
  the export shows none.

Memory: one small tuple per expected event (~270 bytes; 55 MB for the demo's 200k), and
~150 bytes an event for the sessions, compared at the end.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast
from zoneinfo import ZoneInfo

from mp2amp.extract.files import iter_records
from mp2amp.pipeline.proof_fields import (
    ABSENT,
    CONSUMED,
    DEFAULT_GAP_MS,
    DIRECT_TO_EMPTY,
    FIELD_SOURCES,
    FIELDS,
    KEPT,
    LOCATION,
    READABLE,
    SKIP,
    allowed_names,
    canonical,
    compared,
    cut,
    expected_fields,
    exported_fields,
    sessions,
)
from mp2amp.pipeline.proof_revenue import (
    Fields,
    RevenueNames,
    RevenueTotals,
    amount,
    differences,
    expected_revenue,
    exported_amount,
    js_number,
    revenue_totals,
)
from mp2amp.transform.hotshard import restore_hotshard
from mp2amp.transform.insert_id import event_insert_id
from mp2amp.transform.timeconv import TimeError, to_epoch_ms
from mp2amp.transform.values import MAX_STRING

EXAMPLES = 5  # per kind of problem
MAX_EVENT_TYPE = 1024  # Amplitude cuts longer names (the transform does it first)
# the default properties: renamed or dropped by the mapping (proof_fields' own table,
# not transform.mapping's, which is what is checked)
_MAPPED = CONSUMED | frozenset(READABLE)
# property names the export adds from the top-level revenue fields
_EXPORT_ADDED = frozenset({"$price", "$quantity", "$revenue", "$productId", "$revenueType"})
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_SLOT_MS = 900_000  # zone offsets change on 15-minute boundaries
_MAX_SHAPES = 10_000
# Amplitude tracks "up to 5 unique group types and 10 total group values per event"
_MAX_GROUP_TYPES = 5
_MAX_GROUP_NAMES = 10
# what each kind of problem means, in the order they are reported
PROBLEMS = {
    "missing": "expected in Amplitude, not in its export",
    "unexpected": "in Amplitude's export, not expected (no such Mixpanel event, or a copy)",
    "duplicate": "in Amplitude's export more than once",
    "wrong_user": "attributed to another user_id than the ground truth's",
    "wrong_time": "at another instant than the Mixpanel event's",
    "wrong_type": "under another event_type than the Mixpanel event's name",
    "wrong_device": "on another device_id than the ground truth's (another Amplitude person)",
    "wrong_groups": "in other groups than the Mixpanel event's group keys name",
    "properties_lost": "without some of the Mixpanel event's properties",
    "wrong_properties": "with a property value other than the Mixpanel event's",
    "extra_properties": "with event properties the Mixpanel event does not make",
    "wrong_location": "with a country, region or city other than the Mixpanel event's",
    "wrong_device_fields": "with a platform, OS, device, carrier or app version other than "
                           "the Mixpanel event's",
    "wrong_session": "in another session than its device's events in time order make",
    "wrong_revenue": "with top-level revenue fields (price, quantity, revenue, productId, "
                     "revenueType) other than [transform.revenue] makes of the Mixpanel event",
}


Shape = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]  # custom names, (kept, as)
Person = tuple[str, str]  # the truth's user_id and device_id ("" for none)
Groups = tuple[tuple[str, ...], ...]  # the group names per configured key (none: no group)
_MISSING = object()
_T = TypeVar("_T")


class Expected(NamedTuple):
    event_type: str | None  # None: a blank name, or not valid text (not compared)
    user: str  # "" when Amplitude should have no user_id (an anonymous device)
    device: str  # "" when the truth names none (server-side): not compared
    utc_ms: int
    fold_ms: int  # the other reading of a repeated local hour (else utc_ms)
    properties: tuple[str, ...]
    valued: tuple[str, ...]  # the custom properties whose values are compared
    values: bytes  # _digest of their values, in ``valued`` order
    groups: Groups | None  # None: not compared
    fields: tuple[object, ...]  # proof_fields.FIELDS' expected values (SKIP: not compared)
    allowed: frozenset[str]  # the event property names the migration may give
    revenue: Fields | None  # proof_revenue.TOP_LEVEL's expected values (None: no revenue)


@dataclass(slots=True)
class EventCheck:
    """The outcome: how many events were expected and matched, problems by kind."""

    expected: int = 0
    matched: int = 0
    unchecked: int = 0  # truth events whose Mixpanel time cannot be read (no join key)
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unchecked

    def lines(self) -> list[str]:
        """One line per kind of problem: its count and what it means."""
        return [f"{self.problems[kind]:,} event(s) {meaning}" for kind, meaning in
                PROBLEMS.items() if self.problems[kind]]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "expected": self.expected, "matched": self.matched,
                "unchecked": self.unchecked,
                "problems": {kind: self.problems[kind] for kind in PROBLEMS},
                "examples": self.examples}


class EventProof:
    """Built from the Mixpanel export and the truth (``read_project``); ``see`` takes each
    exported event; ``finish`` gives the ``EventCheck``."""

    def __init__(self, group_keys: tuple[str, ...] = (),
                 gap_ms: int = DEFAULT_GAP_MS, revenue: RevenueNames | None = None) -> None:
        self.group_keys = group_keys  # transform.groups: the keys that make groups
        self.revenue_names = revenue or RevenueNames()  # [transform.revenue]
        # revenue amounts per UTC day: of the expected events, of the exported ones
        self._amounts_expected: defaultdict[str, list[float]] = defaultdict(list)
        self._amounts_exported: defaultdict[str, list[float]] = defaultdict(list)
        self._expected: dict[str, Expected | None] = {}  # None: seen in the export
        self._shown: Counter[str] = Counter()
        self.check = EventCheck()
        self.unreadable = 0  # records of the export with no event (cut lines)
        self.gap_ms = gap_ms  # [transform] session_gap_minutes
        # (device or user, time, insert_id) of every expected event, and the session_id
        # Amplitude gave each: compared in ``finish``, once every time is known
        self._timeline: list[tuple[str, int, str]] = []
        self._session_got: dict[str, object] = {}

    def read_project(self, project: Path, legacy_zone: ZoneInfo | None) -> Counter[str]:
        """Learn every expected event; returns the records per raw event name (every
        readable record, as the export has it)."""
        persons = _persons(project / "truth" / "event_person.tsv.gz")
        raw: Counter[str] = Counter()
        to_utc = _LocalTime(legacy_zone) if legacy_zone is not None else None
        shared = _Shared()
        for rec in iter_records([str(project / "events")]):
            record = rec.record
            if type(record) is not dict:  # a cut line (or not an object): no event to name
                self.unreadable += 1
                continue
            raw[str(record.get("event"))] += 1
            restored = restore_hotshard(record)
            if type(restored) is dict and type(restored.get("properties")) is dict:
                fallback = f"@events/{Path(rec.source).name}:{rec.line}"
                self._expect(restored, fallback, persons, to_utc, shared)
        self.check.expected = len(self._expected)
        return raw

    def _expect(self, record: dict[str, Any], fallback_key: str, persons: dict[str, Person],
                to_utc: _LocalTime | None, shared: _Shared) -> None:
        """Remember one (restored) record when the truth counts it (``persons`` loses its
        key, so an exact copy later in the export is not expected twice)."""
        name, props = record.get("event"), record["properties"]
        given = props.get("$insert_id")
        person = persons.pop(given, None) if type(given) is str and given else None
        if person is None:  # no $insert_id, or one an earlier distinct event has: its line
            person = persons.pop(fallback_key, None)
        if person is None or type(name) is not str:
            return  # not counted by the truth: unusable, identity or a copy's twin
        try:
            raw_ms = to_epoch_ms(props.get("time"))
        except TimeError:
            self.check.unchecked += 1
            return
        utc_ms, fold_ms = to_utc(raw_ms) if to_utc is not None else (raw_ms, raw_ms)
        names, valued, values = shared.properties(props)
        revenue = expected_revenue(props, name, self.revenue_names)
        booked = amount(revenue)
        if booked is not None:
            self._amounts_expected[_utc_text(utc_ms)[:10]].append(booked)
        self._expected[event_insert_id(name, props, raw_ms)] = Expected(
            shared.event_type(name), person[0], person[1], utc_ms, fold_ms, names, valued,
            _digest(values, valued), shared.groups(props, self.group_keys),
            shared.fields(props), shared.allowed(props), revenue)

    def see(self, event: dict[str, Any]) -> None:
        """Match one exported event (identify events are not given)."""
        booked = exported_amount(event)
        if booked is not None:  # every exported event's revenue counts in the export total
            self._amounts_exported[str(event.get("event_time", ""))[:10]].append(booked)
        insert_id = event.get("$insert_id")
        want = self._expected.get(insert_id) if type(insert_id) is str else None
        if want is None or type(insert_id) is not str:
            kind = "duplicate" if insert_id in self._expected else "unexpected"
            self._problem(kind, f"{insert_id!r} ({event.get('event_type')!r} at "
                                f"{event.get('event_time')})")
            return
        self._expected[insert_id] = None
        self.check.matched += 1
        where = f"{insert_id!r} ({want.event_type or event.get('event_type')!r})"
        user = event.get("user_id") or ""
        if user != want.user:
            self._problem("wrong_user", f"{where}: user_id {user!r}, expected {want.user!r}")
        when = _export_ms(event.get("event_time"))
        if when not in (want.utc_ms, want.fold_ms):
            self._problem("wrong_time", f"{where}: event_time {event.get('event_time')}, "
                                        f"expected {_utc_text(want.utc_ms)}")
            when = want.utc_ms  # its session is the one the right time makes
        assert when is not None
        self._timeline.append((_who(want), when, insert_id))
        if "session_id" in event:  # always in an export row (-1 for none)
            self._session_got[insert_id] = event["session_id"]
        self._see_fields(event, want, where)
        if want.event_type is not None and event.get("event_type") != want.event_type:
            self._problem("wrong_type", f"{where}: event_type {event.get('event_type')!r}")
        device = event.get("device_id") or ""
        if want.device and device != want.device:
            self._problem("wrong_device", f"{where}: device_id {device!r}, expected "
                                          f"{want.device!r}")
        props = event.get("event_properties")
        if not isinstance(props, dict):
            props = {}
        lost = [k for k in want.properties if k not in props]
        if lost:
            self._problem("properties_lost", f"{where}: no {', '.join(lost[:5])}"
                                             + (" ..." if len(lost) > 5 else ""))
        elif _digest(props, want.valued) != want.values:  # a lost one is said above
            shown = ", ".join(f"{k}={props[k]!r}"[:60] for k in want.valued[:5])
            self._problem("wrong_properties", f"{where}: Amplitude has {shown}"
                                              + (" ..." if len(want.valued) > 5 else ""))
        extra = [k for k in props if k not in want.allowed and k not in _EXPORT_ADDED]
        if extra:
            self._problem("extra_properties", f"{where}: {', '.join(map(repr, extra[:5]))}"
                                              + (" ..." if len(extra) > 5 else ""))
        wrong = differences(event, want.revenue)
        if wrong:
            self._problem("wrong_revenue", f"{where}: {', '.join(wrong[:3])}"
                                           + (" ..." if len(wrong) > 3 else ""))
        got = _exported_groups(event, self.group_keys) if want.groups is not None else None
        if got != want.groups:
            self._problem("wrong_groups", f"{where}: groups {self._named(got)}, expected "
                                          f"{self._named(want.groups)}")

    def _named(self, groups: Groups | None) -> str:
        """Group names by key, for an example (cut: a name may be 1024 characters)."""
        return repr({k: list(names) for k, names in zip(self.group_keys, groups or (),
                                                         strict=False)})[:120]

    def _see_fields(self, event: dict[str, Any], want: Expected, where: str) -> None:
        """The top-level location and device fields against the expected ones."""
        got = exported_fields(event)
        if got == want.fields:
            return
        location: list[str] = []
        device: list[str] = []
        for name, have, expect in zip(FIELDS, got, want.fields, strict=True):
            # an export row has every field (null when unset): one without is not compared
            if expect is not SKIP and have != expect and have is not ABSENT:
                (location if name in LOCATION else device).append(
                    f"{name} {have!r} (expected {expect!r})"[:80])
        if location:
            self._problem("wrong_location", f"{where}: {', '.join(location)}")
        if device:
            self._problem("wrong_device_fields", f"{where}: {', '.join(device[:4])}"
                                                 + (" ..." if len(device) > 4 else ""))

    def finish(self) -> EventCheck:
        """The check, with every expected event the export did not have as missing, and
        the sessions every expected event's device (or user) makes."""
        for insert_id, want in self._expected.items():
            if want is not None:
                self._problem("missing", f"{insert_id!r} ({want.event_type!r} at "
                                         f"{_utc_text(want.utc_ms)}, user {want.user!r})")
                self._timeline.append((_who(want), want.utc_ms, insert_id))
        got = self._session_got
        for insert_id, session in sessions(self._timeline, self.gap_ms).items():
            have = got.get(insert_id, session)  # a missing one is said above
            if have != session:
                self._problem("wrong_session", f"{insert_id!r}: session_id {have!r}, "
                                               f"expected {session} ({_utc_text(session)})")
        self._timeline, self._session_got = [], {}
        return self.check

    def revenue_totals(self, segmentation: dict[str, float] | None = None,
                       note: str = "") -> RevenueTotals:
        """Total revenue of the expected events vs the export's (and segmentation's
        daily ``revenue_amount``, None: not answered, ``note`` says why), per UTC day."""
        return revenue_totals(self._amounts_expected, self._amounts_exported, segmentation,
                              note)

    def _problem(self, kind: str, example: str) -> None:
        self.check.problems[kind] += 1
        if self._shown[kind] < EXAMPLES:
            self._shown[kind] += 1
            self.check.examples.append(f"{kind}: {example}")


def _persons(path: Path) -> dict[str, Person]:
    """Truth key -> expected (user_id, device_id), for the events the truth counts (a row
    without user and device is an unusable record, not expected in Amplitude)."""
    pairs: dict[Person, Person] = {}
    out: dict[str, Person] = {}
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as rows:
        for row in rows:
            key, user, device = row.rstrip("\n").split("\t")
            if user or device:
                pair = (user, device)
                out[key] = pairs.setdefault(pair, pair)  # one tuple per (user, device)
    return out


def _who(want: Expected) -> str:
    """Whose sessions an event is in: its device's, else its user's."""
    return f"d:{want.device}" if want.device else f"u:{want.user}"


def _digest(props: dict[str, Any], names: tuple[str, ...]) -> bytes:
    """A 128-bit digest of the values of ``names`` (a missing one counts as a value of its
    own). A real digest, not ``hash()``: hash(-1) == hash(-2), and any 64-bit hash has
    collisions a wrong value could hide behind."""
    parts = ["m" if (v := props.get(k, _MISSING)) is _MISSING else canonical(v)
             for k in names]
    data = "".join(parts).encode("utf-8", "surrogatepass")  # exports hold lone surrogates
    return hashlib.blake2b(data, digest_size=16).digest()


class _Shared:
    """What many events share, kept once: event types and property name lists (~100
    bytes an event saved; bounded)."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[Any, ...], Shape] = {}
        self._names: dict[object, object] = {}
        self._types: dict[str, str | None] = {}
        self._groups: dict[Groups, Groups] = {}
        self._fields: dict[tuple[Any, ...], tuple[object, ...]] = {}
        self._allowed: dict[tuple[Any, ...], frozenset[str]] = {}

    def groups(self, props: dict[str, Any], keys: tuple[str, ...]) -> Groups | None:
        """The group names per key (None: not compared: no key, or more keys than
        Amplitude tracks group types on an event)."""
        if not keys or len(keys) > _MAX_GROUP_TYPES:
            return None
        names = _expected_groups(props, keys)
        if len(self._groups) < _MAX_SHAPES:
            names = self._groups.setdefault(names, names)
        return names

    def event_type(self, name: str) -> str | None:
        if name in self._types:
            return self._types[name]
        event_type = _event_type(name)
        if len(self._types) < _MAX_SHAPES:
            self._types[name] = event_type
        return event_type

    def properties(self, props: dict[str, Any]
                   ) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]:
        """The event properties Amplitude must have: the custom ones under their own name,
        the default ones every platform keeps under their readable name (unless an event
        property has that name); those whose values are compared; and the expected values
        by Amplitude name."""
        shape = tuple(props)
        known = self._shapes.get(shape)
        if known is None:
            known = (tuple(k for k in shape if type(k) is str and not k.startswith("$")
                           and k not in _MAPPED),
                     tuple((k, KEPT[k]) for k in shape if k in KEPT and KEPT[k] not in props))
            if len(self._shapes) < _MAX_SHAPES:
                self._shapes[shape] = known
        custom, kept = known
        values = {k: cut(props[k]) for k in custom}
        names = custom
        if kept:
            for k, name in kept:
                value = props[k]
                values[name] = "EMPTY" if value == "$direct" and k in DIRECT_TO_EMPTY else cut(value)
            names = self.once(custom + tuple(name for _, name in kept))
        valued = names
        if not all(compared(values[k]) for k in names):
            valued = self.once(tuple(k for k in names if compared(values[k])))
        return names, valued, values

    def fields(self, props: dict[str, Any]) -> tuple[object, ...]:
        """``expected_fields``, worked out once per set of the values it reads."""
        try:
            values = tuple(props.get(k, _MISSING) for k in FIELD_SOURCES)
            key = (values, tuple(map(type, values)))  # True == 1, but not as text
            known = self._fields.get(key)
        except TypeError:  # a list or object where text was expected
            return expected_fields(props)
        if known is None:
            known = expected_fields(props)
            if len(self._fields) < _MAX_SHAPES:
                self._fields[key] = known
        return known

    def allowed(self, props: dict[str, Any]) -> frozenset[str]:
        """``allowed_names``, worked out once per list of property names."""
        shape = tuple(props)
        known = self._allowed.get(shape)
        if known is None:
            known = allowed_names(props)
            if len(self._allowed) < _MAX_SHAPES:
                self._allowed[shape] = known
        return known

    def once(self, value: _T) -> _T:
        """One object for equal name lists and field values (bounded)."""
        if len(self._names) < _MAX_SHAPES:
            return cast(_T, self._names.setdefault(value, value))
        return value


def _event_type(name: str) -> str | None:
    """The event_type Amplitude holds for a name (None: a name not compared)."""
    if not name.strip() or not _is_text(name):
        return None
    return name[:MAX_EVENT_TYPE]


def _is_text(value: str) -> bool:
    """Valid Unicode text (no lone surrogate: the transform rejects such an event)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _expected_groups(props: dict[str, Any], keys: tuple[str, ...]) -> Groups:
    """The names each key's value gives (a list: its distinct usable names, in order), up
    to 10 names an event in key order: Amplitude does not track the ones past that."""
    out: list[tuple[str, ...]] = []
    left = _MAX_GROUP_NAMES
    for key in keys:
        value = props.get(key)
        found = [_group_name(v) for v in value] if type(value) is list else \
            [_group_name(value)]
        names = tuple(dict.fromkeys(n for n in found if n is not None))[:left]
        left -= len(names)
        out.append(names)
    return tuple(out)


def _group_name(value: object) -> str | None:
    """The group a scalar value names, as the reference says Amplitude takes one."""
    if type(value) is str:
        name = value.strip()
        return name[:MAX_STRING] if name else None
    if type(value) is int:
        return str(value)
    if type(value) is float and value.is_integer():  # (not NaN nor infinite)
        return js_number(value)  # as JavaScript writes it: 1e21 is "1e+21"
    return None


def _exported_groups(event: dict[str, Any], keys: tuple[str, ...]) -> Groups:
    """The group names per key in an exported event (``groups`` lists each key's names;
    anything but a name shows as its repr in <>, which no expected name equals)."""
    groups = event.get("groups")
    if not isinstance(groups, dict):
        groups = {}
    out: list[tuple[str, ...]] = []
    for key in keys:
        names = groups.get(key)
        if names is None:
            names = []
        elif not isinstance(names, list):
            names = [names]
        out.append(tuple(n if type(n) is str else f"<{n!r}>" for n in names))
    return tuple(out)


class _LocalTime:
    """A legacy project's local wall-clock ms -> the UTC instants it can be (two in the
    hour the clocks go back), with the offsets looked up once per 15-minute slot."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._offsets: dict[int, tuple[int, int]] = {}

    def __call__(self, local_ms: int) -> tuple[int, int]:
        slot = local_ms // _SLOT_MS
        offsets = self._offsets.get(slot)
        if offsets is None:
            wall = _EPOCH + timedelta(milliseconds=slot * _SLOT_MS)
            offsets = self._offsets[slot] = (self._offset(wall, 0), self._offset(wall, 1))
        return local_ms - offsets[0], local_ms - offsets[1]

    def _offset(self, wall: datetime, fold: int) -> int:
        delta = wall.replace(tzinfo=self.zone, fold=fold).utcoffset() or timedelta(0)
        return delta // _MS


def _export_ms(value: object) -> int | None:
    """Epoch ms of an export time (``2024-03-01 22:09:55.274000``, UTC)."""
    if not isinstance(value, str):
        return None
    try:
        return (datetime.fromisoformat(value).replace(tzinfo=None) - _EPOCH) // _MS
    except ValueError:
        return None


def _utc_text(ms: int) -> str:
    return (_EPOCH + ms * _MS).isoformat(sep=" ", timespec="milliseconds")
