"""The export rate limiter's schedule, on a fake clock (no waiting, no timing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
    # (a half-second margin: arrivals bunch up by their connecting times, ratelimit.SECOND)
    assert times[:3] == [0.0, 0.0, 0.0] and 1.0 <= times[3] <= 1.6
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


# --- the query journal: a resume counts its predecessor's last hour ----------------------


def _journaled(path: Path, clock: FakeClock, wall: float, per_hour: int = 3) -> RateLimiter:
    return RateLimiter(per_hour=per_hour, per_second=100, max_concurrent=10, clock=clock,
                       sleep=clock.sleep, journal=path, wall=lambda: wall + clock.now)


def test_a_new_limiter_counts_the_queries_its_work_folder_started_within_the_hour(
        tmp_path: Path) -> None:
    journal = tmp_path / "query-starts.log"
    wall = 1_000_000.0
    # two queries 10 and 20 minutes ago, one 2 hours ago, a line torn by a kill
    journal.write_text(f"{wall - 7200:.3f}\n{wall - 1200:.3f}\n{wall - 600:.3f}\n99")
    clock = FakeClock()
    times = starts(_journaled(journal, clock, wall), clock, 2)
    # one query is left of this hour; the next waits until the one 20 minutes old is an hour old
    assert times[0] == 0.0
    assert 2400.0 <= times[1] <= 2410.0
    # the journal now holds the last hour's starts only, this run's included
    kept = [float(w) for w in journal.read_text().split()]
    assert len(kept) == 4 and min(kept) == wall - 1200


def test_a_journal_from_a_clock_set_back_counts_as_just_now(tmp_path: Path) -> None:
    journal = tmp_path / "query-starts.log"
    wall = 1_000_000.0
    journal.write_text(f"{wall + 500:.3f}\n")  # "in the future": the clock went back
    clock = FakeClock()
    times = starts(_journaled(journal, clock, wall, per_hour=1), clock, 1)
    assert 3600.0 <= times[0] <= 3610.0


def test_an_unwritable_journal_never_stops_the_queries(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-folder"
    folder.write_text("a file where the journal's folder would be")
    clock = FakeClock()
    times = starts(_journaled(folder / "query-starts.log", clock, 1_000_000.0), clock, 3)
    assert times == [0.0, 0.0, 0.0]


# --- a 429 is refunded: Mixpanel counts only the queries it admitted ---------------------


def test_a_refunded_start_frees_its_place_in_the_hour(tmp_path: Path) -> None:
    journal = tmp_path / "query-starts.log"
    clock = FakeClock()
    limiter = _journaled(journal, clock, 1_000_000.0, per_hour=1)

    async def main() -> None:
        async with limiter.slot() as refused:
            pass
        limiter.refund(refused)  # the server answered 429: not one of the hour's queries
        async with limiter.slot():
            pass

    asyncio.run(main())
    assert limiter.waited == 0 and clock.now == 0.0
    # the journal takes the refused start back: a resume counts the one admitted query
    assert journal.read_text().split() == ["1000000.000", "-1000000.000", "1000000.000"]
    times = starts(_journaled(journal, clock, 1_000_000.0, per_hour=1), clock, 1)
    assert 3600.0 <= times[0] <= 3610.0
    assert journal.read_text().split() == ["1000000.000", "1003605.000"]
