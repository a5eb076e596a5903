"""Backoff timing with an injected random source; holds keep a device's order."""

from __future__ import annotations

import pytest

from mp2amp.load.backoff import Backoff
from mp2amp.load.holds import HoldRegistry
from mp2amp.load.observer import Submitted


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
