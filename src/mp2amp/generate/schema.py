"""A Lexicon Schemas API response (mixpanel-api.md §8) for the generated events.

Property types are read from the first few occurrences of each event (cheap, and the
generator's event properties have stable types; ``--dirty`` type changes come later
on purpose and are *not* in the plan, as in a real project whose data drifted).
"""

from __future__ import annotations

from typing import Any

from mp2amp.generate.industries import DESCRIPTIONS

_SAMPLES = 3


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


class SchemaSampler:
    def __init__(self) -> None:
        self._events: dict[str, dict[str, str]] = {}
        self._seen: dict[str, int] = {}
        self.done: set[str] = set()  # names sampled enough (a set test is the cheap hot-path check)

    def sample(self, name: str, props: dict[str, Any] | None) -> None:
        self._seen[name] = self._seen.get(name, 0) + 1
        if self._seen[name] >= _SAMPLES:
            self.done.add(name)
        types = self._events.setdefault(name, {})
        for key, value in (props or {}).items():
            types.setdefault(key, json_type(value))

    def response(self, profile_props: dict[str, str], industries: list[str]) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        for name in sorted(self._events):
            results.append(_entry("event", name, DESCRIPTIONS.get(name, ""), self._events[name], industries))
        results.append(_entry("profile", "$user", "User profile", profile_props, industries))
        return {"status": "ok", "results": results}


def _entry(entity: str, name: str, description: str, props: dict[str, str],
           tags: list[str]) -> dict[str, Any]:
    return {
        "entityType": entity,
        "name": name,
        "schemaJson": {
            "$schema": "http://json-schema.org/draft-07/schema",
            "description": description,
            "additionalProperties": True,
            "properties": {key: {"type": props[key], "description": ""} for key in sorted(props)},
            "metadata": {"com.mixpanel": {"$source": "mp2amp generate", "displayName": name,
                                          "tags": tags, "hidden": False, "dropped": False,
                                          "contacts": [], "teamContacts": []}},
        },
    }
