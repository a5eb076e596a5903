"""One person's day: sessions on their devices, anonymous browsing, sign-up, login, logout.

``Emitter.run`` is the hot path (the issue's 200k events/s leaves ~5 us per event for
everything, gzip included). A session's default properties (``Template``) are JSON
spliced once per session from cached pieces (platforms.device_json); each event line is
then that JSON around the event name, its time, its own properties (serialized once for
the module's constant ones) and ids, appended to the day file's buffer as pieces; its
truth rows are handed over once per run. Rare events (dirt, an event property that would
override a default one, server-side and identity records) take the dict path: a dict
built in the same key order and serialized by orjson, so both paths write the same bytes
for the same event (tests/generate/test_splice.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from operator import itemgetter
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.generate import dirt as dirt_mod
from mp2amp.generate import identity_events as ident
from mp2amp.generate import industries as ind
from mp2amp.generate.ids import InsertIds
from mp2amp.generate.people import NEW, SUPER_PROPS, DeviceUse, Person
from mp2amp.generate.platforms import SERVER, WEB, device_json, device_template, template_keys
from mp2amp.generate.profiles import MAX_TRANSACTIONS
from mp2amp.generate.schema import SchemaSampler
from mp2amp.generate.truth import Truth
from mp2amp.generate.writer import FLUSH_AT, GzipLines

_DUMPS = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
_SITE = "https://app.example.com"
_URLS: dict[str, str] = {name: _SITE + path for name, path in ind.PAGES.items()}
_HOME = _SITE + "/"
_URLS_JSON: dict[str, bytes] = {name: _DUMPS(url) for name, url in _URLS.items()}
_HOME_JSON = _DUMPS(_HOME)
_WEB_OPENER: ind.Step = ("$mp_web_page_view", {"current_page_title": "Home", "current_url_path": "/"}, 0.0)
_APP_OPENERS: tuple[ind.Step, ind.Step] = (("App Open", {"launch_type": "cold"}, 0.0),
                                           ("App Open", {"launch_type": "warm"}, 0.0))
_SIGNUP_METHODS = ({"signup_method": "email"}, {"signup_method": "google"})
_LOGIN_METHODS = ({"login_method": "password"}, {"login_method": "sso"})
_METHODS = (*_SIGNUP_METHODS, *_LOGIN_METHODS)
_AFTER_LOGOUT: tuple[ind.Step, ...] = (("App Open", {"launch_type": "warm"}, 0.0),
                                       ("Screen Viewed", {"screen_name": "Login"}, 0.0))

# "time" as JSON: web SDKs send float seconds with milliseconds, i.e. the shortest repr of
# ms / 1000, which is the decimal ms with trailing zeros cut (1704096000.5, .25, .125, .0)
_MS_FRACTION: tuple[bytes, ...] = (b".0", *(f".{ms:03d}".rstrip("0").encode() for ms in range(1, 1000)))
# a spliced line: prefix, time, head, URL, tail, own properties, then the ids and stamps
_INSERT_ID = b',"$insert_id":"'
_STAMPS = b'","$mp_api_timestamp_ms":%d,"mp_processing_time_ms":%d}}\n'  # closes the insert id
_STAMPS_NO_IID = b',"$mp_api_timestamp_ms":%d,"mp_processing_time_ms":%d}}\n'
_PER_EVENT = ("time", "$current_url", "$insert_id", "$mp_api_timestamp_ms", "mp_processing_time_ms")
_IDENTITY = ("distinct_id", "$device_id", "$user_id", "plan", "company_id")
_name, _charge = itemgetter(0), itemgetter(2)
_PREFIXES: dict[str, bytes] = {}         # event name -> b'{"event":"<name>","properties":{"time":'


def _prefix(name: str) -> bytes:
    prefix = _PREFIXES.get(name)
    if prefix is None:
        prefix = _PREFIXES[name] = b'{"event":' + _DUMPS(name) + b',"properties":{"time":'
    return prefix


_SUPER_JSON: dict[int, bytes] = {}


def _super_json(props: dict[str, Any]) -> bytes:
    """``,"k":v,...`` of a person's super properties (one of the shared SUPER_PROPS dicts)."""
    found = _SUPER_JSON.get(id(props))
    if found is None:
        found = _DUMPS(props)[1:-1]
        found = b"," + found if found else b""
        if any(props is shared for shared in SUPER_PROPS):  # only immortal dicts: ids stay theirs
            _SUPER_JSON[id(props)] = found
    return found


Piece = tuple[bytes | None, bytes]  # (URL as JSON: None = from the event name, b"" = none; ',"k":v...')
_NO_EXTRA_WEB: Piece = (None, b"")
_NO_EXTRA_APP: Piece = (b"", b"")


class _Tables:
    """Lookups the splice path needs, built once: every key a template can hold (an event
    property with one of these names overrides a default in place, so it takes the dict
    path), and the pieces of the module's constant event properties by ``id`` (they live
    as long as the module, so no other object can take their id)."""

    def __init__(self) -> None:
        supers = {key for props in SUPER_PROPS for key in props}
        self.defaults = frozenset(template_keys()) | supers | set(_IDENTITY) | set(_PER_EVENT)
        self.web: dict[int, Piece] = {}
        self.app: dict[int, Piece] = {}
        constants = [*ind.WEB_VIEWS.values(), *ind.SCREENS.values(), *ind.CONSTANT_EXTRAS, *_METHODS,
                     _WEB_OPENER[1], *(step[1] for step in (*_APP_OPENERS, *_AFTER_LOGOUT))]
        for extra in constants:
            if extra is None:
                continue
            url = extra.get("$current_url")
            rest = {key: value for key, value in extra.items() if key != "$current_url"}
            if not self.defaults.isdisjoint(rest):
                continue
            body = _DUMPS(rest)[1:-1]
            more = b"," + body if body else b""
            self.web[id(extra)] = (None if url is None else _DUMPS(url), more)
            if url is None:
                self.app[id(extra)] = (b"", more)

    def piece(self, extra: dict[str, Any], web: bool) -> Piece | None:
        """An event's own properties as a splice piece; None when it must take the dict path."""
        if not self.defaults.isdisjoint(extra):
            return None
        return (None if web else b"", b"," + _DUMPS(extra)[1:-1])


_TABLES: list[_Tables] = []


def _tables() -> _Tables:
    if not _TABLES:
        _TABLES.append(_Tables())
    return _TABLES[0]


class Template:
    """The default properties of one session's events for one user: ``head`` and ``tail``
    are their JSON after ``{"time":<t>`` and before the event's own properties, split at the
    ``$current_url`` value when the template has one (``url_slot``: web, always). The dict
    (``props()``) is built only when an event takes the dict path."""

    __slots__ = ("_build", "_props", "head", "row_end", "short", "tail", "url_slot", "user", "who")

    def __init__(self, head: bytes, tail: bytes, url_slot: bool, user: str, device: str, short: bool,
                 build: Callable[[], dict[str, Any]]) -> None:
        self.head, self.tail, self.url_slot = head, tail, url_slot
        self.user, self.short = user, short
        self.row_end = b"\t%s\t%s\n" % (user.encode(), device.encode())   # event_person after the key
        self.who = user or device
        self._build = build
        self._props: dict[str, Any] | None = None

    def props(self) -> dict[str, Any]:
        if self._props is None:
            self._props = self._build()
        return self._props


class Session:
    """Where and when: what every event of one session shares (``t`` advances)."""

    __slots__ = ("device", "end", "id_size", "no_iid", "owner", "person", "t", "uid", "web")

    def __init__(self, person: Person, owner: Person, device: str, platform: str, no_iid: bool,
                 t: int, end: int) -> None:
        self.person, self.owner = person, owner
        self.uid = person.user_id or ""
        self.device, self.no_iid = device, no_iid
        self.web = platform == WEB
        self.id_size = 32 if platform == SERVER else 16
        self.t, self.end = t, end


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


def _props(template: dict[str, Any], name: str, extra: dict[str, Any] | None, t_ms: int, local: int,
           delay: int, web: bool, key: str) -> dict[str, Any]:
    """An event as a dict (the dict path): the template's keys first, time and URL in place."""
    props = template.copy()
    if web:
        props["time"] = local / 1000
        props["$current_url"] = _URLS.get(name, _HOME)
    else:
        props["time"] = local // 1000
    if extra:
        props.update(extra)
    if key:
        props["$insert_id"] = key
    props["$mp_api_timestamp_ms"] = t_ms + delay - 59  # received, then processed ~60 ms later
    props["mp_processing_time_ms"] = t_ms + delay
    return props


class Emitter:
    """Writes events of the current day; holds the per-run counters."""

    def __init__(self, rng: Random, id_merge: str, legacy_time: bool, tz: ZoneInfo,
                 dirt: dirt_mod.Dirt, truth: Truth, schema: SchemaSampler) -> None:
        self.rng = rng
        self._rnd = rng.random
        self.id_merge = id_merge
        self.legacy_time = legacy_time
        self.tz = tz
        self.dirt = dirt
        self.truth = truth
        self.schema = schema
        self.tables = _tables()
        self.out: GzipLines | None = None
        self.file_label = ""
        self._label = b""
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
        self.out, self.file_label, self._label = out, label, label.encode()
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
        props["$insert_id"] = self.ids.for_platform(platform).decode()
        received = t_ms + 150 + int(self._rnd() * 3000)
        props["$mp_api_timestamp_ms"] = received
        props["mp_processing_time_ms"] = received + 59
        self._write(name, props)
        self.identity_events += 1

    def run(self, s: Session, steps: list[ind.Step], tpl: Template, protect_first: bool = False) -> None:
        """Emit ``steps`` one after another in session ``s`` (advancing ``s.t``), all on
        ``tpl`` (whose user they belong to); with ``protect_first`` the first is never dirtied.

        Per event everything stays in locals: ids are cut from the id block here, lines go
        to the day file's buffer (flushed once per run), truth gets keys and instants once
        per run (and before any dict-path event, so ``event_person`` keeps file order).
        """
        rnd, schema, tables = self._rnd, self.schema, self.tables
        out = self.out
        assert out is not None
        pending = out.pending
        base_lines = out.lines   # lines before keys[0]: a line's number is base + its index + 1
        t, end, web, size = s.t, s.end, s.web, s.id_size
        head, tail = tpl.head, tpl.tail
        pieces, no_extra = (tables.web, _NO_EXTRA_WEB) if web else (tables.app, _NO_EXTRA_APP)
        ids = self.ids
        block, at = ids.cursor(web)
        room = -1 if s.no_iid else len(block) - size
        offset = self.offset_ms
        dirt = self.dirt.total
        done = schema.done
        keys: list[bytes] = []   # of the spliced events since steps[start]
        times: list[int] = []
        start = 0
        plain = tpl.user == s.uid
        seen = 0                 # events that went through _seen (which counts them itself)
        for name, extra, charge in steps:
            t += 2000 + int(rnd() * rnd() * 240_000)
            if t >= end:
                t = end - 1
            local = t + (offset if offset is not None else self._offset(t))
            # web sends at once; mobile queues (seconds to an hour)
            delay = 120 + int(rnd() * 2000) if web else 500 + int(rnd() * rnd() * 3_600_000)
            if at <= room:
                key = block[at:at + size]
                at += size
            elif s.no_iid:
                key = b""
                self.no_insert_id += 1
            else:  # the block is used up: the method draws the next one
                ids.seek(web, at)
                key = ids.web() if web else ids.hex(size)
                block, at = ids.cursor(web)
                room = len(block) - size
            if name not in done:
                schema.sample(name, extra)
            u = rnd()
            piece = (pieces.get(id(extra)) or tables.piece(extra, web)) if extra else no_extra
            if piece is not None and (u >= dirt or (protect_first and start + len(keys) == 0)):
                url, more = piece
                if url is None:
                    url = _URLS_JSON.get(name, _HOME_JSON)
                if key:  # the line in pieces: the flush joins them (one copy, not two)
                    pending += (_PREFIXES.get(name) or _prefix(name),
                                b"%d%s" % (local // 1000, _MS_FRACTION[local % 1000] if web else b""),
                                head, url, tail, more, _INSERT_ID, key, _STAMPS % (t + delay - 59, t + delay))
                else:
                    key = b"@%s:%d" % (self._label, base_lines + len(keys) + 1)
                    pending += (_PREFIXES.get(name) or _prefix(name),
                                b"%d%s" % (local // 1000, _MS_FRACTION[local % 1000] if web else b""),
                                head, url, tail, more, _STAMPS_NO_IID % (t + delay - 59, t + delay))
                keys.append(key)
                times.append(t)
            else:
                here = start + len(keys)
                out.lines = base_lines + len(keys)
                if keys:
                    self._hand_over(keys, steps[start:here], times, tpl)
                    keys, times = [], []
                start = here + 1
                text_key = key.decode()
                self._finish(name, _props(tpl.props(), name, extra, t, local, delay, web, text_key),
                             text_key, t, tpl.user, s.device, u, protect_first and here == 0, tpl.short)
                base_lines = out.lines
            if charge or not plain:
                _seen(s.person if plain else s.owner, t, charge)
                seen += 1
        ids.seek(web, at)
        out.lines = base_lines + len(keys)
        if len(pending) >= FLUSH_AT:
            out.flush()
        if keys:
            self._hand_over(keys, steps[start:] if start else steps, times, tpl)
        s.t = t
        s.person.event_count += len(steps) - seen
        self.generated += len(steps)

    def _hand_over(self, keys: list[bytes], steps: list[ind.Step], times: list[int], tpl: Template) -> None:
        self.truth.events(keys, steps, times, tpl.row_end, tpl.who)
        self.records += len(keys)
        if tpl.short:
            self.short_id_events += len(keys)

    def emit(self, name: str, template: dict[str, Any], extra: dict[str, Any] | None, t_ms: int,
             user: str, device: str, platform: str, short: bool = False) -> None:
        """One event on the dict path (server-side events: their template is per event)."""
        rnd = self._rnd
        web = platform == WEB
        local = t_ms + (self.offset_ms if self.offset_ms is not None else self._offset(t_ms))
        delay = 120 + int(rnd() * 2000) if web else 500 + int(rnd() * rnd() * 3_600_000)
        key = self.ids.for_platform(platform).decode()
        self.generated += 1
        if name not in self.schema.done:
            self.schema.sample(name, extra)
        u = rnd()
        self._finish(name, _props(template, name, extra, t_ms, local, delay, web, key),
                     key, t_ms, user, device, u, False, short)

    def _finish(self, name: str, props: dict[str, Any], key: str, t_ms: int, user: str, device: str,
                u: float, protected: bool, short: bool) -> None:
        """Write a dict-path event: with the dirt the draw ``u`` picks, or clean."""
        if u < self.dirt.total and not protected:
            if self._dirty(self.dirt.pick(u), name, props, key, t_ms, user, device) and short:
                self.short_id_events += 1
            return
        out = self.out
        assert out is not None
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
            t = self._session(person, use, day, min(t, end_ms - 3_600_000), end_ms)
            person.last_seen_ms = max(person.last_seen_ms, t)
            t += 600_000 + int(rnd() * 7_200_000)

    def _template(self, person: Person, use: DeviceUse, owner: Person, known: bool) -> Template:
        """The anonymous (``known=False``: the device's first user owns its events) or the
        identified template of a session, spliced from cached JSON pieces."""
        device = use.device
        before_url, after_url = device_json(device.seed, device.platform, owner.geo)
        device_id = _DUMPS(device.device_id)
        if not known:
            distinct = ident.anonymous_distinct_id(device.device_id, self.id_merge)
            ids = b',"$device_id":' + device_id
            user = owner.user_id or ""
        elif person.user_id is None:  # never used: only identified persons have sessions on it
            distinct, ids, user = "", b"", ""
        else:
            distinct = user = person.user_id
            ids = b',"$device_id":%s,"$user_id":%s,"plan":%s' % (device_id, _DUMPS(user), _DUMPS(person.plan))
            if person.company_id:
                # mixpanel-js set_group registers a list; the mobile SDKs a plain value
                group: Any = [person.company_id] if device.platform == WEB else person.company_id
                ids += b',"company_id":' + _DUMPS(group)
        if device.platform == WEB:
            ids = _super_json(owner.super_props) + ids
        head = b',"distinct_id":' + _DUMPS(distinct) + before_url
        build = partial(self._template_props, person, use, owner, known)
        short = known and person.short_id
        if after_url is None:
            return Template(head + ids, b"", False, user, device.device_id, short, build)
        return Template(head, after_url + ids, True, user, device.device_id, short, build)

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
        rng, rnd, em = self.rng, self.rng.random, self.em
        device = use.device
        platform, dev_id = device.platform, device.device_id
        owner = self.people[device.owner] if device.owner is not None else person
        uid = person.user_id or ""
        web = platform == WEB
        if not person.first_seen_ms:
            person.first_seen_ms = t + 2000  # the session's first event comes 2 s or more later
        industry = person.industry
        s = Session(person, owner, dev_id, platform, device.no_insert_id, t, end_ms)
        opener = _WEB_OPENER if web else _APP_OPENERS[0] if rnd() < 0.3 else _APP_OPENERS[1]
        login_now = not use.logged_in and (use.login_day == day or use.shared_guest)
        if use.login_day == -1:
            use.logged_in = True
        # a session is one or a few runs: a run per template, cut where identity records go
        steps = [opener]
        if use.logged_in and not use.shared_guest:
            known = self._template(person, use, owner, True)
            if self._links_pending(person):
                em.run(s, steps, known)
                self._identity_extras(person, s.t, end_ms)
                steps = []
            steps += ind.with_views(rng, ind.identified_session(rng, industry, person.state), web)
            em.run(s, steps, known)
            self._server_side(person, s.t, end_ms)
            return s.t
        anon = self._template(person, use, owner, False)
        if not login_now:
            steps += ind.with_views(rng, ind.anonymous_session(rng, industry), web)
            em.run(s, steps, anon)
            return s.t
        signup = person.kind == NEW and use is person.uses[0]
        if signup:
            steps += ind.anonymous_session(rng, industry)[:3]
        em.run(s, steps, anon)
        if self.id_merge == "original":
            s.t = min(s.t + 500, end_ms - 1)  # identity records stay inside their day file
            if platform != WEB and rnd() < 0.2:
                props = ident.http_identify(uid, dev_id)  # a backend calls /track for it
            else:
                props = ident.sdk_identify(anon.props(), uid, anon.props()["distinct_id"], dev_id)
            em.identity("$identify", props, s.t, platform)
        known = self._template(person, use, owner, True)
        if signup:
            steps = [(ind.SIGNUP_EVENT[industry], _SIGNUP_METHODS[0] if rnd() < 0.6 else _SIGNUP_METHODS[1], 0.0)]
            steps += ind.signup_steps(rng, industry, person.state)
        else:
            steps = [("Logged In", _LOGIN_METHODS[0] if rnd() < 0.7 else _LOGIN_METHODS[1], 0.0)]
        protect_first = True  # the event that joins device and user is never dirtied
        if self._links_pending(person):
            em.run(s, steps, known, protect_first)
            self._identity_extras(person, s.t, end_ms)
            steps, protect_first = [], False
        steps += ind.with_views(rng, ind.identified_session(rng, industry, person.state), web)
        if use.shared_guest:
            steps.append(("Logged Out", None, 0.0))
        em.run(s, steps, known, protect_first)
        if use.shared_guest:
            em.run(s, list(_AFTER_LOGOUT[: 1 + int(rnd() * 2)]), anon)
        else:
            use.logged_in = True
        self._server_side(person, s.t, end_ms)
        return s.t

    def _links_pending(self, person: Person) -> bool:
        """Original ID merge, first identified session: ``_identity_extras`` will write."""
        return self.id_merge == "original" and person.user_id is not None and not person.state.get("linked")

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
        _seen(person, t_ms, charge)
