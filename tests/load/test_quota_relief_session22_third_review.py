"""Third review (session 22) of commit 3295119: quota relief counting only the batches long
quota holds keep open, ``Uploader.quota_users`` / ``parked_users`` and ``Sender.take``
parking a device's events behind a parked user. Scripted Amplitude over loopback through the
second review's helpers; no timed assertions."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_quota_relief_session22_second_review import ev, ok, too_many, upload


def _order_breaks(events: list[dict[str, Any]], accepted: list[str],
                  parked: list[str]) -> list[tuple[str, str, str]]:
    """(device, parked id, later accepted id): an event delivered now after an older event
    of its device was parked (the resume delivers the parked one after it)."""
    by_id = {e["insert_id"]: e for e in events}
    out = []
    for p in parked:
        d = by_id[p].get("device_id")
        for a in accepted:
            if d is not None and by_id[a].get("device_id") == d and by_id[a]["time"] > by_id[p]["time"]:
                out.append((d, p, a))
    return out


def test_guard_shared_devices_parked_user_every_event_once_in_order() -> None:
    events = []
    for i in range(200):
        if i % 4 == 0:
            events.append(ev(i, f"dev-{i % 7}", "user-U"))
        elif i % 4 == 1:
            events.append(ev(i, f"dev-{i % 7}", "user-X"))
        else:
            events.append(ev(i, f"solo-{i:04d}"))

    def script(n: int, doc: dict[str, Any]) -> tuple[int, Any]:
        users = {e.get("user_id") for e in doc["events"]}
        devs = {e.get("device_id") for e in doc["events"]}
        thr = {"dev-3"} if "dev-3" in devs and n % 3 == 0 else set()
        if "user-U" in users or thr:
            return too_many(doc, quota_users={"user-U"} & users, throttled_devices=thr)
        return ok(doc)

    books, _report, _ = asyncio.run(upload(script, events, max_events=10,
                                          max_pending_events=40, park_delay=3600,
                                          park_retries=2, throttle_wait=0.05))
    ids = [e["insert_id"] for e in events]
    got = books.accepted + books.parked + books.dead
    assert sorted(got) == sorted(ids)
    assert _order_breaks(events, books.accepted, books.parked) == []
