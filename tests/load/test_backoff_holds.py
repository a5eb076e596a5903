"""Backoff timing with an injected random source; holds keep a device's order."""

from __future__ import annotations

from collections import deque

import pytest

from mp2amp.load.backoff import Backoff
from mp2amp.load.holds import HoldRegistry
from mp2amp.load.observer import Submitted
from mp2amp.load.uploader import _merge_front


class Fixed:
    def __init__(self, frac: float) -> None:
        self.frac = frac

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.frac


def test_backoff_grows_exponentially_with_equal_jitter_and_caps():
    lo = Backoff(base=1.0, cap=8.0, rng=Fixed(0.0))
    hi = Backoff(base=1.0, cap=8.0, rng=Fixed(1.0))
    assert [lo.delay(a) for a in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [hi.delay(a) for a in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_retry_after_is_a_floor_and_clamped():
    b = Backoff(base=1.0, cap=8.0, max_retry_after=100, rng=Fixed(0.5))
    assert b.delay(1, retry_after=30) == 30
    assert b.delay(1, retry_after=0.1) == 0.75
    assert b.delay(1, retry_after=10_000) == 100


def test_backoff_rejects_bad_input():
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff().delay(0)


def item(n: int, device: str | None, user: str | None) -> Submitted:
    return Submitted(b'{"insert_id":"%d"}' % n, ("s", n), "b", device, user, 0, 0, n)


def test_a_held_user_pulls_its_devices_later_events_into_the_same_hold():
    reg = HoldRegistry()
    first = item(1, "D", "U")
    h = reg.hold("throttle", 10.0, [first], users=["U"])
    later_same_device_other_user = item(4, "D", "V")
    other = item(3, "E", None)
    assert reg.divert(item(5, "F", "U"))                  # user U is held
    assert reg.divert(later_same_device_other_user)       # device D waits behind event 1
    assert not reg.divert(other)
    assert [i.event["insert_id"] for i in h.items] == ["1", "4", "5"]
    assert reg.held_events == 3
    released = reg.release(h)
    assert [i.event["insert_id"] for i in released] == ["1", "4", "5"]
    assert reg.held_events == 0 and len(reg) == 0
    assert not reg.divert(item(5, "D", "U"))


def test_an_event_of_an_already_held_device_joins_the_older_hold():
    reg = HoldRegistry()
    old = reg.hold("daily_quota", 100.0, [item(1, "D", None)])
    new = reg.hold("throttle", 1.0, [item(2, "D", None), item(3, "E", None)])
    assert [i.event["insert_id"] for i in old.items] == ["1", "2"]
    assert [i.event["insert_id"] for i in new.items] == ["3"]
    assert {h.reason for h in reg.holds()} == {"daily_quota", "throttle"}


def test_an_older_event_coming_back_from_a_request_goes_before_later_held_ones():
    reg = HoldRegistry()
    # event 2 (D, U2) was throttled while event 1 (D, U1) of the same request is resent
    h = reg.hold("throttle", 5.0, [item(2, "D", "U2")], users=["U2"])
    assert reg.divert(item(7, "D", "U1"))   # a later event of D joins behind
    assert reg.divert(item(1, "D", "U1"))   # the resent older one goes first
    assert [i.seq for i in h.items] == [1, 2, 7]


def test_a_daily_quota_takes_its_user_and_devices_over_from_a_throttle_hold() -> None:
    reg = HoldRegistry()
    # a 429 throttled user U (on D) and device E (another user): one throttle hold
    throttle = reg.hold("throttle", 1.0, [item(1, "D", "U"), item(2, "E", "V")],
                        devices=["E"], users=["U"])
    assert reg.divert(item(3, "D", "W"))  # D's later event waits behind event 1
    assert reg.divert(item(4, None, "U"))  # U's event without a device
    # then U is over its daily quota (its event on F refused): everything of U, and of
    # the devices its events are on, waits for the quota, not for the throttle
    quota = reg.hold("daily_quota", 3600.0, [item(5, "F", "U")], users=["U"])
    assert [i.seq for i in quota.items] == [1, 3, 4, 5]
    assert [i.seq for i in throttle.items] == [2]
    assert throttle.keys == {("d", "E")}
    assert quota.keys == {("u", "U"), ("d", "D"), ("d", "F")}
    assert reg.held_events == 5
    assert reg.find(item(6, "D", None)) is quota and reg.find(item(7, "G", "U")) is quota
    assert reg.find(item(8, "E", None)) is throttle
    assert [i.seq for i in reg.release(throttle)] == [2]
    assert reg.find(item(9, "D", None)) is quota  # the throttle's end frees E only


def test_a_daily_quota_joins_an_older_quota_hold_and_leaves_other_throttles_alone() -> None:
    reg = HoldRegistry()
    older = reg.hold("daily_quota", 3600.0, [item(1, "D", None)])
    throttle = reg.hold("throttle", 1.0, [item(2, "E", "V")], users=["V"])
    newer = reg.hold("daily_quota", 7200.0, [item(3, "D", "X")], devices=["D"])
    assert [i.seq for i in older.items] == [1, 3] and not newer.items
    assert [i.seq for i in throttle.items] == [2]


def test_events_ending_a_hold_are_merged_into_their_lane_by_submission_order() -> None:
    # the lane's queue: a 413 put back 2 (D) behind the request in flight; the hold that
    # took 3 (D) ends: 3 goes after 2, while 1 and 4 of other devices keep their places
    queue = deque([item(2, "D", None), item(5, "E", None), item(6, "D", None)])
    _merge_front(queue, [item(1, "F", None), item(3, "D", "U"), item(4, "G", None)])
    assert [i.seq for i in queue] == [1, 2, 3, 4, 5, 6]
    _merge_front(queue, [item(0, "D", None)])  # older than all: the front, as before
    assert [i.seq for i in queue] == [0, 1, 2, 3, 4, 5, 6]
    empty: deque[Submitted] = deque()
    _merge_front(empty, [item(7, "D", None)])
    assert [i.seq for i in empty] == [7]
