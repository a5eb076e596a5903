"""The export rate limiter's schedule, on a fake clock (no waiting, no timing)."""

from __future__ import annotations

import asyncio

from mp2amp.extract.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def starts(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    async def main() -> list[float]:
        out = []
        for _ in range(n):
            async with limiter.slot():
                out.append(clock.now)
        return out
    return asyncio.run(main())


def test_three_a_second_and_sixty_an_hour() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_hour=60, per_second=3, max_concurrent=100, clock=clock,
                          sleep=clock.sleep)
    times = starts(limiter, clock, 61)
    # never more than 3 starts in any 1-second window
    assert all(times[i + 3] - times[i] >= 1.0 for i in range(len(times) - 3))
    assert times[:3] == [0.0, 0.0, 0.0] and 1.0 <= times[3] <= 1.2
    # the 61st waits until the first has left the hour
    assert times[59] < 3600 and 3600 <= times[60] - times[0] <= 3610


def test_pause_from_retry_after_delays_the_next_start() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_hour=60, per_second=3, max_concurrent=2, clock=clock,
                          sleep=clock.sleep)
    starts(limiter, clock, 1)
    limiter.pause(30)
    assert starts(limiter, clock, 1) == [30.0]
    assert limiter.waited == 30.0


def test_concurrency_cap_holds_slots_for_the_whole_request() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=2, clock=clock,
                          sleep=clock.sleep)
    active = 0
    peak = 0

    async def request() -> None:
        nonlocal active, peak
        async with limiter.slot():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            active -= 1

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(6)))

    asyncio.run(main())
    assert peak == 2
