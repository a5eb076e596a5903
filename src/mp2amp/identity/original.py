"""Original ID Merge: clusters built from identity events and export evidence.

Pass 1 collects distinct links ``(kind, a, role_a, b, role_b) -> earliest time`` (a dict,
or SQLite table ``edges`` past the memory budget). ``finish()`` numbers the IDs, applies
the links in (time, kind, IDs) order, INFERRED evidence last, with Mixpanel's rules (see
``unionfind``), picks each cluster's user_id (an ID is anonymous only by a link applied:
a refused $identify does not make its user one) and keeps ``ID -> user`` (dict, or SQLite
table ``resolved``) and the shared devices: those a second user's link to was refused,
unless a later link joined the two (a set, or SQLite table ``shared``: as many as there
are, at any size; the refused pairs are checked once every link is applied).

An ID named as a user (``$user_id``, ``$identified_id``) by a record that links it to
nothing is kept too, as a node ``ID -> (roles, earliest time)`` (a dict, or SQLite table
``users``): one entry per such ID. Without it a UUID user ID's events that name it only as
``distinct_id`` would look anonymous (the predicate rejects UUIDs) and become a device.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mp2amp.identity.clustered import MISSING, resolve_clustered
from mp2amp.identity.ids import before_identity, distinct_id, event_seconds
from mp2amp.identity.junk import DEVICE_PREFIX, clean_id
from mp2amp.identity.report import EXAMPLES, IdentityReport, note
from mp2amp.identity.store import BatchWriter, CachedLookup, ScratchDb, cache_entries
from mp2amp.identity.unionfind import (
    ALIAS,
    ANON,
    CANONICAL,
    DEVICE_USER,
    DIST,
    IDENTIFY,
    INFERRED,
    MERGE,
    REKEYED,
    USER,
    USER_ID,
    Clusters,
    Refusals,
    apply_links,
    choose_users,
    confirm_shared,
    count_clusters,
    mark_users,
    without_anon,
)
from mp2amp.models import Resolved

Key = tuple[int, str, int, str, int]
_UPSERT = (
    "INSERT INTO edges(kind, a, ra, b, rb, t) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(kind, a, ra, b, rb) DO UPDATE SET t = MIN(edges.t, excluded.t)"
)
_UPSERT_USER = (
    "INSERT INTO users(id, f, t) VALUES (?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET f = users.f | excluded.f, t = MIN(users.t, excluded.t)"
)
_RECENT = 16_384  # per-event write cache while spilled (bounded)


def _node(value: str | None, role: int) -> tuple[str | None, int]:
    """``$device:X`` is the device ``X`` and anonymous; other IDs keep ``role``."""
    if value is not None and value.startswith(DEVICE_PREFIX):
        return clean_id(value[8:]), ANON
    return value, role


class OriginalIds:
    def __init__(
        self,
        report: IdentityReport,
        budget: int,
        open_db: Callable[[str], ScratchDb],
        retroactive: bool,
        predicate: Callable[[str], bool],
        cap: int,
    ) -> None:
        self.report = report
        self.budget = budget
        self.open_db = open_db
        self.retroactive = retroactive
        self.predicate = predicate
        self.cap = cap
        self.edges: dict[Key, float] = {}
        self.db: ScratchDb | None = None
        self.writer: BatchWriter | None = None
        self.recent: dict[Key, float] = {}
        # IDs named as a user by a record that linked them to nothing: ID -> (roles, time)
        self.users: dict[str, tuple[int, float]] = {}
        self.user_writer: BatchWriter | None = None
        self.recent_users: dict[tuple[str, int], float] = {}
        self.user_of: dict[str, str | None] = {}
        self.lookup: CachedLookup | None = None
        self.shared: set[str] = set()  # devices a second user's link to was refused

    # --- pass 1 ------------------------------------------------------------------

    def observe(self, props: dict[str, Any], event: Any, seconds: float | None = None) -> None:
        t = event_seconds(props) if seconds is None else seconds  # UTC, when staging knows
        add = self.add
        if event == "$identify":
            # distinct_id(): a hot-shard record blanks distinct_id, keeping it elsewhere
            user = clean_id(props.get("$identified_id")) or distinct_id(props)
            anon = clean_id(props.get("$anon_id")) or clean_id(props.get("$anon_distinct_id"))
            anon_node = _node(anon, ANON)
            # no anonymous side: a user all the same; "identify D as D" names a device
            if not add(IDENTIFY, *_node(user, USER), *anon_node, t) and anon_node[0] is None:
                self.name_user(*_node(user, USER), t)
        elif event == "$create_alias":
            alias, original = clean_id(props.get("alias")), distinct_id(props)
            add(ALIAS, *_node(alias, USER), *_node(original, 0), t)
        elif event == "$merge":
            listed = props.get("$distinct_ids")
            if isinstance(listed, list):
                ids = [_node(clean_id(v), 0) for v in listed]
                ids = [pair for pair in ids if pair[0] is not None]
                for other in ids[1:]:
                    add(MERGE, *ids[0], *other, t)
        user = clean_id(props.get("$user_id"))
        device = clean_id(props.get("$device_id"))
        linked = False
        if user is not None and device is not None:
            linked = add(DEVICE_USER, *_node(user, USER | USER_ID), *_node(device, ANON), t)
        if event not in ("$identify", "$create_alias", "$merge"):
            linked = self._export_evidence(props, user, device, t) or linked
        if user is not None and not linked and user != device:
            # a user all the same: its events naming it only as distinct_id are its own (a
            # record naming one ID as both user and device names a device)
            self.name_user(*_node(user, USER | USER_ID), t)

    def _export_evidence(self, props: dict[str, Any], user: str | None, device: str | None,
                         t: float) -> bool:
        """The links an ordinary event's distinct_id gives; True if one names ``user``."""
        dist = distinct_id(props)
        if dist is None:
            return False
        add = self.add
        before = before_identity(props)
        if before is not None and before != dist:
            add(CANONICAL, *_node(dist, 0), *_node(before, 0), t)
        if dist.startswith(DEVICE_PREFIX) or dist == device:
            return False
        # Exports re-key events to the cluster's canonical distinct_id: evidence of a merge,
        # unless it would join two users: a server-side event of one user naming another's
        # device (DIST: a user-like distinct_id counts as a user beside a device).
        if user is not None:
            if user != dist:
                return add(INFERRED, dist, REKEYED, *_node(user, USER | USER_ID), t)
        elif device is not None:
            add(INFERRED, dist, DIST, *_node(device, ANON), t)
        return False

    def add(self, kind: int, a: str | None, ra: int, b: str | None, rb: int, t: float) -> bool:
        """Record a link; False when there is none (an ID missing, or both the same)."""
        if a is None or b is None or a == b:
            return False
        key = (kind, a, ra, b, rb)
        if self.writer is not None:
            seen = self.recent.get(key)
            if seen is not None and seen <= t:
                return True
            if len(self.recent) >= _RECENT:
                self.recent.clear()
            self.recent[key] = t
            self.writer.add((*key, t))
            return True
        edges = self.edges
        current = edges.get(key)
        if current is None:
            edges[key] = t
            if 2 * len(edges) + len(self.users) > self.budget:
                self.spill()
        elif t < current:
            edges[key] = t
        return True

    def name_user(self, name: str | None, role: int, t: float) -> None:
        """Keep ``name`` as a user node (a ``$device:`` ID, anonymous by ``_node``, is not)."""
        if name is None or role & ANON:
            return
        if self.user_writer is not None:
            key = (name, role)
            seen = self.recent_users.get(key)
            if seen is not None and seen <= t:
                return
            if len(self.recent_users) >= _RECENT:
                self.recent_users.clear()
            self.recent_users[key] = t
            self.user_writer.add((name, role, t))
            return
        users = self.users
        current = users.get(name)
        if current is None:
            users[name] = (role, t)
            if 2 * len(self.edges) + len(users) > self.budget:
                self.spill()
        elif current[0] | role != current[0] or t < current[1]:
            users[name] = (current[0] | role, min(current[1], t))

    def spill(self) -> None:
        db = self.open_db("original")
        db.script(
            "CREATE TABLE edges(kind INTEGER NOT NULL, a TEXT NOT NULL, ra INTEGER NOT NULL, "
            "b TEXT NOT NULL, rb INTEGER NOT NULL, t REAL NOT NULL, "
            "PRIMARY KEY(kind, a, ra, b, rb)) WITHOUT ROWID;"
            "CREATE TABLE users(id TEXT PRIMARY KEY, f INTEGER NOT NULL, t REAL NOT NULL) "
            "WITHOUT ROWID"
        )
        self.writer = BatchWriter(db, _UPSERT)
        for key, t in self.edges.items():
            self.writer.add((*key, t))
        self.writer.flush()
        self.user_writer = BatchWriter(db, _UPSERT_USER)
        for name, (role, t) in self.users.items():
            self.user_writer.add((name, role, t))
        self.user_writer.flush()
        self.db = db
        self.edges = {}
        self.users = {}
        self.report.spilled = True

    # --- finish -----------------------------------------------------------------------

    def finish(self) -> None:
        if self.writer is not None and self.db is not None:
            self.writer.flush()
            if self.user_writer is not None:
                self.user_writer.flush()
            self.recent = {}
            self.recent_users = {}
            self._finish_spilled(self.db)
        else:
            self._finish_in_memory()

    def _finish_in_memory(self) -> None:
        roles: dict[str, tuple[int, float]] = {}
        for (_, a, ra, b, rb), t in self.edges.items():
            for name, role in ((a, ra), (b, rb)):
                seen = roles.get(name)
                roles[name] = (role, t) if seen is None else (seen[0] | role, min(seen[1], t))
        for name, (role, t) in self.users.items():
            seen = roles.get(name)
            roles[name] = (role, t) if seen is None else (seen[0] | role, min(seen[1], t))
        names = sorted(roles)
        index = {name: i for i, name in enumerate(names)}
        flags = bytearray([roles[name][0] for name in names])
        first_seen = array("d", [roles[name][1] for name in names])
        ordered = sorted(self.edges.items(), key=_link_order)
        links = _links_by_index(ordered, index)
        clusters = Clusters(flags, self.cap)
        mark_users(clusters, enumerate(names), flags, self.predicate)
        ranked = without_anon(flags)
        refusals = Refusals()
        apply_links(clusters, links, self.report, names.__getitem__, ranked, refusals.add)
        marked = bytearray(len(names))
        confirm_shared(clusters, refusals, marked)
        shared = list(_marked_names(marked, names))  # sorted, as ``names``
        self.shared = set(shared)
        _report_shared(self.report, len(shared), shared[:EXAMPLES])
        best = choose_users(clusters, enumerate(names), ranked, first_seen, self.predicate)
        count_clusters(clusters, best, self.report)
        find = clusters.find
        user_of: dict[str, str | None] = {}
        for i, name in enumerate(names):
            chosen = best[find(i)]
            user_of[name] = names[chosen] if chosen >= 0 else None
        self.report.links = len(self.edges)
        self.report.ids = len(names)
        self.user_of = user_of
        self.edges = {}
        self.users = {}

    def _finish_spilled(self, db: ScratchDb) -> None:
        db.script(
            "CREATE TABLE ids(idx INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
            "flags INTEGER NOT NULL, t REAL NOT NULL);"
            "INSERT INTO ids(id, flags, t) "
            "SELECT id, MAX(f & 1) | MAX(f & 2) | MAX(f & 4) | MAX(f & 8) | MAX(f & 16), "
            "MIN(t) FROM "
            "(SELECT a AS id, ra AS f, t FROM edges UNION ALL SELECT b, rb, t FROM edges "
            "UNION ALL SELECT id, f, t FROM users) "
            "GROUP BY id ORDER BY id;"
            "DROP TABLE users;"
        )
        counts = db.one("SELECT (SELECT COUNT(*) FROM ids), (SELECT COUNT(*) FROM edges)")
        assert counts is not None
        n = int(counts[0])
        flags = bytearray(n)
        first_seen = array("d", bytes(8 * n))
        for idx, f, t in db.rows("SELECT idx, flags, t FROM ids"):
            flags[idx - 1] = f
            first_seen[idx - 1] = t
        clusters = Clusters(flags, self.cap)
        mark_users(clusters, _spilled_names(db.rows(
            f"SELECT idx, id FROM ids WHERE flags & {DIST} AND NOT flags & {USER | REKEYED}")),
            flags, self.predicate)
        # as _link_order: INFERRED evidence last
        links = _spilled_links(db.rows(
            "SELECT e.kind, ia.idx, e.ra, ib.idx, e.rb FROM edges e JOIN ids ia ON ia.id = e.a "
            f"JOIN ids ib ON ib.id = e.b ORDER BY e.kind = {INFERRED}, e.t, e.kind, e.a, e.ra, "
            "e.b, e.rb"))

        def name_of(i: int) -> str:
            row = db.one("SELECT id FROM ids WHERE idx = ?", (i + 1,))
            return str(row[0]) if row else "?"

        ranked = without_anon(flags)
        db.script("CREATE TEMP TABLE refused(device INTEGER NOT NULL, other INTEGER NOT NULL)")
        refused = BatchWriter(db, "INSERT INTO refused(device, other) VALUES (?, ?)")

        def refuse(device: int, other: int) -> None:
            refused.add((device, other))

        apply_links(clusters, links, self.report, name_of, ranked, refuse)
        refused.flush()
        marked = bytearray(n)
        confirm_shared(clusters, db.rows("SELECT device, other FROM refused"), marked)
        db.script("DROP TABLE refused")
        _store_shared(db, marked, self.report)
        names = _spilled_names(db.rows("SELECT idx, id FROM ids ORDER BY idx"))
        best = choose_users(clusters, names, ranked, first_seen, self.predicate)
        count_clusters(clusters, best, self.report)
        db.script("CREATE TEMP TABLE pick(idx INTEGER PRIMARY KEY, best INTEGER)")
        writer = BatchWriter(db, "INSERT INTO pick(idx, best) VALUES (?, ?)")
        find = clusters.find
        for i in range(n):
            chosen = best[find(i)]
            writer.add((i + 1, chosen + 1 if chosen >= 0 else None))
        writer.flush()
        db.script(
            "CREATE TABLE resolved(id TEXT PRIMARY KEY, user TEXT) WITHOUT ROWID;"
            "INSERT INTO resolved(id, user) SELECT i.id, u.id FROM pick p "
            "JOIN ids i ON i.idx = p.idx LEFT JOIN ids u ON u.idx = p.best ORDER BY i.id;"
            "DROP TABLE pick;"
        )
        self.report.links = int(counts[1])
        self.report.ids = self.report.ids_spilled = n
        self.lookup = CachedLookup(db, "SELECT user FROM resolved WHERE id = ?",
                                   cache_entries(self.budget))

    # --- pass 2 -----------------------------------------------------------------------

    def get(self, key: str) -> Any:
        if self.lookup is not None:
            return self.lookup.get(key, MISSING)
        return self.user_of.get(key, MISSING)

    def is_shared(self, device: str) -> bool:
        """Whether a link of ``device`` to a second user was refused (it keeps its first)."""
        if self.lookup is not None and self.db is not None:
            return self.db.one("SELECT 1 FROM shared WHERE id = ?", (device,)) is not None
        return device in self.shared

    def resolve(self, props: dict[str, Any]) -> Resolved:
        resolved = resolve_clustered(props, self.get, self.predicate, self.retroactive, False)
        assert resolved is not None
        return resolved


# Generator functions, not generator expressions: mypyc turns a generator expression into a
# list, and the spilled ones stream every link or ID of a graph that does not fit in memory.
def _link_order(item: tuple[Key, float]) -> tuple[bool, float, Key]:
    """(time, kind, IDs), INFERRED evidence after every other link: a server-side event
    naming a device before its user's $identify must not take the device from him."""
    key, t = item
    return key[0] == INFERRED, t, key


def _links_by_index(ordered: list[tuple[Key, float]],
                    index: dict[str, int]) -> Iterator[tuple[int, int, int, int, int]]:
    for key, _ in ordered:
        yield key[0], index[key[1]], key[2], index[key[3]], key[4]


def _spilled_links(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, int, int, int, int]]:
    for kind, a, ra, b, rb in rows:  # SQLite's idx is 1-based
        yield kind, a - 1, ra, b - 1, rb


def _spilled_names(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, str]]:
    for idx, name in rows:
        yield idx - 1, name


def _marked_names(marked: bytearray, names: list[str]) -> Iterator[str]:
    for i, name in enumerate(names):
        if marked[i]:
            yield name


def _store_shared(db: ScratchDb, marked: bytearray, report: IdentityReport) -> None:
    """Table ``shared``: the marked IDs by name, for ``is_shared``, and their report."""
    db.script("CREATE TEMP TABLE marked(idx INTEGER PRIMARY KEY)")
    writer = BatchWriter(db, "INSERT INTO marked(idx) VALUES (?)")
    for i in range(len(marked)):  # (mypyc: no enumerate over a bytearray)
        if marked[i]:
            writer.add((i + 1,))
    writer.flush()
    db.script(
        "CREATE TABLE shared(id TEXT PRIMARY KEY) WITHOUT ROWID;"
        "INSERT INTO shared(id) SELECT i.id FROM marked m JOIN ids i ON i.idx = m.idx "
        "ORDER BY i.id;"
        "DROP TABLE marked;"
    )
    row = db.one("SELECT COUNT(*) FROM shared")
    examples = db.rows(f"SELECT id FROM shared ORDER BY id LIMIT {EXAMPLES}")
    _report_shared(report, int(row[0]) if row is not None else 0,
                   [str(device) for device, in examples])


def _report_shared(report: IdentityReport, count: int, examples: list[str]) -> None:
    """As Simplified ID Merge reports its shared devices: a count and the first few."""
    report.shared_devices = count
    for device in examples:
        note(report.shared_device_examples, device)
