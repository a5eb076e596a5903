"""Per-ID limits: events/s averaged over 30 s (EPDS/EPUS) and the rolling 24-hour quota.

The 30-second average uses a sliding-window counter (the current and the previous 30 s
window, the previous one weighted by how much of it still overlaps), so each ID costs three
integers, not a list of timestamps. The daily quota counts accepted events per ID in
one-hour buckets and sums the last 24, as Amplitude applies it "in one-hour intervals".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mp2amp.emulators.amplitude.config import THROTTLE_WINDOW_S


class _Counts:
    __slots__ = ("cur", "hours", "prev", "total", "window")

    def __init__(self) -> None:
        self.window = -2
        self.cur = 0
        self.prev = 0
        self.hours: dict[int, int] = {}
        self.total = 0  # sum of ``hours``: an upper bound of the 24-h count, exact sum skipped below it


@dataclass
class LimitVerdict:
    """Which IDs are over a limit; empty when the request may be ingested."""

    throttled_devices: dict[str, int] = field(default_factory=dict)
    throttled_users: dict[str, int] = field(default_factory=dict)
    quota_devices: dict[str, int] = field(default_factory=dict)
    quota_users: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.throttled_devices or self.throttled_users
                    or self.quota_devices or self.quota_users)


class Limiter:
    """Counts accepted events per device_id and per user_id."""

    def __init__(self, window_s: int = THROTTLE_WINDOW_S) -> None:
        self.window_s = window_s
        self.devices: dict[str, _Counts] = {}
        self.users: dict[str, _Counts] = {}

    def _recent(self, counts: _Counts, now: float) -> float:
        """Events in the last ``window_s`` seconds (sliding-window estimate)."""
        window = int(now // self.window_s)
        if counts.window == window:
            cur, prev = counts.cur, counts.prev
        elif counts.window == window - 1:
            cur, prev = 0, counts.cur
        else:
            return 0.0
        overlap = 1.0 - (now % self.window_s) / self.window_s
        return cur + prev * overlap

    @staticmethod
    def _day(counts: _Counts, hour: int) -> int:
        first = hour - 23
        return sum(n for h, n in counts.hours.items() if h >= first)

    def admit(
        self, per_device: dict[str, int], per_user: dict[str, int], now: float,
        eps_limit: int, daily_quota: int | None,
    ) -> LimitVerdict:
        """Check the per-ID event counts of one request; record them only if all pass.

        ``daily_quota`` None: the quota is not checked (HTTP V2 documents none), though the
        events still count toward it for a later request that checks it (Batch)."""
        verdict = LimitVerdict()
        window = int(now // self.window_s)
        hour = int(now // 3600)
        budget = eps_limit * self.window_s
        for table, counts_by_id, throttled, quota in (
            (self.devices, per_device, verdict.throttled_devices, verdict.quota_devices),
            (self.users, per_user, verdict.throttled_users, verdict.quota_users),
        ):
            for key, n in counts_by_id.items():
                counts = table.get(key)
                if counts is None:
                    counts = table[key] = _Counts()
                # cur + prev bounds the sliding estimate: the exact figure only near the limit
                if counts.cur + counts.prev + n > budget:
                    recent = n + self._recent(counts, now)
                    if recent > budget:
                        throttled[key] = round(recent / self.window_s)
                if daily_quota is not None and counts.total + n > daily_quota:
                    day = n + self._day(counts, hour)
                    if day > daily_quota:
                        quota[key] = day
                # Recorded at once (requests almost always pass) and taken back below if not.
                if counts.window == window and hour in counts.hours:
                    counts.cur += n
                    counts.hours[hour] += n
                    counts.total += n
                else:
                    self._record(counts, n, window, hour)
        if not verdict.ok:
            for table, counts_by_id in ((self.devices, per_device), (self.users, per_user)):
                for key, n in counts_by_id.items():
                    counts = table[key]
                    counts.cur -= n
                    counts.hours[hour] -= n
                    counts.total -= n
        return verdict

    @staticmethod
    def _record(counts: _Counts, n: int, window: int, hour: int) -> None:
        if counts.window != window:
            counts.prev = counts.cur if counts.window == window - 1 else 0
            counts.cur = 0
            counts.window = window
        counts.cur += n
        hours = counts.hours
        hours[hour] = hours.get(hour, 0) + n
        counts.total += n
        if len(hours) > 24:
            for old in [h for h in hours if h < hour - 23]:
                counts.total -= hours.pop(old)

    def to_json(self) -> dict[str, Any]:
        """The daily counts (the 30-s windows are too short-lived to be worth keeping)."""
        return {
            kind: {key: [[h, n] for h, n in c.hours.items()] for key, c in table.items()}
            for kind, table in (("devices", self.devices), ("users", self.users))
        }

    def load_json(self, data: dict[str, Any]) -> None:
        for kind, table in (("devices", self.devices), ("users", self.users)):
            for key, hours in data.get(kind, {}).items():
                counts = table[key] = _Counts()
                counts.hours = {int(h): int(n) for h, n in hours}
                counts.total = sum(counts.hours.values())
