"""Privacy rules applied to every event before it leaves: what Amplitude must never receive.

Amplitude's data is immutable (deletion only through its User Privacy API), so whatever
must not be there is removed here, before upload:

* ``keep_ip``: whether the client IP is sent (the mapping core reads it through
  ``TransformSettings.keep_ip``); when not, ``scrub`` drops ``ip``/``$ip`` too, so a
  plan renaming them cannot send the address as an ordinary property;
* ``drop_properties``: removed from the event, at any depth (a key inside an object or
  a list of objects too);
* ``hash_properties``: replaced by ``sha256(salt + value)`` in hex, so values still join
  and count but cannot be read back (the salt defeats dictionary look-ups of e-mails), at
  any depth too; a list is hashed value by value (its shape kept), so ``"c_1"`` and
  ``["c_1"]`` give the same hash, and so does the text ``'["c_1"]'`` of a property the
  plan types ``list`` (``reading_lists``: read as the plan reads it); an object is hashed whole (its dropped keys removed
  first), keys included: they can be as personal as the values (``{"a@b.c": "admin"}``);
  a number or a string is hashed as the group name it would make (``42.0`` as ``42``, as
  ``"42"``; ``" acme "`` as ``"acme"``), and a blank string stays blank (no group); a value
  JSON cannot carry (NaN, Infinity, a lone surrogate), at any depth, rejects the event
  (``non_json_value``) as it does unhashed: its hash would pass it off as another value;
* an excluded-users file (opt-outs, GDPR deletions): every event whose ``distinct_id``,
  resolved ``user_id`` or ``device_id`` is listed is skipped (``privacy.excluded_user``),
  before anything could reject it (its record would land in the dead letters). IDs match
  with surrounding blanks ignored; a listed ``$device:X`` lists the device ``X`` too; and
  once the identity stage is done (``with_merged_users``) a listed ID's resolved user is
  excluded too: every event of the merged user, whichever of its IDs it carries;
* ``drop_before``: events before this UTC date are skipped (``privacy.before_retention``),
  as soon as the time is known (before a missing name could reject them).
  The date comes from the config, never from the clock, so a re-run decides the same way.

Property names are the *source* (Mixpanel) names, so the core applies these rules to the
raw properties, before the tracking plan renames anything. ``apply`` is pure.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mp2amp.errors import ConfigError
from mp2amp.models import Resolved, Skip
from mp2amp.transform.hotshard import ORIGINAL_DISTINCT_ID
from mp2amp.transform.plan import PlanTypeMismatch, coerce_value
from mp2amp.transform.values import ValueProblem, js_number_text

if TYPE_CHECKING:
    from mp2amp.transform.plan import PropertyRule, TrackingPlan

SKIP_EXCLUDED_USER = "privacy.excluded_user"
SKIP_BEFORE_RETENTION = "privacy.before_retention"

# Amplitude takes objects 40 levels deep (deeper ones are sent as their JSON text); past
# this depth the privacy pass rejects the event rather than let a listed key through.
_MAX_DEPTH = 64

# Where an excluded ID may sit in the raw properties besides the resolved IDs (the
# hot-shard original too: the exclusion is checked before the record is restored).
_RAW_ID_KEYS = ("distinct_id", "$user_id", "$device_id", ORIGINAL_DISTINCT_ID)
_DEVICE_PREFIX = "$device:"  # (identity.junk.DEVICE_PREFIX: Mixpanel's anonymous IDs)
_INF = float("inf")
_IP_KEYS = ("ip", "$ip")  # the client IP's Mixpanel names (the mapping's ip field)

log = logging.getLogger(__name__)


class PrivacyRules:
    """Privacy rules of one run; ``PrivacyRules.none()`` keeps everything (and the IP)."""

    __slots__ = ("_drop", "_event_lists", "_excluded", "_hash", "_lists", "_salt",
                 "drop_before", "drop_before_ms", "excluded_users", "keep_ip")

    def __init__(
        self,
        *,
        keep_ip: bool = True,
        drop_properties: Iterable[str] = (),
        hash_properties: Iterable[str] = (),
        salt: str | None = None,
        excluded_users: Iterable[str] = (),
        drop_before: date | None = None,
    ) -> None:
        self.keep_ip = keep_ip
        self._drop = frozenset(drop_properties)
        self._hash = frozenset(hash_properties) - self._drop
        if self._hash and not salt:
            raise ConfigError(["privacy.hash_salt: hashing properties needs a salt (set "
                               "privacy.hash_salt or the MP2AMP_HASH_SALT environment "
                               "variable); unsalted hashes of e-mails are reversible"])
        self._salt = (salt or "").encode()
        self.excluded_users = frozenset(i.strip() for i in excluded_users) - {""}
        self._excluded = _matched_ids(self.excluded_users)  # + devices, merged users
        # hashed keys a tracking plan reads as lists (``reading_lists``): unplanned events,
        # then by planned event name
        self._lists: frozenset[str] = frozenset()
        self._event_lists: dict[str, frozenset[str]] = {}
        self.drop_before = drop_before
        self.drop_before_ms = (
            int(datetime(drop_before.year, drop_before.month, drop_before.day,
                         tzinfo=UTC).timestamp() * 1000)
            if drop_before is not None else None
        )

    @classmethod
    def none(cls) -> PrivacyRules:
        return cls()

    @property
    def drop_properties(self) -> frozenset[str]:
        return self._drop

    @property
    def hash_properties(self) -> frozenset[str]:
        return self._hash

    @property
    def changes_events(self) -> bool:
        """Whether these rules can skip or change any event (the IP aside): the
        transformer calls ``apply`` per event only when they can."""
        return (self.drop_before_ms is not None or bool(self.excluded_users)
                or bool(self._drop) or bool(self._hash))

    @property
    def object_scrubber(self) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """The drop/hash pass for an object made later from text (a plan's ``type:
        object``): the rules first saw only the text. None when there are no lists."""
        if not (self._drop or self._hash):
            return None
        return self._scrub_object

    def _scrub_object(self, value: dict[str, Any]) -> dict[str, Any]:
        try:
            scrubbed: dict[str, Any] = self._scrubbed(value, 1)
        except _Unhashable as problem:  # (parsed text has no NaN: unreachable in practice)
            raise problem.at("properties.(an object made of text)") from None
        return scrubbed

    def __repr__(self) -> str:  # the salt is a secret: never shown
        return (f"PrivacyRules(keep_ip={self.keep_ip}, drop_properties={sorted(self._drop)}, "
                f"hash_properties={sorted(self._hash)}, salt={'***' if self._salt else None}, "
                f"excluded_users={len(self.excluded_users)}, drop_before={self.drop_before})")

    def with_merged_users(self, resolve: Callable[[dict[str, Any]], Resolved],
                          shared_device: Callable[[str], bool] | None = None) -> PrivacyRules:
        """These rules with each listed ID's resolved user listed too (``resolve``: the
        finished identity graph's): an alias or a device merged into a user excludes every
        event of that user, not only those that carry the listed ID. A device is looked up
        as a ``distinct_id`` and as a ``device_id``. A device several users shared
        (``shared_device``: the graph's answer; None: not known) excludes only its own
        events: its first user is another person than the one who asked."""
        merged = set(self._excluded)
        shared: list[str] = []
        for listed in sorted(self.excluded_users):
            device, probes = _probes(listed)
            if shared_device is not None and shared_device(device):
                shared.append(device)  # every probe of it would resolve to its first user
                continue
            for probe in probes:
                ids = resolve(probe)
                merged.update(u for u in (ids.user_id, ids.owner) if u is not None)
        if shared:
            log.warning("%d listed device(s) were used by several users (e.g. %s): only their "
                        "own events are excluded, not the other users' events elsewhere; list "
                        "those users' IDs too to exclude them", len(set(shared)),
                        ", ".join(sorted(set(shared))[:3]))
        if len(merged) == len(self._excluded):
            return self
        rules = copy.copy(self)
        rules._excluded = frozenset(merged)
        return rules

    def is_excluded(self, props: dict[str, Any], ids: Resolved) -> bool:
        """Whether the event's resolved or raw IDs name an excluded user (blanks around
        an ID ignored: Mixpanel keeps an ID as sent, the file's lines are trimmed)."""
        excluded = self._excluded
        if not excluded:
            return False
        for value in (ids.user_id, ids.device_id, ids.owner):  # owner: retroactive off
            if value is not None and (value in excluded or value.strip() in excluded):
                return True
        for key in _RAW_ID_KEYS:
            value = props.get(key)
            if value is not None and str(value).strip() in excluded:
                return True
        return False

    def skipped(self, event_name: Any, props: Any, ids: Resolved) -> Skip | None:
        """The excluded-user skip of a record not yet checked for anything else (no time,
        no name, a broken hot-shard rewrite): such a record is no one's to keep."""
        raw = props if type(props) is dict else {}
        if self.is_excluded(raw, ids):
            return Skip(SKIP_EXCLUDED_USER,
                        f"event {event_name!r} belongs to a user in the excluded-users file")
        return None

    def before_retention(self, event_name: Any, time_ms: int) -> Skip | None:
        """The retention skip, for an event whose time is known."""
        if self.drop_before_ms is not None and time_ms < self.drop_before_ms:
            return Skip(SKIP_BEFORE_RETENTION,
                        f"event {event_name!r} is before the retention date {self.drop_before}")
        return None

    def hash_value(self, value: Any) -> str:
        """Salted SHA-256 (hex) of a value as the group name it would make: a string
        stripped, a float as JavaScript writes it (``42``, ``42.0``, ``"42"`` and ``" 42"``
        hash alike, so do ``1e21`` and ``"1e+21"``), an integer with every digit; other
        values as their canonical JSON (``True`` stays ``"true"``).
        Raises ``ValueProblem`` (``non_json_value``) for NaN, Infinity or a lone surrogate
        anywhere in it: orjson would write ``null`` for the first and nothing for the last."""
        try:
            return self._digest(value)
        except _Unhashable as problem:
            raise problem.at("value") from None

    def _digest(self, value: Any) -> str:
        """``hash_value``, raising ``_Unhashable`` (its field named on the way out)."""
        if isinstance(value, str):
            raw = _utf8(value.strip())
        elif type(value) is float:
            if value != value or value in (_INF, -_INF):
                raise _Unhashable(f"holds {value!r}, not a JSON number")
            # as the group name it makes, as the plan's type: string writes it: JavaScript's
            # spelling, so 42.0 hashes as 42 and 1e21 as "1e+21"
            raw = js_number_text(value).encode()
        else:
            _check_hashable(value)
            try:
                raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
            except TypeError:  # integers past 64 bits: the stdlib writes them the same way
                raw = json.dumps(value, sort_keys=True, separators=(",", ":"),
                                 ensure_ascii=False, default=str).encode()
        return hashlib.sha256(self._salt + raw).hexdigest()

    def apply(self, event_name: str, props: dict[str, Any], ids: Resolved,
              time_ms: int) -> dict[str, Any] | Skip:
        """Every rule: the retention and excluded-user skips, then ``scrub``."""
        skip = self.before_retention(event_name, time_ms) or self.skipped(event_name, props, ids)
        return skip if skip is not None else self.scrub(props, event_name)

    def reading_lists(self, plan: TrackingPlan) -> PrivacyRules:
        """These rules with the hashed keys ``plan`` types ``list`` (converting) read as the
        plan reads them before hashing: ``'["a","b"]'`` hashes as ``["a","b"]`` does, value
        by value, not as one text (the plan would get one hash where the list has two)."""
        def lists(rules: Mapping[str, PropertyRule]) -> frozenset[str]:
            return frozenset(k for k in self._hash if (r := rules.get(k)) is not None
                             and r.type == "list" and r.on_mismatch == "coerce")

        unplanned = lists(plan.properties)
        # the hashed keys looked up, own rule first: no merged copy of the global ones
        by_event = {name: lists(plan.property_rules(name)) for name in plan.events}
        if not unplanned and not any(by_event.values()):
            return self
        rules = copy.copy(self)
        rules._lists, rules._event_lists = unplanned, by_event
        return rules

    def scrub(self, props: dict[str, Any], event_name: str | None = None) -> dict[str, Any]:
        """``props`` with the listed keys dropped or hashed at any depth, and the client IP
        dropped unless kept: a plan renaming it would send it as an ordinary property (the
        same object when nothing changes). ``event_name``: the plan's lists it reads."""
        if not self.keep_ip and ("ip" in props or "$ip" in props):
            props = {k: v for k, v in props.items() if k not in _IP_KEYS}
        drop, hashed = self._drop, self._hash
        if not (drop or hashed):
            return props
        if self._lists or self._event_lists:
            props = self._lists_read(props, event_name)
        if drop.isdisjoint(props) and hashed.isdisjoint(props) and not any(
                type(v) is dict or type(v) is list for v in props.values()):
            return props  # the common case: nothing to change, no copy
        try:
            scrubbed: dict[str, Any] = self._scrubbed(props, 0)
        except _Unhashable as problem:
            raise problem.at("properties") from None
        return scrubbed

    def _lists_read(self, props: dict[str, Any], event_name: str | None) -> dict[str, Any]:
        """``props`` with the text of each hashed key the plan types ``list`` read as the
        plan reads it (``coerce_value``); text the plan would reject stays text."""
        keys = self._event_lists.get(event_name, self._lists) if event_name is not None \
            else self._lists
        out = props
        for key in keys:
            value = props.get(key)
            if type(value) is str:
                try:
                    parsed = coerce_value(value, "list", convert=True)
                except PlanTypeMismatch:
                    continue
                if out is props:
                    out = dict(props)
                out[key] = parsed
        return out

    def _scrubbed(self, value: Any, depth: int) -> Any:
        """``value`` (an object or a list) with the listed keys dropped or hashed at any
        depth: ``{"customer": {"email": ...}}`` and lists of such objects too."""
        if depth > _MAX_DEPTH:  # a listed key could hide down there, past what is checked
            raise _too_deep()
        key: Any = None  # where a hashed value JSON cannot carry is, for its rejection
        try:
            if type(value) is list:
                items: list[Any] = []
                for key in range(len(value)):
                    item = value[key]
                    items.append(self._scrubbed(item, depth + 1)
                                 if type(item) is dict or type(item) is list else item)
                return items
            drop, hashed = self._drop, self._hash
            out: dict[str, Any] = {}
            for key, item in value.items():
                if key in drop:
                    continue
                if key in hashed:
                    out[key] = self._hashed(item, depth + 1)
                elif type(item) is dict or type(item) is list:
                    out[key] = self._scrubbed(item, depth + 1)
                else:
                    out[key] = item
            return out
        except _Unhashable as problem:
            raise problem.inside(key) from None

    def _hashed(self, value: Any, depth: int) -> Any:
        """``value`` hashed: a list element by element, its shape kept, so ``"c_1"`` and
        ``["c_1"]`` hold the same hash and join and count however they were sent (a list
        as a whole would hash to a name no single value has); an object whole, as nothing
        of it (keys included) may go out in clear, after its dropped keys go, so a dropped
        value does not change its hash. ``None`` stays: absence is no value; so does a
        blank string, as it makes no group (``groups.group_name``)."""
        if depth > _MAX_DEPTH:  # a value down there would go out in clear
            raise _too_deep()
        if type(value) is list:
            return [self._hashed(v, depth + 1) for v in value]
        if type(value) is dict:
            return self._digest(self._without_dropped(value, depth))
        if type(value) is str and not value.strip():
            return ""
        return None if value is None else self._digest(value)

    def _without_dropped(self, value: Any, depth: int) -> Any:
        """``value`` with the dropped keys removed at any depth (what a hashed object is
        hashed as)."""
        if depth > _MAX_DEPTH:
            raise _too_deep()
        if type(value) is list:
            return [self._without_dropped(v, depth + 1) for v in value]
        if type(value) is dict:
            return {k: self._without_dropped(v, depth + 1) for k, v in value.items()
                    if k not in self._drop}
        return value


class _Unhashable(Exception):  # (a ValueProblem once its field is known)
    """A hashed value JSON cannot carry. Rejected as it is unhashed (``values``): its hash
    would stand for another value (NaN and ``None`` both as ``null``). The field is named
    on the way out of the property walk (``inside``, ``at``)."""

    def __init__(self, what: str, path: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.field = path

    def inside(self, key: object) -> _Unhashable:
        """The problem one level up: ``key`` (a name or a list index) prefixed to its path."""
        return _Unhashable(self.what, (f"[{key}]" if type(key) is int else f".{key}")
                           + self.field)

    def at(self, root: str) -> ValueProblem:
        field = root + self.field
        return ValueProblem(field, f"{field} is hashed and {self.what}: the event is rejected "
                            "as it would be unhashed; fix the value in the source")


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise _Unhashable("holds invalid text (a lone surrogate)") from None


def _check_hashable(value: Any) -> None:
    """Raise ``_Unhashable`` for NaN, Infinity or a lone surrogate (a key too) anywhere in
    ``value``: orjson writes the first as ``null``, the stdlib the last as no UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, sub in item.items():
                if type(key) is str and not key.isascii():
                    _utf8(key)
                stack.append(sub)
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is str:
            if not item.isascii():
                _utf8(item)
        elif type(item) is float and (item != item or item in (_INF, -_INF)):
            raise _Unhashable(f"holds {item!r}, not a JSON number")


def _too_deep() -> ValueProblem:
    return ValueProblem("properties", f"a property is nested more than {_MAX_DEPTH} levels "
                        "deep, past what the privacy rules check; the event is rejected: "
                        "flatten it in the source", reason="too_deep")


def _probes(listed: str) -> tuple[str, list[dict[str, Any]]]:
    """The device one listed ID may name and its lookups in the identity graph: as a
    ``distinct_id`` (``$device:X`` names the device ``X``; a plain ID may be a device's own
    node, as a mixpanel-js cookie ID is in Original ID Merge) and, as README matches IDs
    against ``device_id`` too, a plain ID as a ``$device_id``."""
    if listed.startswith(_DEVICE_PREFIX):
        return listed[len(_DEVICE_PREFIX):], [{"distinct_id": listed}]
    return listed, [{"distinct_id": listed}, {"$device_id": listed}]


def _matched_ids(listed: frozenset[str]) -> frozenset[str]:
    """The IDs an event is matched against: each ``$device:X`` with its device ``X`` too
    (the device's identified events carry ``X`` as their ``$device_id``)."""
    devices = {i[len(_DEVICE_PREFIX):] for i in listed if i.startswith(_DEVICE_PREFIX)}
    return listed | (devices - {""})


def load_excluded_users(path: str | Path) -> frozenset[str]:
    """One ID per line; blank lines and ``#`` comments ignored; surrounding spaces trimmed."""
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8", Notepad) is not part of the
        # first ID, which would otherwise not be excluded
        with open(path, encoding="utf-8-sig") as handle:
            return frozenset(
                stripped for line in handle
                if (stripped := line.strip()) and not stripped.startswith("#")
            )
    except OSError as exc:
        raise ConfigError([f"privacy.exclude_users: cannot read {path}: "
                           f"{exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"privacy.exclude_users: {path} is not UTF-8 text "
                           f"(byte {exc.start})"]) from None
