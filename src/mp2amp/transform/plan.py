"""The tracking plan: a YAML file the user edits to reshape events on their way over.

What it can say (the documented example is docs/examples/tracking-plan.yaml):

* per event: ``rename`` it, ``drop`` it, and rules for its properties;
* per property (under an event, or under the top-level ``properties`` for every event):
  ``rename``, ``drop``, ``user_property: true`` (moved to Amplitude ``user_properties``),
  ``type`` (string | number | integer | boolean | list | object) with ``on_mismatch``
  ``coerce`` (convert when the value converts losslessly, else reject) or ``reject``;
* ``unplanned_events``: what happens to events the plan does not list: ``keep`` (as they
  are), ``drop`` (skipped, counted under ``plan.not_in_plan``) or ``flag`` (kept, with
  ``PlanResult.flagged`` set so the mapping core can mark them).

Property names in the plan are the *source* (Mixpanel) names; an event-level rule for a
property replaces the global rule for the same property. ``apply`` is pure: it never
mutates its input and holds no state beyond the parsed plan.
"""

from __future__ import annotations

import json
import math
import re
from collections import ChainMap
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Skip
from mp2amp.transform.mapping import PLATFORMS, rules_for
from mp2amp.transform.planyaml import read_plan_yaml
from mp2amp.transform.problems import RESERVED_EVENT_TYPES
from mp2amp.transform.values import ValueProblem, int_text, js_number_text

PropType = Literal["string", "number", "integer", "boolean", "list", "object"]
PROP_TYPES: tuple[str, ...] = ("string", "number", "integer", "boolean", "list", "object")
UNPLANNED_POLICIES: tuple[str, ...] = ("keep", "drop", "flag")
MISMATCH_POLICIES: tuple[str, ...] = ("coerce", "reject")

SKIP_DROP_EVENT = "plan.drop_event"
SKIP_NOT_IN_PLAN = "plan.not_in_plan"
REJECT_TYPE = "plan_type_mismatch"
REJECT_RENAME_CLASH = "plan_rename_clash"


@dataclass(frozen=True, slots=True)
class PlanResult:
    """An event after the plan: new name, event properties, properties moved to the user,
    and the property rules applied (where each Mixpanel property went: ``configured``)."""

    event_name: str
    props: dict[str, Any]
    user_props: dict[str, Any]
    flagged: bool = False
    rules: Mapping[str, PropertyRule] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PropertyRule:
    rename: str | None = None
    drop: bool = False
    user_property: bool = False
    type: PropType | None = None
    on_mismatch: Literal["coerce", "reject"] = "coerce"


@dataclass(frozen=True, slots=True)
class EventRule:
    rename: str | None = None
    drop: bool = False
    properties: Mapping[str, PropertyRule] = field(default_factory=dict)


class _Mismatch(Exception):
    """A value that does not have (or convert to) the declared type."""


PlanTypeMismatch = _Mismatch  # what coerce_value raises, for passes that mirror the plan


_TRUE_STRINGS = frozenset({"true", "1", "yes"})
_FALSE_STRINGS = frozenset({"false", "0", "no"})


def coerce_value(value: Any, kind: PropType, *, convert: bool) -> Any:
    """``value`` as ``kind``; raise _Mismatch when it is not (or, with ``convert``, cannot be
    converted without losing information). ``None`` passes: absence is not a type error."""
    if value is None:
        return None
    if kind == "string":
        if isinstance(value, str):
            return value
        if not convert:
            raise _Mismatch
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _Mismatch  # NaN and infinities are no JSON number Mixpanel could hold
            return js_number_text(value)  # as Mixpanel shows it: 5.0 is "5", 1e21 "1e+21"
        if isinstance(value, int):
            return int_text(value)
        # Lists and objects have no single obvious string form; refuse rather than guess.
        raise _Mismatch
    if kind in ("number", "integer"):
        return _coerce_number(value, integer=kind == "integer", convert=convert)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if not convert:
            raise _Mismatch
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE_STRINGS:
                return True
            if low in _FALSE_STRINGS:
                return False
        raise _Mismatch
    if kind == "list":
        if isinstance(value, list):
            return value
        if not convert:
            raise _Mismatch
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:  # a stringified JSON list, as the wild custom_event "tags" holds
                return _parsed_json(value, list)
            except _NotJson:
                pass  # "[beta] tester": a tag that only starts with a bracket
        if isinstance(value, str | int | float | bool):
            return [value]  # Amplitude treats a scalar and a one-element list alike
        raise _Mismatch
    if isinstance(value, dict):  # object
        return value
    if convert and isinstance(value, str):
        try:  # stringified JSON objects are common in the wild
            return _parsed_json(value, dict)
        except _NotJson:
            pass
    raise _Mismatch


class _NotJson(_Mismatch):
    """Text that is no JSON at all: a list may still take it whole, as one item."""


def _parsed_json(text: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    """``text`` read as JSON of ``kind``, exactly; _NotJson when it is no JSON, _Mismatch
    when it is other JSON or would not be read losslessly."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _NotJson from None
    if not isinstance(parsed, kind):
        raise _Mismatch
    # orjson reads an integer past 64 bits as the nearest double: other digits than the
    # text held, so not lossless (the standard library reads it exactly, to about a
    # thousand levels: deeper text orjson reads is refused, not let out as an error)
    try:
        exact = parsed == json.loads(text)
    except RecursionError:
        raise _Mismatch from None
    if not exact:
        raise _Mismatch
    return parsed


# Decimal text in ASCII digits (sign, fraction, exponent allowed): the only text a plan's
# number type converts; int()/float() also take "1_000", "inf" and other scripts' digits
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _coerce_number(value: Any, *, integer: bool, convert: bool) -> int | float:
    if isinstance(value, bool):
        raise _Mismatch  # True is an int in Python, never a number in a plan
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Mismatch
        if not integer:
            return value
        if convert and value.is_integer():
            return int(value)
        raise _Mismatch
    if not convert or not isinstance(value, str):
        raise _Mismatch
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        raise _Mismatch
    try:
        return int(text)
    except ValueError:
        pass
    # Lossless means the decimal value itself: "12345678901234567890.0" is that integer,
    # not the float nearest to it, and "1.0000000000000001" is not the number 1.
    exact = Decimal(text)
    if integer:
        # past 20 digits no integer is sent anyway (values.py: 64 bits); "1e100000000"
        # would take hours to build
        if exact.adjusted() > 19 or exact != exact.to_integral_value():
            raise _Mismatch
        return int(exact)
    as_float = float(exact)
    if not math.isfinite(as_float) or Decimal(repr(as_float)) != exact:
        raise _Mismatch
    return as_float


class TrackingPlan:
    """A parsed tracking plan; ``TrackingPlan.keep_all()`` is the plan of a run without one."""

    __slots__ = ("events", "properties", "source", "unplanned_events")

    def __init__(
        self,
        events: Mapping[str, EventRule],
        properties: Mapping[str, PropertyRule],
        unplanned_events: Literal["keep", "drop", "flag"] = "keep",
        source: str | None = None,
    ) -> None:
        self.events = dict(events)
        self.properties = dict(properties)
        self.unplanned_events = unplanned_events
        self.source = source

    @classmethod
    def keep_all(cls) -> TrackingPlan:
        return cls({}, {}, "keep")

    def property_rules(self, event_name: str) -> Mapping[str, PropertyRule]:
        """The property rules for ``event_name``: its own over the global ones (a view)."""
        rule = self.events.get(event_name)
        return layered(rule.properties if rule is not None else {}, self.properties)

    @property
    def changes_events(self) -> bool:
        """Whether this plan can change any event or property (``keep_all()`` cannot):
        the transformer calls ``apply`` per event only when it can."""
        return bool(self.events or self.properties) or self.unplanned_events != "keep"

    def __repr__(self) -> str:
        return (f"TrackingPlan(events={len(self.events)}, properties={len(self.properties)}, "
                f"unplanned_events={self.unplanned_events!r}, source={self.source!r})")

    def apply(self, event_name: str, props: dict[str, Any],
              scrub: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
              ) -> PlanResult | Skip | Rejection:
        """The event after the plan. ``scrub``: the privacy rules' pass over an object a
        ``type: object`` rule made of a string, or the objects in a list a ``type: list``
        rule made of one (the rules ran before, on the text)."""
        rule = self.events.get(event_name)
        flagged = False
        own: Mapping[str, PropertyRule] = {}  # the event's own rules, over the global ones
        if rule is None:
            if self.unplanned_events == "drop":
                return Skip(SKIP_NOT_IN_PLAN, f"event {event_name!r} is not in the tracking plan")
            flagged = self.unplanned_events == "flag"
            name = event_name
        else:
            if rule.drop:
                return Skip(SKIP_DROP_EVENT, f"the tracking plan drops event {event_name!r}")
            name = rule.rename or event_name
            own = rule.properties
        shared = self.properties
        if not (own or shared):  # the common case: nothing to do, no copy
            return PlanResult(name, props, {}, flagged)
        # looked up per property, own rules first: a merged copy costs every global rule
        first, then = (own, shared) if own else (shared, own)
        out: dict[str, Any] = {}
        user_props: dict[str, Any] = {}
        renamed: dict[str, str] = {}  # target -> the property renamed to it, per section:
        renamed_user: dict[str, str] = {}  # an event and a user property may share a name
        for key, value in props.items():
            prule = first.get(key)
            if prule is None and then:
                prule = then.get(key)
            if prule is None:
                if renamed and key in out:  # only a rename can have put it there
                    return _clash(event_name, renamed[key], key)
                out[key] = value
                continue
            if prule.drop:
                continue
            if prule.type is not None:
                try:
                    was = value
                    value = coerce_value(value, prule.type, convert=prule.on_mismatch == "coerce")
                    if scrub is not None and type(was) is str:
                        if type(value) is dict:
                            value = scrub(value)
                        elif type(value) is list:  # a list's objects, from "[{...}]"
                            value = _scrubbed_list(value, scrub, key)
                except _Mismatch:
                    return Rejection(
                        REJECT_TYPE,
                        f"property {key!r} of event {event_name!r} is "
                        f"{_describe(value)}, the tracking plan declares {prule.type}"
                        + (" and it does not convert" if prule.on_mismatch == "coerce" else ""),
                        field=f"properties.{key}",  # its place in the record, as elsewhere
                    )
            target = prule.rename or key
            dest, onto = (user_props, renamed_user) if prule.user_property else (out, renamed)
            if target in dest:  # the event has it already, or another rename made it
                return (_clash(event_name, key, target) if prule.rename
                        else _clash(event_name, onto[target], target))
            if prule.rename:
                onto[target] = key
            dest[target] = value
        return PlanResult(name, out, user_props, flagged, layered(own, shared))


def layered(own: Mapping[str, PropertyRule], shared: Mapping[str, PropertyRule],
            ) -> Mapping[str, PropertyRule]:
    """An event's own property rules over the global ones, looked up in that order and
    iterated as ``{**shared, **own}``, without the merged copy (ChainMap types its maps
    mutable: never written here)."""
    return ChainMap(cast(MutableMapping[str, PropertyRule], own),
                    cast(MutableMapping[str, PropertyRule], shared)) if own else shared


def _discarded() -> frozenset[str]:
    """The Mixpanel names the mapping consumes on every platform without a field or a kept
    property (identity, time, insert_id, ingestion metadata): a value the plan renames onto
    one would be sent nowhere."""
    tables = [rules_for(platform) for platform in PLATFORMS]
    return frozenset.intersection(*(
        frozenset(name for name, rule in table.items()
                  if rule.keep == "never" and rule.field is None) for table in tables))


DISCARDED = _discarded()


_SCRUB_DEPTH = 64  # list levels, as the privacy pass bounds an object's (then too_deep)


def _scrubbed_list(items: list[Any], scrub: Callable[[dict[str, Any]], dict[str, Any]],
                   prop: str, depth: int = 1) -> list[Any]:
    """``items`` with the privacy pass over each object in it, at any depth."""
    if depth > _SCRUB_DEPTH:  # a listed key could hide down there, past what is checked
        raise ValueProblem(f"properties.{prop}", f"property {prop!r} is a list nested more "
                           f"than {_SCRUB_DEPTH} levels, too deep for the privacy rules to "
                           "check; the event is rejected", reason="too_deep")
    return [scrub(item) if type(item) is dict
            else _scrubbed_list(item, scrub, prop, depth + 1) if type(item) is list
            else item for item in items]


def _clash(event_name: str, source: str, target: str) -> Rejection:
    """A rename onto a name the event already has: either value would be lost."""
    return Rejection(
        REJECT_RENAME_CLASH,
        f"the tracking plan renames property {source!r} of event {event_name!r} to "
        f"{target!r}, which the event also has: one value would be lost; drop one of them "
        "in the plan, or rename to a free name",
        field=f"properties.{source}")  # its place in the record, as other rejections


def _describe(value: Any) -> str:
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:  # integers past 64 bits
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# --- loading --------------------------------------------------------------------------

_EVENT_KEYS = frozenset({"rename", "drop", "properties", "description"})
_PROP_KEYS = frozenset({"rename", "drop", "user_property", "type", "on_mismatch", "description"})
_TOP_KEYS = frozenset({"version", "unplanned_events", "events", "properties"})


def load_plan(path: str | Path) -> TrackingPlan:
    """Read and validate a tracking-plan YAML file; every problem is reported at once (keys
    given twice in the file with the rest)."""
    source = str(path)
    data, duplicates = read_plan_yaml(path)
    try:
        plan = parse_plan(data, source=source)
    except ConfigError as exc:
        raise ConfigError([*duplicates, *exc.problems], source=source) from None
    if duplicates:
        raise ConfigError(duplicates, source=source)
    return plan


def parse_plan(data: Any, *, source: str | None = None) -> TrackingPlan:
    """Build a plan from already-parsed YAML/JSON data (``load_plan`` without the file)."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping (version, unplanned_events, "
                           "events, properties)"], source=source)
    for key in sorted(set(map(str, data)) - _TOP_KEYS):
        problems.append(f"{key}: unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
    version = data.get("version", 1)
    if version != 1 or isinstance(version, bool):  # True == 1 in Python
        problems.append(f"version: {_shown(version)} is not supported (expected 1)")
    unplanned = data.get("unplanned_events", "keep")
    if unplanned not in UNPLANNED_POLICIES:
        problems.append(f"unplanned_events: {_shown(unplanned)} is not one of keep, drop, flag")
    global_props = _parse_properties(data.get("properties"), "properties", problems)
    global_problems: list[str] = []  # reported after the events', as always
    made = _check_targets(global_props, "properties", global_problems)  # once, not per event
    positions = {name: pos for pos, name in enumerate(global_props)}
    events: dict[str, EventRule] = {}
    raw_events = data.get("events")
    if raw_events is None:
        raw_events = {}
    if not isinstance(raw_events, dict):
        problems.append("events: must be a mapping of event name to its rules")
        raw_events = {}
    for name, raw in raw_events.items():
        path = f"events.{_quote(name)}"
        if not isinstance(name, str) or not name:
            problems.append(f"{path}: an event name must be a non-empty string{_unquoted(name)}")
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(f"{path}: must be a mapping (rename, drop, properties), "
                            f"got {type(raw).__name__}")
            continue
        for key in sorted(set(map(str, raw)) - _EVENT_KEYS):
            problems.append(f"{path}.{key}: unknown key "
                            f"(expected one of {', '.join(sorted(_EVENT_KEYS))})")
        rename = _opt_name(raw, "rename", path, problems)
        if rename in RESERVED_EVENT_TYPES:
            problems.append(f"{path}.rename: {rename!r} is reserved by Amplitude; "
                            "choose another name")
        drop = _opt_bool(raw, "drop", path, problems)
        if drop and rename:
            problems.append(f"{path}: drop and rename together make no sense; keep one")
        props = _parse_properties(raw.get("properties"), f"{path}.properties", problems)
        if props:
            _check_own_targets(props, made, positions, path, problems)
        events[name] = EventRule(rename=rename, drop=drop, properties=props)
    problems += global_problems
    if problems:
        raise ConfigError(problems, source=source)
    return TrackingPlan(events, global_props, unplanned, source)


def _parse_properties(raw: Any, path: str, problems: list[str]) -> dict[str, PropertyRule]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a mapping of property name to its rules")
        return {}
    rules: dict[str, PropertyRule] = {}
    for name, spec in raw.items():
        ppath = f"{path}.{_quote(name)}"
        if not isinstance(name, str) or not name:
            problems.append(f"{ppath}: a property name must be a non-empty string"
                            f"{_unquoted(name)}")
            continue
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            problems.append(f"{ppath}: must be a mapping (rename, drop, user_property, type, "
                            f"on_mismatch), got {type(spec).__name__}")
            continue
        for key in sorted(set(map(str, spec)) - _PROP_KEYS):
            problems.append(f"{ppath}.{key}: unknown key "
                            f"(expected one of {', '.join(sorted(_PROP_KEYS))})")
        rename = _opt_name(spec, "rename", ppath, problems)
        drop = _opt_bool(spec, "drop", ppath, problems)
        user_property = _opt_bool(spec, "user_property", ppath, problems)
        if rename not in (None, name) and not user_property and rename in DISCARDED:
            problems.append(f"{ppath}.rename: {_shown(rename)} is a Mixpanel name the "
                            "mapping consumes (identity, time, insert_id, ingestion metadata; "
                            "docs/mapping.md) and sends no property of: the value would not "
                            "be sent; rename to another name")
        kind = spec.get("type")
        if (kind is not None or "type" in spec) and kind not in PROP_TYPES:
            problems.append(f"{ppath}.type: {_shown(kind)} is not one of {', '.join(PROP_TYPES)}")
            kind = None
        on_mismatch = spec.get("on_mismatch", "coerce")
        if on_mismatch not in MISMATCH_POLICIES:
            problems.append(f"{ppath}.on_mismatch: {_shown(on_mismatch)} is not one of coerce, "
                            "reject")
            on_mismatch = "coerce"
        elif "on_mismatch" in spec and kind is None:
            problems.append(f"{ppath}.on_mismatch: needs a type to check against")
        if drop and (rename or user_property or kind):
            problems.append(f"{ppath}: a dropped property takes no rename, user_property or type")
        rules[name] = PropertyRule(rename=rename, drop=drop, user_property=user_property,
                                   type=kind, on_mismatch=on_mismatch)
    return rules


def _check_targets(rules: Mapping[str, PropertyRule], path: str, problems: list[str],
                   ) -> dict[tuple[bool, str], list[tuple[int, str]]]:
    """Two properties landing on the same name would silently overwrite one another.
    Returns each name the rules make -> the (position, property) of the rules making it."""
    made: dict[tuple[bool, str], list[tuple[int, str]]] = {}
    for pos, (name, rule) in enumerate(rules.items()):
        if rule.drop:
            continue
        target = (rule.user_property, rule.rename or name)
        if target in made:
            problems.append(_overwrite(path, made[target][0][1], name, target))
        made.setdefault(target, []).append((pos, name))
    return made


def _check_own_targets(own: Mapping[str, PropertyRule],
                       made: dict[tuple[bool, str], list[tuple[int, str]]],
                       positions: dict[str, int], path: str, problems: list[str]) -> None:
    """The clashes with an event's own rules that ``_check_targets`` over the merged
    ``{**global, **own}`` finds (same pairs, same order), walking only the names they make:
    the global rules making each (``made``), then the own rules, at their merged places."""
    walks: dict[tuple[bool, str], list[tuple[int, str]]] = {}
    for i, (name, rule) in enumerate(own.items()):
        if rule.drop:
            continue
        target = (rule.user_property, rule.rename or name)
        if target not in walks:  # (the global rules this event replaces are not walked)
            walks[target] = [entry for entry in made.get(target, ()) if entry[1] not in own]
        walks[target].append((positions.get(name, len(positions) + i), name))
    found: list[tuple[int, str]] = []
    for target, walk in walks.items():
        (_, seen), *rest = sorted(walk)
        for pos, name in rest:  # an own rule seen is kept; a global one gives way to the next
            if seen in own or name in own:
                found.append((pos, _overwrite(path, seen, name, target)))
            else:
                seen = name
    problems += (text for _, text in sorted(found))


def _overwrite(path: str, other: str, name: str, target: tuple[bool, str]) -> str:
    where = "user property" if target[0] else "property"
    return (f"{path}: properties {other!r} and {name!r} both become {where} "
            f"{target[1]!r}; one would overwrite the other")


def _opt_name(spec: dict[Any, Any], key: str, path: str, problems: list[str]) -> str | None:
    if key not in spec:
        return None
    value = spec[key]
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{path}.{key}: must be a non-empty string, got {_shown(value)}"
                        + ("; give the new name, or remove the line" if value is None else ""))
        return None
    return value


def _opt_bool(spec: dict[Any, Any], key: str, path: str, problems: list[str]) -> bool:
    if key not in spec:
        return False
    value = spec[key]
    if not isinstance(value, bool):
        problems.append(f"{path}.{key}: must be true or false, got {_shown(value)}")
        return False
    return value


def _shown(value: Any) -> str:
    """A plan value for a problem message, short: a YAML alias can make a small file hold
    a huge list, which repr would spell out in full."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    try:
        text = repr(value)
    except ValueError:  # (an integer past Python's 4300 digits)
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _unquoted(name: Any) -> str:
    """A hint for a name YAML read as a boolean or number: the key was not in quotes."""
    if isinstance(name, bool):
        return (f" (YAML reads an unquoted yes, no, on, off, true or false as {name}): "
                "write the name in quotes, e.g. \"on\"")
    if isinstance(name, int | float):
        return f" (YAML reads an unquoted {name} as a number): write it in quotes, \"{name}\""
    return ""


def _quote(name: Any) -> str:
    text = str(name)
    return text if text.replace("_", "").isalnum() else f'"{text}"'
