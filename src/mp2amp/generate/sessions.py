"""Writing sessions as event lines: ``Emitter`` turns a session (its device, person and steps)
into Raw Export lines and truth rows; ``planner.DayPlanner`` decides which sessions run.

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
from operator import itemgetter
from random import Random
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from mp2amp.generate import dirt as dirt_mod
from mp2amp.generate import industries as ind
from mp2amp.generate.ids import InsertIds
from mp2amp.generate.people import SUPER_PROPS, Person
from mp2amp.generate.platforms import WEB, template_keys
from mp2amp.generate.profiles import MAX_TRANSACTIONS
from mp2amp.generate.schema import SchemaSampler
from mp2amp.generate.truth import Truth
from mp2amp.generate.writer import FLUSH_AT, GzipLines

_DUMPS = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
_SITE = "https://app.example.com"
_URLS: dict[str, str] = {name: _SITE + path for name, path in ind.PAGES.items()}
_HOME = _SITE + "/"
_HOME_JSON = _DUMPS(_HOME)

# "time" as JSON: web SDKs send float seconds with milliseconds, i.e. the shortest repr of
# ms / 1000, which is the decimal ms with trailing zeros cut (1704096000.5, .25, .125, .0)
_MS_FRACTION: tuple[bytes, ...] = (b".0", *[f".{ms:03d}".rstrip("0").encode() for ms in range(1, 1000)])
_NO_FRACTION: tuple[bytes, ...] = (b"",) * 1000  # mobile SDKs send whole seconds
# a spliced line: prefix, time, head, URL, tail, own properties, then the ids and stamps
_INSERT_ID = b',"$insert_id":"'
_STAMPS = b'","$mp_api_timestamp_ms":%d,"mp_processing_time_ms":%d}}\n'  # closes the insert id
_STAMPS_NO_IID = b',"$mp_api_timestamp_ms":%d,"mp_processing_time_ms":%d}}\n'
_PER_EVENT = ("time", "$current_url", "$insert_id", "$mp_api_timestamp_ms", "mp_processing_time_ms")
_IDENTITY = ("distinct_id", "$device_id", "$user_id", "plan", "company_id")
_name, _charge = itemgetter(0), itemgetter(2)
# per event name (plain dicts: the hot loop indexes them), filled by _named before a name's
# first event: the start of its line, and its page's URL as JSON (the home page by default)
_PREFIXES: dict[str, bytes] = {}
_URLS_JSON: dict[str, bytes] = {}


def _named(name: str) -> None:
    if name not in _PREFIXES:
        _PREFIXES[name] = b'{"event":' + _DUMPS(name) + b',"properties":{"time":'
        _URLS_JSON[name] = _DUMPS(_URLS[name]) if name in _URLS else _HOME_JSON


SUPER_JSON: dict[int, bytes] = {}


def super_json(props: dict[str, Any]) -> bytes:
    """``,"k":v,...`` of a person's super properties (one of the shared SUPER_PROPS dicts)."""
    found = SUPER_JSON.get(id(props))
    if found is None:
        found = _DUMPS(props)[1:-1]
        found = b"," + found if found else b""
        if any(props is shared for shared in SUPER_PROPS):  # only immortal dicts: ids stay theirs
            SUPER_JSON[id(props)] = found
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
        # id(None): an event without properties of its own
        self.web: dict[int, Piece] = {id(None): _NO_EXTRA_WEB}
        self.app: dict[int, Piece] = {id(None): _NO_EXTRA_APP}
        constants = [*ind.WEB_VIEWS.values(), *ind.SCREENS.values(), *ind.CONSTANT_EXTRAS, *ind.METHODS,
                     ind.WEB_OPENER[1], *[step[1] for step in (*ind.APP_OPENERS, *ind.AFTER_LOGOUT)]]
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
    """One session's events on one device for one user: ``head`` and ``tail`` are the JSON of
    their default properties after ``{"time":<t>`` and before the event's own properties,
    split at the ``$current_url`` value when the template has one (``url_slot``: web,
    always). ``person`` is the session's; events whose ``user`` is not theirs (a device's
    anonymous events after a guest logged out) count for ``owner``. The dict (``props()``)
    is built only when an event takes the dict path."""

    __slots__ = ("_build", "_props", "_source", "device", "head", "no_iid", "owner", "person", "plain", "row_end",
                 "short", "size", "tail", "url_slot", "user", "who")

    def __init__(self, head: bytes, tail: bytes, url_slot: bool, user: str, device: str, short: bool,
                 build: Callable[..., dict[str, Any]], source: tuple[Any, ...], person: Person, owner: Person,
                 plain: bool, no_iid: bool, size: int = 16) -> None:
        """``build(*source)`` makes ``props()``; ``plain``: ``user`` is ``person``'s."""
        self.head, self.tail, self.url_slot = head, tail, url_slot
        self.user, self.short, self.device = user, short, device
        self.row_end = f"\t{user}\t{device}\n".encode()   # event_person after the key
        self.who = user or device
        self._build, self._source = build, source
        self._props: dict[str, Any] | None = None
        self.person, self.owner, self.plain = person, owner, plain
        self.size, self.no_iid = size, no_iid

    def props(self) -> dict[str, Any]:
        if self._props is None:
            self._props = self._build(*self._source)
        return self._props


def record_activity(person: Person, t: int, charge: float) -> None:
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
        self._dirt_total = dirt.total
        self.truth = truth
        self.schema = schema
        for name in schema.done:  # the hot loop has _named the others before their first line
            _named(name)
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

    def run(self, t: int, end: int, steps: list[ind.Step], tpl: Template, protect_first: bool = False) -> int:
        """Emit ``steps`` one after another from ``t`` on (the last event's time is
        returned; none is at or after ``end``), all on ``tpl`` (whose user they belong to);
        with ``protect_first`` the first is never dirtied.

        Per event everything stays in locals: ids are cut from the id block here, lines go
        to the day file's buffer (flushed once per run), truth gets keys and instants once
        per run (and before any dict-path event, so ``event_person`` keeps file order).
        """
        rnd, schema, tables = self._rnd, self.schema, self.tables
        out = self.out
        assert out is not None
        pending = out.pending
        base_lines = out.lines   # lines before keys[0]: a line's number is base + its index + 1
        web, size, no_iid = tpl.url_slot, tpl.size, tpl.no_iid
        head, tail = tpl.head, tpl.tail
        ids = self.ids
        if web:
            pieces, no_extra, block, at, fractions = tables.web, _NO_EXTRA_WEB, ids.web_block, ids.web_at, _MS_FRACTION
        else:
            pieces, no_extra, block, at, fractions = tables.app, _NO_EXTRA_APP, ids.hex_block, ids.hex_at, _NO_FRACTION
        prefixes, urls, insert_id, stamps = _PREFIXES, _URLS_JSON, _INSERT_ID, _STAMPS
        room = -1 if no_iid else len(block) - size
        offset = self.offset_ms
        dirt = self._dirt_total
        done = schema.done
        keys: list[bytes] = []   # of the spliced events since steps[start]
        times: list[int] = []
        start = 0
        plain = tpl.plain
        seen = 0                 # events that went through record_activity (which counts them itself)
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
            elif no_iid:
                key = b""
                self.no_insert_id += 1
            else:  # the block is used up: the method draws the next one
                ids.seek(web, at)
                key = ids.web() if web else ids.hex(size)
                block, at = ids.cursor(web)
                room = len(block) - size
            if name not in done:  # every name comes here first: its first few events are sampled
                schema.sample(name, extra)
                _named(name)
            u = rnd()
            piece = pieces.get(id(extra))
            if piece is None:  # properties made for this event (or empty)
                piece = tables.piece(extra, web) if extra else no_extra
            if piece is not None and (u >= dirt or (protect_first and start + len(keys) == 0)):
                url, more = piece
                if url is None:
                    url = urls[name]
                if key:  # the line in pieces: the flush joins them (one copy, not two)
                    pending += (prefixes[name], b"%d%s" % (local // 1000, fractions[local % 1000]),
                                head, url, tail, more, insert_id, key, stamps % (t + delay - 59, t + delay))
                else:
                    key = b"@%s:%d" % (self._label, base_lines + len(keys) + 1)
                    pending += (prefixes[name], b"%d%s" % (local // 1000, fractions[local % 1000]),
                                head, url, tail, more, _STAMPS_NO_IID % (t + delay - 59, t + delay))
                keys.append(key)
                times.append(t)
            else:
                here = start + len(keys)
                out.lines = base_lines + len(keys)
                # the event before, for an $insert_id reused by mistake (one it has: not "@")
                prev = (keys[-1].decode(), times[-1]) if keys and keys[-1][:1] != b"@" else None
                if keys:
                    self._hand_over(keys, steps[start:here], times, tpl)
                    keys, times = [], []
                start = here + 1
                text_key = key.decode()
                self._finish(name, _props(tpl.props(), name, extra, t, local, delay, web, text_key),
                             text_key, t, tpl.user, tpl.device, u, protect_first and here == 0, tpl.short,
                             prev)
                base_lines = out.lines
            if charge or not plain:
                record_activity(tpl.person if plain else tpl.owner, t, charge)
                seen += 1
        if web:
            ids.web_at = at
        else:
            ids.hex_at = at
        out.lines = base_lines + len(keys)
        if len(pending) >= FLUSH_AT:
            out.flush()
        if keys:
            self.truth.events(keys, steps[start:] if start else steps, times, tpl.row_end, tpl.who)
            self.records += len(keys)
            if tpl.short:
                self.short_id_events += len(keys)
        tpl.person.event_count += len(steps) - seen
        self.generated += len(steps)
        return t

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
            _named(name)  # should run() ever splice this name, its pieces are there
        u = rnd()
        self._finish(name, _props(template, name, extra, t_ms, local, delay, web, key),
                     key, t_ms, user, device, u, False, short)

    def _finish(self, name: str, props: dict[str, Any], key: str, t_ms: int, user: str, device: str,
                u: float, protected: bool, short: bool, prev: tuple[str, int] | None = None) -> None:
        """Write a dict-path event: with the dirt the draw ``u`` picks, or clean. ``prev``:
        the ``$insert_id`` and instant of the event just before it on its device, if any."""
        if u < self.dirt.total and not protected:
            if self._dirty(self.dirt.pick(u), name, props, key, t_ms, user, device, prev) and short:
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
               user: str, device: str, prev: tuple[str, int] | None = None) -> bool:
        """Write ``props`` with one kind of dirt; True when the record keeps its ids."""
        counts = self.dirt.counts
        out = self.out
        assert out is not None
        line_no = out.lines + 1
        if not key:
            key = f"@{self.file_label}:{line_no}"
        if kind == dirt_mod.REUSED:
            # Mixpanel dedups on (name, distinct_id, time, $insert_id): in another second of
            # one device this is a second event to it, so the truth counts both; its
            # $insert_id keys the first, so it is keyed by its line
            if prev is None or prev[1] // 1000 == t_ms // 1000:
                self._write(name, props)  # nothing to reuse: a clean event
                self.truth.event(key, name, t_ms, user, device)
                return True
            props["$insert_id"] = prev[0]
            self._write(name, props)
            self.truth.event(f"@{self.file_label}:{line_no}", name, t_ms, user, device)
            counts[kind] += 1
            return True
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
            elif kind == dirt_mod.MEDIUM:
                dirt_mod.medium_string(props, self.rng)
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

