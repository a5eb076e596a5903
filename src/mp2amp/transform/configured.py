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
    is the plan's new name of another configured property (``_read_twice``).

    Each event's rules are looked up own rule first, then global, through a reverse index
    of each: a merged copy per event would hold events x global rules at once."""
    shared = plan.properties
    onto_shared = _renamed_onto(shared)
    problems: set[str] = set()
    _check_scope("its properties", shared, None, onto_shared, {}, configured, problems)
    for event, rule in plan.events.items():
        if rule.properties:
            own = rule.properties
            _check_scope(f"event {event!r}", plan.property_rules(event), own, onto_shared,
                         _renamed_onto(own), configured, problems)
    return sorted(problems)


def _check_scope(scope: str, rules: Mapping[str, PropertyRule],
                 own_rules: Mapping[str, PropertyRule] | None,
                 onto_shared: dict[str, list[str]], onto_own: dict[str, list[str]],
                 configured: Mapping[str, str], problems: set[str]) -> None:
    """``ambiguous`` in one scope: the plan's global rules (``own_rules`` None) or an
    event's, where a problem with only global rules in it is the global scope's."""
    for key, name in configured.items():
        own = rules.get(name)
        if own is None or not _moved(own, name):
            problems.update(_read_twice(key, name, rules, own_rules, configured, scope))
            continue
        # the properties renamed onto ``name``: the event's own, and the global ones it
        # keeps when ``name``'s rule is its own (else the pair is the global scope's)
        others = list(onto_own.get(name, ()))
        if own_rules is None or name in own_rules:
            others += (o for o in onto_shared.get(name, ())
                       if own_rules is None or o not in own_rules)
        problems.update(_ambiguity(key, name, other, own, scope)
                        for other in others if other != name)


def _renamed_onto(rules: Mapping[str, PropertyRule]) -> dict[str, list[str]]:
    """Each name ``rules`` rename an event property to -> the properties renamed to it."""
    onto: dict[str, list[str]] = {}
    for other, rule in rules.items():
        if rule.rename is not None and not rule.user_property:
            onto.setdefault(rule.rename, []).append(other)
    return onto


def _read_twice(key: str, name: str, rules: Mapping[str, PropertyRule],
                own_rules: Mapping[str, PropertyRule] | None, configured: Mapping[str, str],
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
