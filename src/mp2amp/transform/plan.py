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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Skip
from mp2amp.transform.problems import RESERVED_EVENT_TYPES

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
            return js_number_text(value)
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
        if convert and isinstance(value, str | int | float | bool):
            return [value]  # Amplitude treats a scalar and a one-element list alike
        raise _Mismatch
    if isinstance(value, dict):  # object
        return value
    if convert and isinstance(value, str):
        try:
            parsed = orjson.loads(value)  # stringified JSON objects are common in the wild
        except orjson.JSONDecodeError:
            raise _Mismatch from None
        # orjson reads an integer past 64 bits as the nearest double: other digits than
        # the text held, so not lossless (the standard library reads it exactly)
        if isinstance(parsed, dict) and parsed == json.loads(value):
            return parsed
    raise _Mismatch


def int_text(value: int) -> str:
    """An integer as text: past 2**53, one a double holds exactly (2**60) as the equal float
    is written, so one number has one spelling; any other keeps every digit (not lost)."""
    if abs(value) > _EXACT_INT:
        try:
            as_float = float(value)
        except OverflowError:  # past a double's range: no float spelling to agree with
            return str(value)
        if as_float == value:
            return js_number_text(as_float)
    return str(value)


_EXACT_INT = 2**53  # every integer up to here is exactly a double, written with all digits


def js_number_text(value: float) -> str:
    """``value`` as JavaScript writes it (``Number::toString``), as Mixpanel shows it: 5.0
    is "5", 1e16 "10000000000000000", 1e21 "1e+21", 1.5e-7 "1.5e-7". Python's repr would
    send one property as both "5" (an int) and "5.0"."""
    if not math.isfinite(value):
        raise _Mismatch  # NaN and infinities are no JSON number Mixpanel could hold
    if value == 0:
        return "0"  # -0 too
    if value < 0:
        return "-" + js_number_text(-value)
    mantissa, _, exponent = repr(value).partition("e")  # shortest digits, as JS picks
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # the value is 0.digits x 10**point (ECMA-262's n)
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if len(digits) <= point <= 21:
        return digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return f"{digits[:point]}.{digits[point:]}"
    if -6 < point <= 0:
        return "0." + "0" * -point + digits
    sign = "+" if point > 0 else "-"
    head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{head}e{sign}{abs(point - 1)}"


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

    def renames(self, event_name: str) -> dict[str, str | None]:
        """Each property the plan renames or drops for ``event_name`` -> its new name (None:
        dropped): how a problem found later is traced back to the record's name."""
        rule = self.events.get(event_name)
        rules = {**self.properties, **rule.properties} if rule is not None else self.properties
        return {key: None if r.drop else r.rename for key, r in rules.items()
                if r.drop or r.rename}

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
        ``type: object`` rule made of a string (the rules ran before, on the text)."""
        rule = self.events.get(event_name)
        flagged = False
        if rule is None:
            if self.unplanned_events == "drop":
                return Skip(SKIP_NOT_IN_PLAN, f"event {event_name!r} is not in the tracking plan")
            flagged = self.unplanned_events == "flag"
            name = event_name
            prop_rules: Mapping[str, PropertyRule] = self.properties
        else:
            if rule.drop:
                return Skip(SKIP_DROP_EVENT, f"the tracking plan drops event {event_name!r}")
            name = rule.rename or event_name
            prop_rules = (
                {**self.properties, **rule.properties} if rule.properties else self.properties
            )
        if not prop_rules:  # the common case: nothing to do, no copy
            return PlanResult(name, props, {}, flagged)
        out: dict[str, Any] = {}
        user_props: dict[str, Any] = {}
        renamed: dict[str, str] = {}  # target -> the property renamed to it
        for key, value in props.items():
            prule = prop_rules.get(key)
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
                    if scrub is not None and type(value) is dict and type(was) is str:
                        value = scrub(value)
                except _Mismatch:
                    return Rejection(
                        REJECT_TYPE,
                        f"property {key!r} of event {event_name!r} is "
                        f"{_describe(value)}, the tracking plan declares {prule.type}"
                        + (" and it does not convert" if prule.on_mismatch == "coerce" else ""),
                        field=key,
                    )
            target = prule.rename or key
            dest = user_props if prule.user_property else out
            if target in dest:  # the event has it already, or another rename made it
                return (_clash(event_name, key, target) if prule.rename
                        else _clash(event_name, renamed[target], target))
            if prule.rename:
                renamed[target] = key
            dest[target] = value
        return PlanResult(name, out, user_props, flagged, prop_rules)


def _clash(event_name: str, source: str, target: str) -> Rejection:
    """A rename onto a name the event already has: either value would be lost."""
    return Rejection(
        REJECT_RENAME_CLASH,
        f"the tracking plan renames property {source!r} of event {event_name!r} to "
        f"{target!r}, which the event also has: one value would be lost; drop one of them "
        "in the plan, or rename to a free name",
        field=source)


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
    """Read and validate a tracking-plan YAML file; every problem is reported at once."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM, as Windows editors write
    except OSError as exc:
        raise ConfigError([f"cannot read the tracking plan: {exc.strerror or exc}"],
                          source=source) from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError([f"line {line}: the tracking plan is not UTF-8 text (byte "
                           f"0x{exc.object[exc.start]:02x}); save it as UTF-8 and run again"],
                          source=source) from None
    loader = _PlanLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}not valid YAML: {problem}"], source=source) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(loader.duplicates, source=source)
    return parse_plan(data, source=source)


class _PlanLoader(yaml.SafeLoader):
    """PyYAML's safe loader, noting keys given twice in one mapping: YAML keeps only the
    last, so ``email: {drop: true}`` followed by ``email: {user_property: true}`` would
    send what the first said to drop."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []


def _noting_duplicates(loader: _PlanLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below names it
            continue
        if first is None:
            seen[key] = line
            continue
        where = "on the same line" if first == line else f"also on line {first}"
        loader.duplicates.append(f"line {line}: {key!r} is given twice in one mapping "
                                 f"({where}); YAML would keep only the last: merge the two")
    return loader.construct_mapping(node, deep=deep)


_PlanLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _noting_duplicates)


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
    if version != 1:
        problems.append(f"version: {version!r} is not supported (expected 1)")
    unplanned = data.get("unplanned_events", "keep")
    if unplanned not in UNPLANNED_POLICIES:
        problems.append(f"unplanned_events: {unplanned!r} is not one of keep, drop, flag")
    global_props = _parse_properties(data.get("properties"), "properties", problems)
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
            problems.append(f"{path}: an event name must be a non-empty string")
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
        rename = _opt_name(raw.get("rename"), f"{path}.rename", problems)
        if rename in RESERVED_EVENT_TYPES:
            problems.append(f"{path}.rename: {rename!r} is reserved by Amplitude; "
                            "choose another name")
        drop = _opt_bool(raw.get("drop"), f"{path}.drop", problems)
        if drop and rename:
            problems.append(f"{path}: drop and rename together make no sense; keep one")
        props = _parse_properties(raw.get("properties"), f"{path}.properties", problems)
        if props:
            _check_targets({**global_props, **props}, path, problems, involving=set(props))
        events[name] = EventRule(rename=rename, drop=drop, properties=props)
    _check_targets(global_props, "properties", problems)
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
            problems.append(f"{ppath}: a property name must be a non-empty string")
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
        rename = _opt_name(spec.get("rename"), f"{ppath}.rename", problems)
        drop = _opt_bool(spec.get("drop"), f"{ppath}.drop", problems)
        user_property = _opt_bool(spec.get("user_property"), f"{ppath}.user_property", problems)
        kind = spec.get("type")
        if kind is not None and kind not in PROP_TYPES:
            problems.append(f"{ppath}.type: {kind!r} is not one of {', '.join(PROP_TYPES)}")
            kind = None
        on_mismatch = spec.get("on_mismatch", "coerce")
        if on_mismatch not in MISMATCH_POLICIES:
            problems.append(f"{ppath}.on_mismatch: {on_mismatch!r} is not one of coerce, reject")
            on_mismatch = "coerce"
        elif "on_mismatch" in spec and kind is None:
            problems.append(f"{ppath}.on_mismatch: needs a type to check against")
        if drop and (rename or user_property or kind):
            problems.append(f"{ppath}: a dropped property takes no rename, user_property or type")
        rules[name] = PropertyRule(rename=rename, drop=drop, user_property=user_property,
                                   type=kind, on_mismatch=on_mismatch)
    return rules


def _check_targets(rules: Mapping[str, PropertyRule], path: str, problems: list[str],
                   involving: set[str] | None = None) -> None:
    """Two properties landing on the same name would silently overwrite one another.

    ``involving``: report only clashes with one of these (the event's own rules), so that a
    clash between two global rules is reported once, under ``properties``."""
    seen: dict[tuple[bool, str], str] = {}
    for name, rule in rules.items():
        if rule.drop:
            continue
        target = (rule.user_property, rule.rename or name)
        other = seen.get(target)
        if other is not None and (involving is None or {other, name} & involving):
            where = "user property" if target[0] else "property"
            problems.append(f"{path}: properties {other!r} and {name!r} both become "
                            f"{where} {target[1]!r}; one would overwrite the other")
        else:
            seen[target] = name


def _opt_name(value: Any, path: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{path}: must be a non-empty string, got {value!r}")
        return None
    return value


def _opt_bool(value: Any, path: str, problems: list[str]) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        problems.append(f"{path}: must be true or false, got {value!r}")
        return False
    return value


def _quote(name: Any) -> str:
    text = str(name)
    return text if text.replace("_", "").isalnum() else f'"{text}"'
