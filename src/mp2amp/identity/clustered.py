"""Pass 2 for cluster-based identity (original ID merge and the Data Pipelines table).

An event names up to four IDs: ``$user_id``, ``$distinct_id_before_identity`` (the ID it
was ingested with, when Mixpanel re-keyed it; some reshuffled copies name it
``$preshuffle_distinct_id``), ``distinct_id`` (the cluster's canonical ID in exports, which
may be an anonymous one) and ``$device_id``. The event's *own* ID is the ingested one when
present, else ``distinct_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mp2amp.identity.ids import before_identity, distinct_id, strip_device
from mp2amp.identity.junk import DEVICE_PREFIX, clean_id
from mp2amp.models import Resolved

MISSING: Any = object()
Lookup = Callable[[str], Any]  # ID -> cluster user (str), None (cluster has no user), MISSING


def resolve_clustered(
    props: dict[str, Any],
    get: Lookup,
    predicate: Callable[[str], bool],
    retroactive: bool,
    require_hit: bool,
) -> Resolved | None:
    """The event's Amplitude IDs; ``None`` if ``require_hit`` and no ID is in the clusters.

    * user: ``$user_id``'s cluster user (else ``$user_id`` itself); for events without one,
      the cluster user of the own ID, ``distinct_id`` or ``$device_id``, in that order; the
      own ID when it looks like a user (predicate, not ``$device:``, not equal to
      ``$device_id``) and is in no cluster: an unmapped distinct_id is its own person
      (``COALESCE(resolved_distinct_id, distinct_id)``), never its device's owner. With ``retroactive`` off, an event whose own ID does not
      look like a user is anonymous and gets no user_id.
    * device: ``$device_id``; else the ``$device:`` ID stripped; else the own ID when it is
      anonymous.
    """
    user = clean_id(props.get("$user_id"))
    device = strip_device(clean_id(props.get("$device_id")))
    dist = distinct_id(props)
    own_raw = before_identity(props) or dist
    own_is_device = own_raw is not None and own_raw.startswith(DEVICE_PREFIX)
    own = strip_device(own_raw)
    dist_node = strip_device(dist)
    own_userlike = own is not None and not own_is_device and own != device and predicate(own)
    hit = False
    owner: str | None = None  # the user retroactive=False withholds (for the privacy rules)
    if user is not None:
        if user.startswith(DEVICE_PREFIX):
            user = strip_device(user)
        found = get(user) if user is not None else MISSING
        if found is not MISSING:
            hit = True
            if found is not None:
                user = found
    else:
        # a user-like own ID in no cluster is its own person, not its device's owner
        for key in (own,) if own_userlike else (own, dist_node, device):
            if key is not None:
                found = get(key)
                if found is not MISSING:
                    hit = True
                    user = found
                    break
        if not hit and own_userlike:
            user = own
        # withheld only from anonymous events: an ID that is its cluster's user (a UUID
        # user ID the predicate takes for a device's) is that user's own event
        if not retroactive and not own_userlike and (own is None or user != own):
            owner, user = user, None
    if require_hit and not hit:
        return None
    if device is None:
        if own_is_device:
            device = own
        elif dist is not None and dist.startswith(DEVICE_PREFIX):
            device = dist_node
        elif own is not None and not own_userlike and own != user:
            device = own
    return Resolved(user, device, owner)
