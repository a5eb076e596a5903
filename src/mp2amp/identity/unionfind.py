"""Union-find over numbered IDs, with Mixpanel's merge rules and the user-ID choice.

IDs are numbered 0..n-1 in sorted order, so arrays (8 bytes per ID) replace dicts of
strings and ties broken by index are ties broken by the ID text. Links are applied in a
caller-given deterministic order (time, kind, IDs), which makes the outcome independent
of the order records were read in.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator

from mp2amp.identity.report import EXAMPLES, IdentityReport, note

# Role bits an ID picks up from the links it appears in.
USER = 1  # named as the identified/user side ($identified_id, $user_id, an alias)
ANON = 2  # named as the anonymous side ($anon_id, $device_id, a $device: distinct_id)
USER_ID = 4  # carried as $user_id on events: the ID the app itself calls the user
# the distinct_id of an ordinary event naming a device (INFERRED): a user for the refusal
# when the predicate accepts it, as a server-side event names its user so; not a rank
DIST = 8
# a distinct_id on an event that also carries another $user_id: Mixpanel re-keyed it to the
# cluster's canonical ID after a merge, so it is that user's, never a second user
REKEYED = 16

# Link kinds; the number is also the tie-break order between links with the same time.
MERGE = 0  # $merge: explicit, joins anything (cap permitting)
ALIAS = 1  # $create_alias
IDENTIFY = 2  # $identify: refused when the anonymous ID already belongs to another user
CANONICAL = 3  # export evidence: $distinct_id_before_identity (or $preshuffle_distinct_id)
DEVICE_USER = 4  # an ordinary event carrying both $device_id and $user_id
INFERRED = 5  # export evidence: a distinct_id other than the event's $device_id/$user_id
# (re-keyed by a merge, or a server-side event naming a device: not proof enough to join
# two users, as only $identify/$create_alias/$merge merge people in Original ID Merge; so
# applied after every other link, never taking a device before its explicit link)
EXCLUSIVE = frozenset({IDENTIFY, DEVICE_USER, INFERRED})
KIND_NAMES = ("$merge", "$create_alias", "$identify", "canonical", "device+user",
              "distinct_id+device")

NOT_ELIGIBLE = 255


class Clusters:
    def __init__(self, flags: bytearray, cap: int) -> None:
        n = len(flags)
        self.cap = cap
        self.parent = array("q", range(n))
        self.size = array("q", [1]) * n
        # per root: does the cluster hold an ID named as a user?
        self.has_user = flags.translate(bytes([b & USER for b in range(256)]))
        # per ID, never merged: is this ID itself a user (``is_user``)? Never a device then
        self.user = bytearray(self.has_user)
        self.aliased = bytearray(n)  # IDs already made an alias: "each alias maps to one"

    def mark_user(self, i: int) -> None:
        """Count ``i`` (not yet linked) as a user for the refusal of exclusive links."""
        self.has_user[i] = USER
        self.user[i] = USER

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def link(self, kind: int, a: int, b: int) -> str:
        """Join the clusters of ``a`` and ``b``: "joined", "same", "refused" or "cap"."""
        ra, rb = self.find(a), self.find(b)
        if kind == ALIAS:  # ``a`` is the alias: Mixpanel maps an alias to one distinct_id
            if ra != rb and self.aliased[a]:
                return "refused"
            self.aliased[a] = 1
        if ra == rb:
            return "same"
        if kind in EXCLUSIVE and self.has_user[ra] and self.has_user[rb]:
            return "refused"
        size = self.size
        if size[ra] + size[rb] > self.cap:
            if kind == ALIAS:
                self.aliased[a] = 0
            return "cap"
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        size[ra] += size[rb]
        self.has_user[ra] |= self.has_user[rb]
        return "joined"


def is_user(name: str, flags: int, predicate: Callable[[str], bool]) -> bool:
    """May ``name`` hold a cluster as its user, so that an exclusive link to another user's
    cluster is refused: named as a user, or a user-like distinct_id beside another ID."""
    return bool(flags & USER) or (flags & (DIST | REKEYED) == DIST and predicate(name))


def without_anon(flags: bytearray) -> bytearray:
    """``flags`` less the ANON bit, which only applied links give back (``apply_links``)."""
    return flags.translate(bytes([b & ~ANON & 0xFF for b in range(256)]))


def apply_links(
    clusters: Clusters,
    links: Iterable[tuple[int, int, int, int, int]],
    report: IdentityReport,
    name_of: Callable[[int], str],
    ranked: bytearray,
    refused: Callable[[int, int], None] | None = None,
) -> None:
    """Apply ``(kind, a, role_a, b, role_b)`` links in the given order, reporting refusals.

    ``refused`` (if given) gets ``(device, other)`` for each link refused because both
    sides had a user: the device side of it (``device_sides``) and the ID it was refused
    to. Whether the device is shared is known only once every link is applied
    (``confirm_shared``). A refused ``$create_alias`` (the alias was taken) names one user.

    ``ranked`` (the flags the user_id choice reads) gets the roles of the links applied
    only: a refused $identify naming a user as its anonymous side leaves that user's rank.
    """
    for kind, a, ra, b, rb in links:
        outcome = clusters.link(kind, a, b)
        if outcome == "joined" or outcome == "same":
            ranked[a] |= ra
            ranked[b] |= rb
        elif outcome == "cap":
            report.cap_hits += 1
            if len(report.cap_examples) < EXAMPLES:  # skip formatting (and lookups) past it
                note(report.cap_examples, f"{name_of(a)} <-> {name_of(b)} ({KIND_NAMES[kind]})")
        elif outcome == "refused":
            report.refused_links += 1
            if refused is not None and kind in EXCLUSIVE:
                device_sides(clusters, refused, a, ra, b, rb)
            if len(report.refused_examples) < EXAMPLES:
                note(report.refused_examples, f"{name_of(a)} <-> {name_of(b)} ({KIND_NAMES[kind]})")


def device_sides(clusters: Clusters, refused: Callable[[int, int], None], a: int, ra: int,
                 b: int, rb: int) -> None:
    """Pass on the anonymous side of a refused link if it is no user itself (named as a
    user anywhere, or a user-like distinct_id of server-side events: ``is_user``), so a
    listed user is never taken for a shared device and excluded only in part."""
    if ra & ANON and not clusters.user[a]:
        refused(a, b)
    if rb & ANON and not clusters.user[b]:
        refused(b, a)


def confirm_shared(clusters: Clusters, refusals: Iterable[tuple[int, int]],
                   shared: bytearray) -> None:
    """Mark each device refused to an ID that did not end in its cluster: a later $merge,
    alias or canonical link joining the two users makes them one person, not a sharing."""
    find = clusters.find
    for device, other in refusals:
        if not shared[device] and find(device) != find(other):
            shared[device] = 1


class Refusals:
    """``(device, other)`` pairs of refused links in memory, 16 bytes each."""

    def __init__(self) -> None:
        self.pairs = array("q")

    def add(self, device: int, other: int) -> None:
        self.pairs.append(device)
        self.pairs.append(other)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pairs = self.pairs
        for k in range(0, len(pairs), 2):
            yield pairs[k], pairs[k + 1]


def rank(name: str, flags: int, predicate: Callable[[str], bool]) -> int:
    """How good a cluster's user_id this ID is: 0 best, NOT_ELIGIBLE never.

    Among IDs the predicate accepts and never used as anonymous: 0 carried as ``$user_id``,
    1 otherwise named as a user ($identified_id, alias), 2 unnamed ($merge, canonical).
    Then 3: named as a user but device-looking (UUID user IDs) and never anonymous;
    4: accepted by the predicate but also used as an anonymous ID (e-mail as $device_id).
    """
    accepted = predicate(name)
    if flags & ANON:
        return 4 if accepted else NOT_ELIGIBLE
    if accepted:
        return 0 if flags & USER_ID else 1 if flags & USER else 2
    return 3 if flags & USER else NOT_ELIGIBLE


def mark_users(
    clusters: Clusters,
    names: Iterable[tuple[int, str]],
    flags: bytearray,
    predicate: Callable[[str], bool],
) -> None:
    """Before any link: count every ID ``is_user`` accepts as a user of its cluster."""
    for i, name in names:
        if is_user(name, flags[i], predicate):
            clusters.mark_user(i)


def choose_users(
    clusters: Clusters,
    names: Iterable[tuple[int, str]],
    flags: bytearray,
    first_seen: array[float],
    predicate: Callable[[str], bool],
) -> array[int]:
    """Per root, the index of its user_id (-1: none): best rank, then earliest, then smallest."""
    n = len(flags)
    best = array("q", [-1]) * n
    best_rank = bytearray(b"\xff") * n
    find = clusters.find
    for i, name in names:
        r_i = rank(name, flags[i], predicate)
        if r_i == NOT_ELIGIBLE:
            continue
        root = find(i)
        current = best_rank[root]
        if r_i < current or (r_i == current and first_seen[i] < first_seen[best[root]]):
            best[root] = i
            best_rank[root] = r_i
    return best


def count_clusters(clusters: Clusters, best: array[int], report: IdentityReport) -> None:
    parent, size = clusters.parent, clusters.size
    for i in range(len(parent)):
        if parent[i] == i and size[i] > 1:
            report.clusters += 1
            if best[i] >= 0:
                report.clusters_with_user += 1
