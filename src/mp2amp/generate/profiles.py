"""User and group profiles in Engage shape, and the Data Pipelines identity table.

Engage (mixpanel-api.md §2.3): ``{"$distinct_id", "$properties"}`` keyed by the canonical
id, dates as ``YYYY-MM-DDTHH:MM:SS`` without zone, ``$country_code`` (not
``mp_country_code``), legacy revenue as ``$transactions`` (a list of
``{"$time", "$amount"}``, §7; the profile keeps at most the last ``MAX_TRANSACTIONS``).
Short numeric user ids come back as integers, as real Engage exports do.
Groups (§2.5): ``{"$group_key", "$group_id", "$properties"}``.
Identity table (§6): ``{"distinct_id", "resolved_distinct_id"}`` for every non-canonical
id of a cluster (anonymous device ids, aliases, merged legacy ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from mp2amp.generate.identity_events import anonymous_distinct_id
from mp2amp.generate.people import Person

MAX_TRANSACTIONS = 100
_FIRST = ("Ana", "Ben", "Chloé", "Dev", "Emma", "Farah", "Gus", "Hiro", "Inès", "Jon", "Kofi", "Lena")
_LAST = ("Doe", "Smith", "García", "Müller", "Kumar", "Silva", "Tanaka", "Okafor", "Martin", "Nguyen")
_GROUP_INDUSTRY = ("SaaS", "Retail", "Finance", "Media", "Healthcare")


_DATES: dict[int, str] = {}  # UTC day -> "YYYY-MM-DD" (a few thousand at most)


def iso(ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) of an epoch-ms instant; strftime per call was the cost
    of writing profiles with up to 100 transactions each."""
    day, second = divmod(ms // 1000, 86_400)
    date = _DATES.get(day)
    if date is None:
        date = _DATES[day] = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}"


def user_profiles(people: list[Person], start_ms: int) -> Iterator[dict[str, Any]]:
    for person in people:
        if person.user_id is None or person.event_count == 0:
            continue
        first, last = _FIRST[person.index % len(_FIRST)], _LAST[(person.index // 7) % len(_LAST)]
        created = person.first_seen_ms if person.kind == "new" else start_ms - (person.index % 400 + 1) * 86_400_000
        props: dict[str, Any] = {
            "$created": iso(created), "$last_seen": iso(person.last_seen_ms),
            "$email": f"{first.lower()}.{person.index}@example.com", "$first_name": first,
            "$last_name": last, "$name": f"{first} {last}",
            "$city": person.geo.city, "$region": person.geo.region,
            "$country_code": person.geo.country, "$timezone": person.geo.timezone,
            "plan": person.plan, "industry": person.industry,
        }
        if person.index % 3 == 0:
            props["$phone"] = f"+1555{person.index % 10_000_000:07d}"
        for key, value in person.super_props.items():
            props[key if key.startswith("$") else f"initial_{key}"] = value
        if person.company_id:
            props["company_id"] = [person.company_id]
        if person.transactions:
            props["$transactions"] = [{"$time": iso(t), "$amount": a} for t, a in person.transactions]
            props["Lifetime Revenue"] = round(person.revenue, 2)
        distinct: Any = int(person.user_id) if person.short_id else person.user_id
        yield {"$distinct_id": distinct, "$properties": props}


def profile_property_types() -> dict[str, str]:
    return {"$created": "string", "$last_seen": "string", "$email": "string", "$name": "string",
            "$first_name": "string", "$last_name": "string", "$phone": "string", "$city": "string",
            "$region": "string", "$country_code": "string", "$timezone": "string", "plan": "string",
            "industry": "string", "company_id": "array", "$transactions": "array",
            "Lifetime Revenue": "number", "$initial_referrer": "string",
            "$initial_referring_domain": "string"}


def group_profiles(people: list[Person], start_ms: int) -> Iterator[dict[str, Any]]:
    members: dict[str, int] = {}
    for person in people:
        if person.company_id and person.event_count:
            members[person.company_id] = members.get(person.company_id, 0) + 1
    for company, count in sorted(members.items()):
        number = int(company[2:])
        yield {"$group_key": "company_id", "$group_id": company, "$properties": {
            "$name": f"Company {number}", "$created": iso(start_ms - (number % 700 + 30) * 86_400_000),
            "industry": _GROUP_INDUSTRY[number % len(_GROUP_INDUSTRY)],
            "employees": 5 + (number * 37) % 2000, "plan": ("starter", "pro", "enterprise")[number % 3],
            "seats_used": count,
        }}


def identity_mappings(people: list[Person], id_merge: str) -> Iterator[dict[str, str]]:
    for person in people:
        if person.user_id is None or person.event_count == 0:
            continue
        for use in person.uses:
            if use.shared_guest or use.device.owner != person.index:
                continue
            yield {"distinct_id": anonymous_distinct_id(use.device.device_id, id_merge),
                   "resolved_distinct_id": person.user_id}
        for other in (person.alias, person.legacy_id):
            if other:
                yield {"distinct_id": other, "resolved_distinct_id": person.user_id}
