"""One person's day: which sessions run on which devices, and the sign-up, login and
logout flows between them. ``Emitter`` (sessions.py) writes the events."""

from __future__ import annotations

from typing import Any

import orjson

from mp2amp.generate import identity_events as ident
from mp2amp.generate import industries as ind
from mp2amp.generate.people import NEW, DeviceUse, Person
from mp2amp.generate.platforms import SERVER, WEB, device_json, device_template
from mp2amp.generate.sessions import SUPER_JSON, Emitter, Template, record_activity, super_json

DUMPS = orjson.dumps
class DayPlanner:
    """Runs the sessions of one person on one day."""

    def __init__(self, emitter: Emitter, people: list[Person], id_merge: str) -> None:
        self.em = emitter
        self.rng = emitter.rng
        self.people = people
        self.id_merge = id_merge
        self.original = id_merge == "original"
        self._rnd = emitter.rng.random
        self._props_of = self._template_props
        # id of a use -> its identified (anonymous) template, for one person-day
        self._known: dict[int, Template] = {}
        self._anon: dict[int, Template] = {}

    def run(self, day: int, start_ms: int, end_ms: int) -> None:
        """Every person's sessions on ``day``: on their first day and on forced days (a
        device's first use, a planned login), else if they have not churned, with the chance
        of their activity; one to three sessions (at least one per forced use), from
        between 7:00 and 17:00 on, none starting in the day's last hour."""
        rnd, session, known, anon = self.rng.random, self._session, self._known, self._anon
        morning, last_start = start_ms + 7 * 3_600_000, end_ms - 3_600_000
        for person in self.people:
            if day < person.first_day:
                continue
            forced_day = day in person.forced_days
            if not (forced_day or day == person.first_day or (day <= person.last_day and rnd() < person.activity)):
                continue
            uses = person.uses
            forced: list[DeviceUse] = []
            if forced_day:  # uses that must have a session today: first use, or the planned login
                for u in uses:
                    if (u.first_day == day or u.login_day == day) and not u.logged_in:
                        forced.append(u)
            sessions = max(len(forced), 1 + (rnd() < 0.35) + (rnd() < 0.1))
            t = morning + int(rnd() * 10 * 3_600_000)
            usable: list[DeviceUse] | None = None
            known.clear()
            anon.clear()
            for number in range(sessions):
                if number < len(forced):
                    use = forced[number]
                else:
                    if usable is None:  # one use: in use since the person's first day, never a guest's
                        usable = uses if len(uses) == 1 else [u for u in uses if u.first_day <= day and not u.shared_guest]
                    use = usable[int(rnd() * len(usable))]
                    if t >= last_start:
                        break
                t = session(person, use, day, min(t, last_start), end_ms)
                if t > person.last_seen_ms:
                    person.last_seen_ms = t
                t += 600_000 + int(rnd() * 7_200_000)

    def _template(self, person: Person, use: DeviceUse, owner: Person, known: bool) -> Template:
        """The anonymous (``known=False``: the device's first user owns its events) or the
        identified template of a session, spliced from cached JSON pieces."""
        device = use.device
        pieces = device.json
        if pieces is None:  # the owner, so the place, is the device's for good
            pieces = device.json = device_json(device.seed, device.platform, owner.geo)
        before_url, after_url = pieces
        device_id = DUMPS(device.device_id)
        web = after_url is not None  # web templates, and only they, have a $current_url
        if not known:
            distinct = DUMPS(ident.anonymous_distinct_id(device.device_id, self.id_merge))
            ids = b',"$device_id":' + device_id
            user = owner.user_id or ""
            plain = user == (person.user_id or "")
        elif person.user_id is None:  # never used: only identified persons have sessions on it
            distinct, ids, user, plain = b'""', b"", "", True
        else:
            user, plain = person.user_id, True
            distinct = DUMPS(user)
            ids = b',"$device_id":%s,"$user_id":%s,"plan":%s' % (device_id, distinct, DUMPS(person.plan))
            if person.company_id:
                # mixpanel-js set_group registers a list; the mobile SDKs a plain value
                group: Any = [person.company_id] if web else person.company_id
                ids += b',"company_id":' + DUMPS(group)
        source = (person, use, owner, known)  # what _template_props builds the dict from
        short = known and person.short_id
        size = 32 if device.platform == SERVER else 16
        if after_url is None:
            return Template(b',"distinct_id":%s%s%s' % (distinct, before_url, ids), b"", False, user,
                            device.device_id, short, self._props_of, source, person, owner, plain,
                            device.no_insert_id, size)
        supers = owner.super_props
        return Template(b',"distinct_id":%s%s' % (distinct, before_url),
                        b"%s%s%s" % (after_url, SUPER_JSON.get(id(supers)) or super_json(supers), ids), True,
                        user, device.device_id, short, self._props_of, source, person, owner, plain,
                        device.no_insert_id, size)

    def _template_props(self, person: Person, use: DeviceUse, owner: Person, known: bool) -> dict[str, Any]:
        """``_template``'s properties as a dict, keys in the same order (the dict path)."""
        device = use.device
        props = device_template(device.seed, device.platform, owner.geo)
        if device.platform == WEB:
            props.update(owner.super_props)
        if not known:
            props["distinct_id"] = ident.anonymous_distinct_id(device.device_id, self.id_merge)
            props["$device_id"] = device.device_id
        elif person.user_id is not None:
            props["distinct_id"] = person.user_id
            props["$device_id"] = device.device_id
            props["$user_id"] = person.user_id
            props["plan"] = person.plan
            if person.company_id:
                props["company_id"] = [person.company_id] if device.platform == WEB else person.company_id
        return props

    def _session(self, person: Person, use: DeviceUse, day: int, t: int, end_ms: int) -> int:
        rng, rnd, em = self.rng, self._rnd, self.em
        device = use.device
        platform, dev_id = device.platform, device.device_id
        owner = self.people[device.owner] if device.owner is not None else person
        uid = person.user_id or ""
        web = platform == WEB
        if not person.first_seen_ms:
            person.first_seen_ms = t + 2000  # the session's first event comes 2 s or more later
        industry = person.industry
        opener = ind.WEB_OPENER if web else ind.APP_OPENERS[0] if rnd() < 0.3 else ind.APP_OPENERS[1]
        login_now = not use.logged_in and (use.login_day == day or use.shared_guest)
        if use.login_day == -1:
            use.logged_in = True
        # a session is one or a few runs: a run per template, cut where identity records go
        steps = [opener]
        if use.logged_in and not use.shared_guest:
            known = self._known.get(id(use))  # a second session on the device today: same template
            if known is None:
                known = self._known[id(use)] = self._template(person, use, owner, True)
            if self.original and person.user_id is not None and not person.state.get("linked"):
                t = em.run(t, end_ms, steps, known)  # the first identified session: links first
                self._identity_extras(person, t, end_ms)
                steps = []
            ind.with_views(rng, ind.FLOWS[industry](rng, person.state), web, steps)
            t = em.run(t, end_ms, steps, known)
            if rnd() < ind.SERVER_SHARE:  # ind.server_event's first draw
                self._server_side(person, t, end_ms)
            return t
        anon = self._anon.get(id(use))  # a second session on the device today: same template
        if anon is None:
            anon = self._anon[id(use)] = self._template(person, use, owner, False)
        if not login_now:
            ind.with_views(rng, ind.anonymous_session(rng, industry), web, steps)
            return em.run(t, end_ms, steps, anon)
        signup = person.kind == NEW and use is person.uses[0]
        if signup:
            steps += ind.anonymous_session(rng, industry)[:3]
        t = em.run(t, end_ms, steps, anon)
        if self.original:
            t = min(t + 500, end_ms - 1)  # identity records stay inside their day file
            if platform != WEB and rnd() < 0.2:
                props = ident.http_identify(uid, dev_id)  # a backend calls /track for it
            else:
                props = ident.sdk_identify(anon.props(), uid, anon.props()["distinct_id"], dev_id)
            em.identity("$identify", props, t, platform)
        known = self._known[id(use)] = self._template(person, use, owner, True)
        if signup:
            steps = [(ind.SIGNUP_EVENT[industry], ind.SIGNUP_METHODS[0] if rnd() < 0.6 else ind.SIGNUP_METHODS[1], 0.0)]
            steps += ind.signup_steps(rng, industry, person.state)
        else:
            steps = [("Logged In", ind.LOGIN_METHODS[0] if rnd() < 0.7 else ind.LOGIN_METHODS[1], 0.0)]
        protect_first = True  # the event that joins device and user is never dirtied
        if self.original and person.user_id is not None and not person.state.get("linked"):
            t = em.run(t, end_ms, steps, known, protect_first)
            self._identity_extras(person, t, end_ms)
            steps, protect_first = [], False
        ind.with_views(rng, ind.FLOWS[industry](rng, person.state), web, steps)
        if use.shared_guest:
            steps.append(("Logged Out", None, 0.0))
        t = em.run(t, end_ms, steps, known, protect_first)
        if use.shared_guest:
            t = em.run(t, end_ms, list(ind.AFTER_LOGOUT[: 1 + int(rnd() * 2)]), anon)
        else:
            use.logged_in = True
        if rnd() < ind.SERVER_SHARE:
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
        """A backend event after a session (``ind.server_event``, its first draw made)."""
        name, extra, charge = ind.backend_event(self.rng, person.industry, person.state)
        if person.user_id is None:
            return
        distinct = person.user_id
        if person.state.get("linked") and self.rng.random() < 0.6:
            distinct = person.alias or person.legacy_id or person.user_id
        tmpl = {"time": 0, "distinct_id": distinct, "$import": True, "$lib_version": "4.10.1",
                "$mp_api_endpoint": "api.mixpanel.com", "mp_lib": "python"}
        t_ms = min(t + 60_000 + int(self.rng.random() * 540_000), end_ms - 1)
        self.em.emit(name, tmpl, extra, t_ms, person.user_id, "", SERVER, short=person.short_id)
        self.em.server_side += 1
        record_activity(person, t_ms, charge)
