"""Events waiting for their device or user: throttled (429) or over the daily quota.

A hold is keyed by device and/or user. While a device is held, every later event of that
device joins the same hold, in order, so a device's events are never reordered; other
devices keep flowing. A hold keeps its events in submission order (``Submitted.seq``): an
event coming back from a request (the rest of a 429, a 413 half) is older than the device's
events already held and goes before them. When the hold expires its events are merged
back into their lanes by ``seq`` (``Uploader.requeue_front``): an older event of the same
device may still be queued there (a 413 put it back after the hold took a newer one).

A key is in one hold only, so a later 429 naming a held device or user (or throttling
an event that joins the hold) moves the hold's end to its own wait when that is later: a
longer Retry-After is waited out by everything the hold keeps. A user's events can sit in
other holds than the user's own (a device's, throttled first): a 429 naming the user moves
the end of every hold holding an event of that user, and an event of a held user joining
another hold makes that hold wait for the user too. A hold ends at the latest wait of
anything it holds, whatever its reason: a throttle outlasting what is left of a daily-quota
hold lengthens it (the device or user is paused for the throttle's seconds either way); no
answer ever ends a hold sooner.

The daily quota outranks a throttle: a device or user over its quota (an hour's wait) that
a throttle hold (seconds) already holds moves to the quota hold with its events, or they
would be resent, and refused again, as soon as the throttle ended.

Held events count toward the uploader's backpressure like queued ones (``held_events``):
a held device's later events wait in the caller, not in memory here.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from mp2amp.load.observer import Submitted

HoldReason = Literal["throttle", "daily_quota"]
Key = tuple[str, str]  # ("d", device_id) or ("u", user_id)


@dataclass(eq=False, slots=True)
class Hold:
    reason: HoldReason
    until: float
    items: list[Submitted] = field(default_factory=list)
    keys: set[Key] = field(default_factory=set)


class HoldRegistry:
    """Which devices/users are held, and the events waiting for each hold."""

    def __init__(self) -> None:
        self._by_key: dict[Key, Hold] = {}
        # user -> the holds holding an event of that user (by id): a 429 naming the user
        # must reach them all. One entry per held user's hold; gone when the hold ends.
        self._user_holds: dict[str, dict[int, Hold]] = {}
        self.held_events = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, item: Submitted) -> Hold | None:
        """The hold this event must join, if its device or user is held."""
        if not self._by_key:
            return None
        hold = self._by_key.get(("d", item.device)) if item.device is not None else None
        if hold is None and item.user is not None:
            hold = self._by_key.get(("u", item.user))
            if hold is not None and item.device is not None:
                # Later events of this device must wait behind this one.
                self._register(hold, ("d", item.device))
        return hold

    def divert(self, item: Submitted) -> bool:
        """Put the event in its hold if it has one; True when it was held."""
        hold = self.find(item)
        if hold is None:
            return False
        self._put(hold, item)
        return True

    def hold(self, reason: HoldReason, until: float, items: Iterable[Submitted],
             devices: Iterable[str] = (), users: Iterable[str] = ()) -> Hold:
        """Hold these events (and the named devices/users) until ``until``.

        An event whose device or user is already held joins that older hold instead, so
        that one key never waits in two places; except that a daily-quota hold first takes
        its keys (and their events) over from throttle holds (see ``_take_over``). An older
        hold that an event joins, a named key is in, or that holds an event of a named user
        ends at ``until`` if that is later: this answer's wait (a longer Retry-After) is
        waited out too. Its owner's timer must then look at ``Hold.until`` again when it
        fires (``Uploader._release``)."""
        new = Hold(reason, until)
        items = list(items)
        devices, users = set(devices), set(users)
        if reason == "daily_quota" and self._by_key:
            self._take_over(new, items, devices, users)
        for key in _keys(devices, users):
            _extend(self._by_key.get(key), until)
            self._register(new, key, keep_existing=True)
        for u in users:
            for held in self._user_holds.get(u, {}).values():
                _extend(held, until)
        for item in items:
            target = self.find(item)
            if target is None:
                target = new
                self._register(new, _own_key(item), keep_existing=True)
            else:
                _extend(target, until)
            self._put(target, item)
        return new

    def _put(self, hold: Hold, item: Submitted) -> None:
        """Hold the event; a hold taking an event of a user throttled elsewhere (its device
        was held first) ends no sooner than the user's throttle. (A user over the daily
        quota is not waited for here: an hour in a throttle hold would escape the quota's
        handling at close; the event is refused once more and then parked.)"""
        _add(hold, item)
        self.held_events += 1
        user = item.user
        if user is None:
            return
        self._user_holds.setdefault(user, {})[id(hold)] = hold
        users_hold = self._by_key.get(("u", user))
        if users_hold is not None and users_hold is not hold \
                and users_hold.reason == "throttle":
            _extend(hold, users_hold.until)

    def _unindex(self, hold: Hold, gone: Iterable[Submitted]) -> None:
        """Forget ``hold`` for the users of these events that it no longer holds."""
        left = {i.user for i in hold.items}
        for user in {i.user for i in gone} - left:
            if user is None:
                continue
            holds = self._user_holds.get(user)
            if holds is not None:
                holds.pop(id(hold), None)
                if not holds:
                    del self._user_holds[user]

    def _take_over(self, quota: Hold, items: list[Submitted], devices: set[str],
                   users: set[str]) -> None:
        """Move the quota's devices/users out of the throttle holds that have them, with
        their events: a user's events on any device (Amplitude refuses every batch holding
        a user over its quota), and every event of a device that moves (its order)."""
        for item in items:
            if item.device is not None:
                devices.add(item.device)
            else:
                users.add(item.user or "")
        candidates = [self._by_key.get(k) for k in _keys(devices, users)]
        for u in users:  # a device's hold holding the user's events is not keyed by the user
            candidates += self._user_holds.get(u, {}).values()
        found = {id(h): h for h in candidates if h is not None and h.reason == "throttle"}
        for throttle in found.values():
            devices.update(i.device for i in throttle.items
                           if i.device is not None and i.user in users)
            wanted = set(_keys(devices, users))
            moved = [i for i in throttle.items if _own_key(i) in wanted]
            throttle.items = [i for i in throttle.items if _own_key(i) not in wanted]
            quota.items += moved
            self._unindex(throttle, moved)
            for item in moved:
                if item.user is not None:
                    self._user_holds.setdefault(item.user, {})[id(quota)] = quota
            for key in throttle.keys & wanted:
                throttle.keys.discard(key)
                self._register(quota, key)
        if len(found) > 1:
            quota.items.sort(key=_seq)

    def release(self, hold: Hold) -> list[Submitted]:
        """End a hold: its keys are free again and its events are returned, in order."""
        for key in hold.keys:
            if self._by_key.get(key) is hold:
                del self._by_key[key]
        hold.keys.clear()
        items, hold.items = hold.items, []
        self.held_events -= len(items)
        self._unindex(hold, items)
        return items

    def holds(self, where: Callable[[Hold], bool] = lambda h: True) -> list[Hold]:
        seen: dict[int, Hold] = {}
        for h in self._by_key.values():
            if where(h):
                seen[id(h)] = h
        return list(seen.values())

    def _register(self, hold: Hold, key: Key, *, keep_existing: bool = False) -> None:
        if keep_existing and key in self._by_key:
            return
        self._by_key[key] = hold
        hold.keys.add(key)


def _extend(hold: Hold | None, until: float) -> None:
    """Move the hold's end to ``until`` when that is later; never sooner."""
    if hold is not None and hold.until < until:
        hold.until = until


def _own_key(item: Submitted) -> Key:
    """The key that orders an event: its device, or its user when it has none."""
    return ("d", item.device) if item.device is not None else ("u", item.user or "")


def _keys(devices: Iterable[str], users: Iterable[str]) -> list[Key]:
    return [("d", d) for d in devices] + [("u", u) for u in users]


def _seq(item: Submitted) -> int:
    return item.seq


def _add(hold: Hold, item: Submitted) -> None:
    """Append, or insert in submission order when the event is older than the last one."""
    if not hold.items or hold.items[-1].seq < item.seq:
        hold.items.append(item)
    else:
        insort(hold.items, item, key=lambda i: i.seq)
