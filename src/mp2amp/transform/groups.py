"""Amplitude ``groups`` from the configured Mixpanel group keys (e.g. ``company_id``).

Within Amplitude's limits: at most 5 group types and 10 group names per event; a name is a
non-blank string cut to 1024 characters or an integral number as text (an integer with
every digit, a float as JavaScript writes it: 1e21 is "1e+21"). What is cut off is
counted under ``groups_over_limit``, once per event whatever was cut. A hashed group key
(privacy) makes a group only where its value unhashed would (``unhashed_groups``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from mp2amp.transform.plan import PlanTypeMismatch, PropertyRule, coerce_value
from mp2amp.transform.values import MAX_STRING, js_number_text

MAX_GROUP_TYPES = 5
MAX_GROUP_VALUES = 10


def groups_of(props: dict[str, Any], keys: tuple[str, ...], counts: Counter[str]) -> dict[str, Any]:
    """The groups of the configured keys present (``keys``, in configured order)."""
    if len(keys) == 1:
        value = props[keys[0]]
        if type(value) is str:  # the common case: one group, one name
            name = value.strip()
            return {keys[0]: name[:MAX_STRING]} if name else {}
    groups: dict[str, Any] = {}
    budget = MAX_GROUP_VALUES
    cut = False  # counted once per event: groups_over_limit counts events, not names
    for key in keys:
        value = props[key]
        names = [group_name(v) for v in value] if type(value) is list else [group_name(value)]
        usable = list(dict.fromkeys([n for n in names if n is not None]))
        if not usable:
            continue  # nothing to send: a full event cuts nothing here
        if len(groups) == MAX_GROUP_TYPES or budget == 0:
            cut = True
            break
        if len(usable) > budget:
            cut = True
            usable = usable[:budget]
        budget -= len(usable)
        groups[key] = usable if type(value) is list else usable[0]
    if cut:
        counts["groups_over_limit"] += 1
    return groups


def group_name(value: object) -> str | None:
    """One group name as Amplitude takes it, or ``None`` when the value cannot be one."""
    if type(value) is str:
        name = value.strip()
        return name[:MAX_STRING] if name else None
    if type(value) is int:
        return str(value)
    if type(value) is float and value == value and value.is_integer():
        # as Mixpanel (JavaScript) shows it, as the plan's type: string writes it: 1e21 and
        # "1e+21" name one group
        return js_number_text(value)
    return None


def unhashed_groups(props: dict[str, Any], raw: dict[str, Any], hashed: tuple[str, ...],
                    rules: Mapping[str, PropertyRule] | None = None) -> dict[str, Any]:
    """``props`` with each ``hashed`` group key's hash kept only where its ``raw`` value
    (before the privacy rules), as the plan's ``rules`` type it, makes a group name: a hash
    is a name whatever it stands for, and ``true``, ``4.5`` or an object make no group
    unhashed (``"true"`` and ``"4.5"`` do, where the plan types the key string)."""
    if not hashed:
        return props
    out = props
    for key in hashed:
        if key in out and key in raw:
            if out is props:
                out = dict(props)
            rule = rules.get(key) if rules else None
            out[key] = _named_only(_as_planned(raw[key], rule), out[key])
    return out


def _as_planned(value: Any, rule: PropertyRule | None) -> Any:
    """``value`` as the plan's ``rule`` types it (as it is where it does not convert: the
    plan rejects that event anyway)."""
    if rule is None or rule.type is None:
        return value
    try:
        return coerce_value(value, rule.type, convert=rule.on_mismatch == "coerce")
    except PlanTypeMismatch:
        return value


def _named_only(raw: Any, hashed: Any) -> Any:
    if type(hashed) is list:  # hashed value by value: its shape is the raw one's
        raws = raw if type(raw) is list else [raw]  # (a plan's list type wraps a scalar)
        if len(raws) != len(hashed):
            return hashed
        return [h if group_name(r) is not None else None for r, h in zip(raws, hashed,
                                                                          strict=True)]
    if type(raw) is list:  # a plan made text of it: not a hash this can pair up
        return hashed
    return hashed if group_name(raw) is not None else None
