"""A resume's first step: the events parked for Amplitude's daily quota by earlier runs.

They go first, in event-time order: a device's parked events can come from several runs and
batches, and the ledger's row order is not their time order. A crash can also leave a
device's earlier parked events in a batch that was not done (it is sent again, whole, with
its window) while its later ones sit in a finished batch: replayed first, those would
overtake the earlier ones. Such a device has all its events parked again in this run
(``Uploader.parked_keys``); the next resume delivers them, in order.
"""

from __future__ import annotations

from typing import Any

import orjson

from mp2amp.ledger import Ledger
from mp2amp.load.uploader import Uploader
from mp2amp.pipeline.observer import PARKED_KEY


def _key(event: dict[str, Any]) -> tuple[str, str]:
    """``parked_key`` of an event dict, as ``Uploader.submit`` reads its ids."""
    device, user = event.get("device_id"), event.get("user_id")
    if device and isinstance(device, str):
        return ("d", device)
    return ("u", user if user and isinstance(user, str) else "")


async def replay_parked(ledger: Ledger, up: Uploader) -> int:
    """Submit the parked events (see the module docstring), one at a time in event-time
    order (``Ledger.parked_events``); returns how many."""
    for raw in ledger.unfinished_parked_events():
        up.parked_keys.add(_key(orjson.loads(raw)))
    replayed = 0
    for _, origin_json, event_json in ledger.parked_events():
        origin = orjson.loads(origin_json)
        await up.submit(orjson.loads(event_json), (origin[0], origin[1]),
                        batch_key=PARKED_KEY)
        replayed += 1
    # the last parked batch closes now, not at the end: their devices' later events (in the
    # windows) must queue behind them
    await up.flush(PARKED_KEY)
    return replayed
