"""The identity stage: who each Mixpanel event belongs to, as Amplitude user_id/device_id.

It runs before the transform, in two passes over the same records::

    graph = IdentityGraph("simplified", workdir)
    for record in records: graph.observe(record)      # pass 1 (True: identity record)
    report = graph.finish()
    for record in records: ids = graph.resolve(record["properties"])   # pass 2

IDs. Junk and blocklisted values (``junk.JUNK_IDS``: Amplitude's blocklist plus SDK junk
such as "undefined", "[object Object]", all-zero IDs) count as absent. IDs shorter than 5
characters are kept (the loader sends ``min_id_length``). Integers become text. A lone
surrogate (an emoji cut in half by an SDK's length limit) becomes U+FFFD: such text can be
neither sent as JSON nor spilled to SQLite. A hot-shard event (``$hotshard_events``) counts
as the event named in its ``mp_original_event_name`` (an ``$identify`` still merges).

Simplified ID Merge (``mode="simplified"``), as Mixpanel documents it:

* An event with ``$user_id`` belongs to that user. Otherwise a non-``$device:``
  ``distinct_id`` that differs from ``$device_id`` is a user ID (backward compatibility,
  and exports re-key a linked device's events to its user). An export row whose
  ``$distinct_id_before_identity`` (or ``$preshuffle_distinct_id``, as some reshuffled
  copies name it) is a ``$device:`` ID (or its ``$device_id``) was re-keyed
  from the device: it is the device's anonymous event (device kept; no user_id with
  ``retroactive=False``).
* A device is ``$device_id``, or the ``X`` of a ``distinct_id`` ``$device:X``.
* A device joins the FIRST user it is seen with on one event (earliest ``time``; ties to
  the smallest user ID): a later user on a shared device does not take its history.
  Shared devices are counted in the report. ``$identify``/``$create_alias``/``$merge``
  are ignored for linking, as in Mixpanel.
* ``retroactive=True`` (default): a device's anonymous events carry its user's user_id,
  as Mixpanel (and Amplitude, for events sent after the link) attribute them. With
  ``retroactive=False`` anonymous events carry only their device_id.

Original ID Merge (``mode="original"``): a union-find over distinct IDs, fed by

* ``$identify``: ``$identified_id`` + ``$anon_id`` (HTTP API names), or the JS SDK's
  ``distinct_id`` + ``$anon_distinct_id``; refused, like Mixpanel, when the anonymous ID is
  already merged with another identified user (so shared devices keep their first user).
  Mixpanel's "``$anon_id`` must be a UUIDv4" check is deliberately not applied: mixpanel-js
  cookie IDs and ``$device:`` IDs are anonymous IDs too, and dropping their merges would
  lose the very history a migration is for;
* ``$create_alias``: ``alias`` + ``distinct_id``; an alias maps to one distinct_id, as in
  Mixpanel: a second alias of the same name to another cluster is refused;
  ``$merge``: every ID of ``$distinct_ids``;
* ordinary events: ``$device_id`` + ``$user_id`` (refused like ``$identify``), and export
  evidence that Mixpanel already merged: ``$distinct_id_before_identity`` (or
  ``$preshuffle_distinct_id``) vs ``distinct_id``, and a re-keyed ``distinct_id`` vs ``$user_id``/``$device_id`` (refused
  like ``$identify`` when it would join two users: a server-side event for one user that
  names another's device is not a merge; a ``distinct_id`` the predicate accepts counts as
  a user beside a ``$device_id``);
* and an ID any record names as a user (``$user_id``, ``$identified_id``) is one even when
  that record links it to nothing: its events naming it only as ``distinct_id`` are its own
  (a UUID user ID too, which the predicate would take for a device), and a server-side
  event of it naming another user's device is refused as above.

Links are applied in (time, kind, IDs) order, the re-keyed ``distinct_id`` evidence after
all others (it never takes a device before, or from, its user's explicit link), so file
order does not matter. A link that
would make a cluster larger than ``cluster_cap`` (Mixpanel: 500) is refused, as Mixpanel
does, and reported (count and examples). Each cluster's user_id is chosen by
``user_id_predicate(id) -> bool`` ("may this be a user ID"; default: not device-like, i.e.
not ``$device:``, not a UUID, not a mixpanel-js cookie ID, not a 16-hex-digit Android ID with at least one letter a-f).
Roles come from the links applied: a refused ``$identify`` naming a user as its anonymous
ID does not make him "used as an anonymous ID". Among IDs never used as anonymous IDs and
accepted by the predicate: the one carried as
``$user_id`` on events first (the app's own user ID; aliases and ``$merge``d legacy IDs
resolve to it), then one otherwise named as a user (``$identified_id``, an alias), then any;
after those, an ID named as a user but device-looking (UUID user IDs), then an accepted ID
also used as an anonymous one (an e-mail as ``$device_id``). Ties go to the earliest seen,
then the smallest ID. A cluster with no such ID is anonymous: its events carry only a
device_id.

A Data Pipelines identity table (``table=``: ``{"distinct_id", "resolved_distinct_id"}``
JSON lines, optionally gzip) is authoritative: events whose IDs are in it are resolved by it
(see ``table``: in Simplified ID Merge the resolved ID is the user_id whatever it looks
like; a device resolved ID gives way to the member the graph chose as user); the others by
the graph of the chosen mode, and so is an event whose own user-like ``distinct_id`` is not
in the table (``COALESCE(resolved_distinct_id, distinct_id)``), whatever its device maps to.

Memory: state stays in dicts up to ``memory_budget_ids`` IDs, then spills to SQLite files
in ``workdir`` (``identity-*.sqlite``), with a cache in front of pass-2 lookups.

The passes are compiled with mypyc by ``make setup`` (``mp2amp.native``).
"""

from pathlib import Path

from mp2amp.native import warn_if_stale

warn_if_stale(Path(__file__).parent)

from mp2amp.identity.graph import MIXPANEL_CLUSTER_CAP, MODES, IdentityGraph  # noqa: E402
from mp2amp.identity.junk import (  # noqa: E402
    JUNK_IDS,
    clean_id,
    default_user_id_predicate,
    is_device_like,
    is_junk_id,
)
from mp2amp.identity.report import IdentityReport  # noqa: E402
from mp2amp.models import Resolved  # noqa: E402

__all__ = [
    "JUNK_IDS",
    "MIXPANEL_CLUSTER_CAP",
    "MODES",
    "IdentityGraph",
    "IdentityReport",
    "Resolved",
    "clean_id",
    "default_user_id_predicate",
    "is_device_like",
    "is_junk_id",
]
