"""The cast: persons, their devices, sign-up and login days, shared devices.

Planned up front (memory is per person, never per event) so that the ground truth is
known before a single event is written:

* ``visitor`` (35 %): one device, browses anonymously, never identifies;
* ``new`` (35 %): browses anonymously on device 0, signs up on ``signup_day`` (that
  session's sign-up event is the first time ``$user_id`` and ``$device_id`` appear
  together), later logs in on 0-2 more devices;
* ``existing`` (30 %): identified before the window; every device is logged in.

Shared devices (about 20 % of new persons whose first device is an iPhone or iPad): the owner signs up on it
first; on a strictly later day another identified person logs in on the same device
(iOS IDFV device ids survive ``reset()``), logs out, and the device goes on anonymously.
Those anonymous events belong to the owner (see truth.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random
from typing import Any

from mp2amp.generate import ids
from mp2amp.generate.platforms import IOS, WEB, Geo, pick_geo, pick_platform

VISITOR, NEW, EXISTING = "visitor", "new", "existing"
PLANS = ("free", "starter", "pro", "business")
UTM: tuple[tuple[dict[str, str], str, str], ...] = (
    ({"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand_search"}, "https://www.google.com/", "www.google.com"),
    ({"utm_source": "facebook", "utm_medium": "paid_social", "utm_campaign": "spring_sale"}, "https://m.facebook.com/", "m.facebook.com"),
    ({"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "weekly_digest"}, "$direct", "$direct"),
    ({}, "$direct", "$direct"),
    ({}, "https://www.bing.com/", "www.bing.com"),
    ({}, "https://news.ycombinator.com/", "news.ycombinator.com"),
)

# the super properties of each acquisition channel, one shared (read-only) dict per channel:
# persons point at them, and the emitter serializes each once
SUPER_PROPS: tuple[dict[str, Any], ...] = tuple(
    {"$initial_referrer": referrer, "$initial_referring_domain": domain, **utm} for utm, referrer, domain in UTM
)

@dataclass(slots=True)
class Device:
    """One physical device. ``seed`` rebuilds its default properties on demand."""

    device_id: str
    platform: str
    seed: int
    owner: int | None = None        # person index of the first user identified on it
    no_insert_id: bool = False      # old iOS SDK: events without $insert_id
    json: tuple[bytes, bytes | None] | None = None  # platforms.device_json for its owner's place (shared)


@dataclass(slots=True)
class DeviceUse:
    """A person's use of a device: from which day, and on which day they log in on it."""

    device: Device
    first_day: int
    login_day: int | None           # -1: before the window; None: never
    shared_guest: bool = False      # a second user on someone else's device
    logged_in: bool = False


@dataclass(slots=True)
class Person:
    index: int
    kind: str
    industry: str
    geo: Geo
    user_id: str | None
    first_day: int
    signup_day: int | None
    activity: float
    uses: list[DeviceUse]
    super_props: dict[str, Any]     # one of SUPER_PROPS: never mutate
    company_id: str | None
    plan: str
    alias: str | None = None        # original mode: $create_alias id (server events use it)
    legacy_id: str | None = None    # original mode: a second id joined by $merge
    short_id: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # industry flow state
    last_seen_ms: int = 0
    first_seen_ms: int = 0
    transactions: list[tuple[int, float]] = field(default_factory=list)
    forced_days: frozenset[int] = frozenset()  # days with a first use or a planned login
    last_day: int = 1 << 30                    # churn: no sessions after this day (forced days aside)
    revenue: float = 0.0
    event_count: int = 0


def plan_people(rng: Random, users: int, days: int, industries: tuple[str, ...],
                id_merge: str, short_id_share: float) -> list[Person]:
    people: list[Person] = []
    companies = max(1, users // 25)
    for index in range(users):
        x = rng.random()
        kind = VISITOR if x < 0.35 else NEW if x < 0.70 else EXISTING
        industry = industries[index % len(industries)]
        geo = pick_geo(rng)
        super_props = SUPER_PROPS[int(rng.random() * len(UTM))]
        in_company = industry == "b2b" or rng.random() < 0.2
        company_id = f"c_{int(rng.random() * companies):05d}" if in_company and kind != VISITOR else None
        plan = PLANS[int(rng.random() * len(PLANS))] if kind != VISITOR else "free"
        user_id: str | None = None
        short = False
        if kind != VISITOR:
            short = rng.random() < short_id_share
            user_id = str(1 + index % 9999) if short else ids.user_id(rng, index)
        if kind == EXISTING:
            first_day, signup_day = 0, None
        elif kind == NEW:
            signup_day = int(rng.random() * days)
            first_day = max(0, signup_day - int(rng.random() * 3))
        else:
            first_day, signup_day = int(rng.random() * days), None
        activity = 0.25 + 0.6 * rng.random()
        person = Person(index, kind, industry, geo, user_id, first_day, signup_day, activity,
                        [], super_props, company_id, plan, short_id=short)
        # most anonymous visitors come for a day or three; a third of new users churn within a week
        if kind == VISITOR:
            person.last_day = first_day + int(rng.random() * rng.random() * 4)
        elif kind == NEW and rng.random() < 0.33:
            person.last_day = first_day + 1 + int(rng.random() * 7)
        _plan_devices(rng, person, days)
        if id_merge == "original" and user_id is not None:
            if rng.random() < 0.15:
                person.alias = f"alias{index}@example.org"
            if rng.random() < 0.07:
                person.legacy_id = f"legacy-{rng.getrandbits(32):08x}"
        people.append(person)
    _plan_shared_devices(rng, people, days)
    for person in people:
        person.forced_days = frozenset(
            {u.first_day for u in person.uses} | {u.login_day for u in person.uses if u.login_day is not None}
        )
    return people


def _new_device(rng: Random, platform: str) -> Device:
    device = Device(ids.device_uuid(rng, platform), platform, rng.getrandbits(48))
    device.no_insert_id = platform == IOS and rng.random() < 0.1
    return device


def _plan_devices(rng: Random, person: Person, days: int) -> None:
    if person.kind == VISITOR:
        platform = WEB if rng.random() < 0.75 else pick_platform(rng)
        person.uses.append(DeviceUse(_new_device(rng, platform), person.first_day, None))
        return
    extra = int(rng.random() * 3)  # 0-2 more devices
    if person.kind == EXISTING:
        person.uses.append(DeviceUse(_new_device(rng, pick_platform(rng)), 0, -1))
        for _ in range(extra):
            # half were already in use before the window, half are new logins during it
            day = -1 if rng.random() < 0.5 else int(rng.random() * days)
            person.uses.append(DeviceUse(_new_device(rng, pick_platform(rng)), max(day, 0), day))
    else:
        signup = person.signup_day if person.signup_day is not None else 0
        person.uses.append(DeviceUse(_new_device(rng, pick_platform(rng)), person.first_day, signup))
        for _ in range(extra):
            if signup + 1 >= days:
                break
            day = signup + 1 + int(rng.random() * (days - signup - 1))
            person.uses.append(DeviceUse(_new_device(rng, pick_platform(rng)), day, day))
    for use in person.uses:
        use.device.owner = person.index


def _plan_shared_devices(rng: Random, people: list[Person], days: int) -> None:
    identified = [p for p in people if p.user_id is not None]
    if len(identified) < 2:
        return
    for person in people:
        if person.kind != NEW or person.signup_day is None or person.signup_day + 1 >= days:
            continue
        first = person.uses[0]
        if first.device.platform != IOS or rng.random() >= 0.2:
            continue
        guest = identified[int(rng.random() * len(identified))]
        day = person.signup_day + 1 + int(rng.random() * (days - person.signup_day - 1))
        guest_since = -1 if guest.signup_day is None else guest.signup_day
        if guest is person or guest_since >= day or guest.first_day > day:
            continue  # the guest must already be identified, and not be the owner
        guest.uses.append(DeviceUse(first.device, day, day, shared_guest=True))
