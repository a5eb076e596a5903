"""The configured revenue and group properties of an event the tracking plan reshaped.

``[transform.revenue]`` and ``[transform] groups`` name Mixpanel properties, as the privacy
rules, the plan and the mapping do; the plan runs first and may rename a property, move it
to the user properties, coerce it (a ``type: object`` made of text is scrubbed by the
privacy rules only then) or drop it. Each configured name is read as the value the plan
made of that Mixpanel property, wherever it put it; the value before the plan (already
through the privacy rules) only when the plan dropped it; else by the plan's new name, so
a config that names the plan's new name (as older versions needed) keeps working. A name
that could mean either of two properties is refused with the config (``ambiguous``), and
so is one that is the plan's new name of another configured property (read for both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mp2amp.transform.plan import PlanResult, PropertyRule, TrackingPlan


def by_source_name(before: dict[str, Any], planned: PlanResult,
                   names: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``names`` present: by Mixpanel name first (what the plan made of it),
    else by the plan's name. ``before``: the event's properties after the privacy rules."""
    found: dict[str, Any] = {}
    rules = planned.rules
    for name in names:
        if name in before:
            rule = rules.get(name)
            if rule is None or rule.drop:  # kept as it was, or only the plan dropped it
                found[name] = before[name]
            else:  # never the text the rules saw when the plan made an object of it
                dest = planned.user_props if rule.user_property else planned.props
                found[name] = dest[rule.rename or name]
        elif name in planned.props:
            found[name] = planned.props[name]
    return found


def present(named: dict[str, Any], revenue_keys: tuple[str, ...],
            group_keys: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """Whether a revenue amount is configured and present, and the group keys present (in
    configured order): what the event's shape says when no plan runs."""
    return any(k in named for k in revenue_keys), tuple(k for k in group_keys if k in named)


def ambiguous(plan: TrackingPlan, configured: Mapping[str, str]) -> list[str]:
    """Config problems: a configured name (``configured``: config key -> property name)
    that the plan moves away from the event properties while it renames another property
    onto it. Read by Mixpanel name first, it would be one value on events that carry the
    Mixpanel property and the other's on events that do not. And a configured name that
    is the plan's new name of another configured property (``_read_twice``)."""
    scopes: list[tuple[str, Mapping[str, PropertyRule], frozenset[str] | None]] = [
        ("its properties", plan.properties, None)]
    scopes += [(f"event {event!r}", {**plan.properties, **rule.properties},
                frozenset(rule.properties)) for event, rule in plan.events.items()
               if rule.properties]
    problems: set[str] = set()
    for scope, rules, own_rules in scopes:
        for key, name in configured.items():
            own = rules.get(name)
            if own is None or not _moved(own, name):
                problems.update(_read_twice(key, name, rules, own_rules, configured, scope))
                continue
            for other, rule in rules.items():
                if other != name and rule.rename == name and not rule.user_property and (
                        own_rules is None or {name, other} & own_rules):  # (else: global)
                    problems.add(_ambiguity(key, name, other, own, scope))
    return sorted(problems)


def _read_twice(key: str, name: str, rules: Mapping[str, PropertyRule],
                own_rules: frozenset[str] | None, configured: Mapping[str, str],
                scope: str) -> list[str]:
    """Config problems: ``name`` is the plan's new name of another configured property.
    On an event without a Mixpanel ``name``, ``by_source_name`` reads that property for
    both keys (a price booked as the order total too)."""
    out = []
    for other_key, other in configured.items():
        rule = rules.get(other)
        if other != name and rule is not None and rule.rename == name and not (
                rule.drop or rule.user_property) and (own_rules is None or other in own_rules):
            out.append(f"{key}: {name!r} is the tracking plan's new name of {other!r} "
                       f"({scope}), which {other_key} names: on an event without a Mixpanel "
                       f"{name!r} one value would be read for both; configured names are the "
                       f"Mixpanel names: write {name!r} only for a Mixpanel property of that "
                       f"name and have the plan rename {other!r} to another name, or remove "
                       f"{key}")
    return out


def _moved(rule: PropertyRule, name: str) -> bool:
    """Whether the plan takes property ``name`` away from the event properties' ``name``."""
    return rule.drop or rule.user_property or rule.rename not in (None, name)


def _ambiguity(key: str, name: str, other: str, own: PropertyRule, scope: str) -> str:
    what = ("drops" if own.drop
            else f"moves to the user properties as {own.rename or name!r}" if own.user_property
            else f"renames to {own.rename!r}")
    mixpanel = (f"or {own.rename!r} (the plan's new name) for the Mixpanel {name!r}"
                if own.rename and not own.user_property
                else f"or have the plan rename {other!r} to a name no property has, to read "
                     f"the Mixpanel {name!r}")
    return (f"{key}: {name!r} names two properties in the tracking plan ({scope}): the "
            f"Mixpanel property {name!r}, which the plan {what}, and {other!r}, which the "
            f"plan renames to {name!r}; which one is read would depend on the event, so "
            f"nothing is guessed: write {other!r} (its Mixpanel name) for the value the plan "
            f"calls {name!r}, {mixpanel}")
