"""The configured revenue and group properties of an event the tracking plan reshaped.

``[transform.revenue]`` and ``[transform] groups`` name Mixpanel properties, as the privacy
rules, the plan and the mapping do; the plan runs first and may rename a property, move it
to the user properties or drop it from the event properties. Each configured name is read
from the event as it was before the plan (after the privacy rules: a dropped or hashed
property stays so), else from the plan's output, so a config that names the plan's new
name (as older versions needed) keeps working.
"""

from __future__ import annotations

from typing import Any


def by_source_name(before: dict[str, Any], after: dict[str, Any],
                   names: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``names`` present: by Mixpanel name first, else by the plan's name."""
    found: dict[str, Any] = {}
    for name in names:
        if name in before:
            found[name] = before[name]
        elif name in after:
            found[name] = after[name]
    return found


def present(named: dict[str, Any], revenue_keys: tuple[str, ...],
            group_keys: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """Whether a revenue amount is configured and present, and the group keys present (in
    configured order): what the event's shape says when no plan runs."""
    return any(k in named for k in revenue_keys), tuple(k for k in group_keys if k in named)
