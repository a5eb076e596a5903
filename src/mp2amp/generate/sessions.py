"""One person's day: sessions on their devices, anonymous browsing, sign-up, login, logout.

``Emitter.emit`` is the hot path: copy a prepared property dict, set a handful of fields,
maybe add dirt, serialize with orjson, append to the day file, tell the truth.
"""

from __future__ import annotations

from datetime import UTC, datetime
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.generate import dirt as dirt_mod
from mp2amp.generate import identity_events as ident
from mp2amp.generate import industries as ind
from mp2amp.generate.ids import InsertIds
from mp2amp.generate.people import NEW, DeviceUse, Person
from mp2amp.generate.platforms import SERVER, WEB, device_template
from mp2amp.generate.profiles import MAX_TRANSACTIONS
from mp2amp.generate.schema import SchemaSampler
from mp2amp.generate.truth import Truth
from mp2amp.generate.writer import GzipLines

_DUMPS = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
_SITE = "https://app.example.com"
_URLS: dict[str, str] = {name: _SITE + path for name, path in ind.PAGES.items()}
_HOME = _SITE + "/"
_AFTER_LOGOUT = (("App Open", {"launch_type": "warm"}), ("Screen Viewed", {"screen_name": "Login"}))


class Emitter:
    """Writes events of the current day; holds the per-run counters."""

    def __init__(self, rng: Random, id_merge: str, legacy_time: bool, tz: ZoneInfo,
                 dirt: dirt_mod.Dirt, truth: Truth, schema: SchemaSampler) -> None:
        self.rng = rng
        self.id_merge = id_merge
        self.legacy_time = legacy_time
        self.tz = tz
        self.dirt = dirt
        self.truth = truth
        self.schema = schema
        self.out: GzipLines | None = None
        self.file_label = ""
        self.offset_ms: int | None = 0   # None: the day has a DST change, compute per event
        self.records = 0
        self.identity_events = 0
        self.generated = 0
        self.server_side = 0
        self.no_insert_id = 0
        self.short_id_events = 0
        self._junk_serial = 0
        self.ids = InsertIds(rng)

    def start_day(self, out: GzipLines, label: str, start_ms: int, end_ms: int) -> None:
        self.out, self.file_label = out, label
        first = self._offset(start_ms)
        self.offset_ms = first if first == self._offset(end_ms - 1) else None

    def _offset(self, t_ms: int) -> int:
        if not self.legacy_time:
            return 0
        delta = datetime.fromtimestamp(t_ms / 1000, tz=UTC).astimezone(self.tz).utcoffset()
        return int(delta.total_seconds() * 1000) if delta is not None else 0

    def _write(self, name: str, props: dict[str, Any]) -> bytes:
        line = _DUMPS({"event": name, "properties": props}, option=_NL)
        assert self.out is not None
        self.out.write(line)
        self.records += 1
        return line

    def identity(self, name: str, props: dict[str, Any], t_ms: int, platform: str) -> None:
        """An identity record: never dirtied, never in the truth (it is no event)."""
        offset = self.offset_ms if self.offset_ms is not None else self._offset(t_ms)
        props["time"] = (t_ms + offset) / 1000 if platform == WEB else (t_ms + offset) // 1000
        if "$current_url" in props:
            props["$current_url"] = _SITE + "/login"
        props["$insert_id"] = self.ids.for_platform(platform)
        received = t_ms + 150 + int(self.rng.random() * 3000)
        props["$mp_api_timestamp_ms"] = received
        props["mp_processing_time_ms"] = received + 59
        self._write(name, props)
        self.identity_events += 1

    def emit(self, name: str, template: dict[str, Any], extra: dict[str, Any] | None, t_ms: int,
             user: str, device: str, platform: str, no_iid: bool = False,
             protected: bool = False, short: bool = False) -> None:
        rnd = self.rng.random
        props = template.copy()
        offset = self.offset_ms if self.offset_ms is not None else self._offset(t_ms)
        if platform == WEB:
            props["time"] = (t_ms + offset) / 1000
            props["$current_url"] = _URLS.get(name, _HOME)
            delay = 120 + int(rnd() * 2000)
        else:
            props["time"] = (t_ms + offset) // 1000
            delay = 500 + int(rnd() * rnd() * 3_600_000)  # mobile queues: seconds to an hour
        if extra:
            props.update(extra)
        if no_iid:
            key = ""
            self.no_insert_id += 1
        else:
            key = self.ids.web() if platform == WEB else self.ids.hex(32 if platform == SERVER else 16)
            props["$insert_id"] = key
        props["$mp_api_timestamp_ms"] = t_ms + delay - 59  # received, then processed ~60 ms later
        props["mp_processing_time_ms"] = t_ms + delay
        self.generated += 1
        if name not in self.schema.done:
            self.schema.sample(name, extra)
        out = self.out
        assert out is not None
        u = rnd()
        if u < self.dirt.total and not protected:
            if self._dirty(self.dirt.pick(u), name, props, key, t_ms, user, device) and short:
                self.short_id_events += 1
            return
        if not key:
            key = f"@{self.file_label}:{out.lines + 1}"
        out.write(_DUMPS({"event": name, "properties": props}, option=_NL))
        self.records += 1
        self.truth.event(key, name, t_ms, user, device)
        if short:
            self.short_id_events += 1

    def _dirty(self, kind: str, name: str, props: dict[str, Any], key: str, t_ms: int,
               user: str, device: str) -> bool:
        """Write ``props`` with one kind of dirt; True when the record keeps its ids."""
        counts = self.dirt.counts
        out = self.out
        assert out is not None
        line_no = out.lines + 1
        if not key:
            key = f"@{self.file_label}:{line_no}"
        if kind == dirt_mod.JUNK:
            self._junk_serial += 1
            dirt_mod.junk_ids(props, self._junk_serial)
            self._write(name, props)
            self.truth.unusable_event(key)
            counts[kind] += 1
            return False
        if kind == dirt_mod.MALFORMED:
            out.write(dirt_mod.malformed(_DUMPS({"event": name, "properties": props}, option=_NL)))
            self.records += 1
            counts[kind] += 1
            return False
        if kind == dirt_mod.SPLIT:
            out.write(dirt_mod.split(_DUMPS({"event": name, "properties": props}, option=_NL)), lines=2)
            self.records += 1
            self.truth.event(key, name, t_ms, user, device)
        else:
            original = name
            if kind == dirt_mod.HOTSHARD:
                name = dirt_mod.hotshard(name, props)
            elif kind == dirt_mod.LONG:
                dirt_mod.long_string(props, self.rng)
            elif kind == dirt_mod.DEEP:
                dirt_mod.deep_nesting(props, self.rng)
            elif kind == dirt_mod.TYPES:
                dirt_mod.type_change(props)
            line = self._write(name, props)
            if kind == dirt_mod.DUPLICATES:
                out.write(line)
                self.records += 1
            self.truth.event(key, original, t_ms, user, device)
        counts[kind] += 1
        return True


class DayPlanner:
    """Runs the sessions of one person on one day."""

    def __init__(self, emitter: Emitter, people: list[Person], id_merge: str) -> None:
        self.em = emitter
        self.rng = emitter.rng
        self.people = people
        self.id_merge = id_merge

    @staticmethod
    def _forced(person: Person, day: int) -> list[DeviceUse]:
        """Device uses that must have a session today: first use, or the planned login."""
        return [u for u in person.uses
                if (u.first_day == day or u.login_day == day) and not u.logged_in]

    def active(self, person: Person, day: int) -> bool:
        if day < person.first_day:
            return False
        if day == person.first_day or day in person.forced_days:
            return True
        return day <= person.last_day and self.rng.random() < person.activity

    def run_day(self, person: Person, day: int, start_ms: int, end_ms: int) -> None:
        rnd = self.rng.random
        forced = self._forced(person, day) if day in person.forced_days else []
        usable = [u for u in person.uses if u.first_day <= day and not u.shared_guest]
        sessions = max(len(forced), 1 + (rnd() < 0.35) + (rnd() < 0.1))
        t = start_ms + 7 * 3_600_000 + int(rnd() * 10 * 3_600_000)
        for number in range(sessions):
            use = forced[number] if number < len(forced) else usable[int(rnd() * len(usable))]
            if t >= end_ms - 3_600_000 and number >= len(forced):
                break
            t = self.session(person, use, day, min(t, end_ms - 3_600_000), end_ms)
            t += 600_000 + int(rnd() * 7_200_000)

    def _templates(self, person: Person, use: DeviceUse) -> tuple[dict[str, Any], dict[str, Any]]:
        device = use.device
        owner = self.people[device.owner] if device.owner is not None else person
        base = device_template(device.seed, device.platform, owner.geo)
        if device.platform == WEB:
            base.update(owner.super_props)
        anon = dict(base)
        anon["distinct_id"] = ident.anonymous_distinct_id(device.device_id, self.id_merge)
        anon["$device_id"] = device.device_id
        known = dict(base)
        if person.user_id is not None:
            known["distinct_id"] = person.user_id
            known["$device_id"] = device.device_id
            known["$user_id"] = person.user_id
            known["plan"] = person.plan
            if person.company_id:
                # mixpanel-js set_group registers a list; the mobile SDKs a plain value
                known["company_id"] = [person.company_id] if device.platform == WEB else person.company_id
        return anon, known

    def session(self, person: Person, use: DeviceUse, day: int, t: int, end_ms: int) -> int:
        end = self._session(person, use, day, t, end_ms)
        person.last_seen_ms = max(person.last_seen_ms, end)
        return end

    def _session(self, person: Person, use: DeviceUse, day: int, t: int, end_ms: int) -> int:
        rng, rnd, em = self.rng, self.rng.random, self.em
        device = use.device
        platform, dev_id = device.platform, device.device_id
        anon, known = self._templates(person, use)
        owner = self.people[device.owner] if device.owner is not None else person
        owner_uid = owner.user_id or ""
        uid = person.user_id or ""
        no_iid = device.no_insert_id
        web = platform == WEB
        short_ids = person.short_id
        if not person.first_seen_ms:
            person.first_seen_ms = t + 2000  # the session's first event comes 2 s or more later
        industry = person.industry

        def step(name: str, tmpl: dict[str, Any], extra: dict[str, Any] | None, user: str,
                 charge: float = 0.0, protected: bool = False) -> None:
            nonlocal t
            t += 2000 + int(rnd() * rnd() * 240_000)
            if t >= end_ms:
                t = end_ms - 1
            em.emit(name, tmpl, extra, t, user, dev_id, platform, no_iid, protected,
                    short_ids and tmpl is known)
            if charge or user != uid:
                self._seen(person if user == uid else owner, t, charge)
            else:
                person.event_count += 1

        opener = ("$mp_web_page_view", {"current_page_title": "Home", "current_url_path": "/"}) \
            if platform == WEB else ("App Open", {"launch_type": "cold" if rnd() < 0.3 else "warm"})
        login_now = not use.logged_in and (use.login_day == day or use.shared_guest)
        if use.login_day == -1:
            use.logged_in = True
        if use.logged_in and not use.shared_guest:
            step(opener[0], known, opener[1], uid)
            self._identity_extras(person, t, end_ms)
            for name, extra, charge in ind.with_views(rng, ind.identified_session(rng, industry, person.state), web):
                step(name, known, extra, uid, charge)
            self._server_side(person, t, end_ms)
            return t
        step(opener[0], anon, opener[1], owner_uid)
        if not login_now:
            for name, extra, charge in ind.with_views(rng, ind.anonymous_session(rng, industry), web):
                step(name, anon, extra, owner_uid, charge)
            return t
        signup = person.kind == NEW and use is person.uses[0]
        if signup:
            for name, extra, charge in ind.anonymous_session(rng, industry)[:3]:
                step(name, anon, extra, owner_uid, charge)
        if self.id_merge == "original":
            t = min(t + 500, end_ms - 1)  # identity records stay inside their day file
            if platform != WEB and rnd() < 0.2:
                props = ident.http_identify(uid, dev_id)  # a backend calls /track for it
            else:
                props = ident.sdk_identify(anon, uid, anon["distinct_id"], dev_id)
            em.identity("$identify", props, t, platform)
        if signup:
            step(ind.SIGNUP_EVENT[industry], known, {"signup_method": "email" if rnd() < 0.6 else "google"},
                 uid, protected=True)
            for name, extra, charge in ind.signup_steps(rng, industry, person.state):
                step(name, known, extra, uid, charge)
        else:
            step("Logged In", known, {"login_method": "password" if rnd() < 0.7 else "sso"}, uid, protected=True)
        self._identity_extras(person, t, end_ms)
        for name, extra, charge in ind.with_views(rng, ind.identified_session(rng, industry, person.state), web):
            step(name, known, extra, uid, charge)
        if use.shared_guest:
            step("Logged Out", known, None, uid)
            for name, extra in _AFTER_LOGOUT[: 1 + int(rnd() * 2)]:
                step(name, anon, extra, owner_uid)
        else:
            use.logged_in = True
        self._server_side(person, t, end_ms)
        return t

    def _identity_extras(self, person: Person, t: int, end_ms: int) -> None:
        """Original ID merge: ``$create_alias`` / ``$merge`` once, in the first identified session."""
        if self.id_merge != "original" or person.user_id is None or person.state.get("linked"):
            return
        person.state["linked"] = True
        if person.alias:
            self.em.identity("$create_alias", ident.create_alias(person.user_id, person.alias),
                             min(t + 300, end_ms - 1), SERVER)
        if person.legacy_id:
            self.em.identity("$merge", ident.merge(person.user_id, person.legacy_id),
                             min(t + 600, end_ms - 1), SERVER)

    def _server_side(self, person: Person, t: int, end_ms: int) -> None:
        found = ind.server_event(self.rng, person.industry, person.state)
        if found is None or person.user_id is None:
            return
        name, extra, charge = found
        distinct = person.user_id
        if person.state.get("linked") and self.rng.random() < 0.6:
            distinct = person.alias or person.legacy_id or person.user_id
        tmpl = {"time": 0, "distinct_id": distinct, "$import": True, "$lib_version": "4.10.1",
                "$mp_api_endpoint": "api.mixpanel.com", "mp_lib": "python"}
        t_ms = min(t + 60_000 + int(self.rng.random() * 540_000), end_ms - 1)
        self.em.emit(name, tmpl, extra, t_ms, person.user_id, "", SERVER, short=person.short_id)
        self.em.server_side += 1
        self._seen(person, t_ms, charge)

    @staticmethod
    def _seen(person: Person, t: int, charge: float) -> None:
        if not person.first_seen_ms:
            person.first_seen_ms = t
        person.last_seen_ms = max(person.last_seen_ms, t)
        person.event_count += 1
        if charge:
            person.revenue += charge
            person.transactions.append((t, charge))
            if len(person.transactions) > MAX_TRANSACTIONS:
                del person.transactions[0]
