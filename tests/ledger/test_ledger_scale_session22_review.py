"""Session 22 review: what the ledger accumulates in a long migration, and what reading it
back costs.

A 1-billion-event migration has ~500,000 batches, and Amplitude's daily quota can park
millions of events. Each test was a defect (now fixed): the memory a step took grew with
the rows the ledger holds (tracemalloc peaks, compared between a small and a larger ledger
built through the ``Ledger`` API), where it should stay flat. No timings are asserted. The resume runs a real ``migrate`` against the in-process
Amplitude emulator over loopback (``tests/pipeline/migrate_kit.py``).
"""

from __future__ import annotations

import asyncio
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # migrate_kit

from migrate_kit import API_KEY, FAST, amplitude

from mp2amp.ledger import Ledger
from mp2amp.pipeline.dead_letters import write_dead_letters
from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.parked import replay_parked
from mp2amp.pipeline.status import status
from shared_kit import files_config, page_view

MB = 1024 * 1024


def peak_of(step: Callable[[], Any]) -> int:
    """The tracemalloc peak (bytes) of ``step``."""
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def add_done_batches(ledger: Ledger, window_id: str, n: int, key: str = "w0/0",
                     size: int = 500) -> None:
    """``n`` batches of ``size`` events recorded sent, then done (all accepted), as the
    observer records them (one step)."""
    with ledger.atomic():
        for i in range(n):
            batch = f"{key}/{i}"
            ledger.batch_sent(batch, window_id, i, size)
            ledger.batch_done(batch, accepted=size, dead_lettered=0, parked=0)


def ledger_with_batches(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    ledger = Ledger(folder / "ledger.sqlite")
    ledger.add_windows([("day.json", "files", {})])
    add_done_batches(ledger, "day.json", n)
    ledger.close()
    return folder


# --- `mp2amp status` -------------------------------------------------------------------

def test_status_memory_stays_flat_as_batches_grow(tmp_path: Path) -> None:
    small = ledger_with_batches(tmp_path / "small", 2_000)
    large = ledger_with_batches(tmp_path / "large", 40_000)
    status(small)  # imports and caches warmed outside the measure
    p_small = peak_of(lambda: status(small))
    p_large = peak_of(lambda: status(large))
    got = status(large)
    assert got.batches == {"done": 40_000, "in_flight": 0}  # what status must still say
    assert p_large - p_small < 2 * MB, (
        f"status peak {p_small / MB:.1f} MB with 2,000 batches, {p_large / MB:.1f} MB with "
        f"40,000")


# --- a resume's replay of the events parked for the daily quota --------------------------

class CountingUploader:
    """Stands for the Uploader in ``replay_parked``: keeps only what it needs to check the
    order (the real one applies backpressure, so it holds a bounded number of events)."""

    def __init__(self) -> None:
        self.parked_keys: set[tuple[str, str]] = set()
        self.submitted = 0
        self.last_time = -1
        self.in_order = True

    async def submit(self, event: dict[str, Any], origin: Any, batch_key: str) -> None:
        self.submitted += 1
        self.in_order &= event["time"] >= self.last_time
        self.last_time = event["time"]

    async def flush(self, key: str) -> None:
        return None


def ledger_with_parked(folder: Path, n: int) -> Ledger:
    """A finished batch whose ``n`` events (~450 bytes of JSON each) were parked for the
    daily quota, in reverse time order (the replay must sort them)."""
    folder.mkdir(parents=True)
    ledger = Ledger(folder / "ledger.sqlite")
    ledger.add_windows([("day.json", "files", {})])
    with ledger.atomic():
        ledger.batch_sent("w0/0/0", "day.json", 0, n)
        for i in range(n):
            event = {"event_type": "Page View", "device_id": f"device-{i % 100}",
                     "time": 1_700_000_000_000 + (n - i), "insert_id": f"ins-{i}",
                     "event_properties": {"text": "x" * 350, "n": i}}
            ledger.park("day.json", "w0/0/0", orjson.dumps(["day.json", i + 1]).decode(),
                        orjson.dumps(event), "daily_quota")
        ledger.batch_done("w0/0/0", accepted=0, dead_lettered=0, parked=n)
    return ledger


def test_parked_replay_memory_stays_flat_as_parked_events_grow(tmp_path: Path) -> None:
    peaks = {}
    for n in (2_000, 16_000):
        ledger = ledger_with_parked(tmp_path / f"p{n}", n)
        up = CountingUploader()
        peaks[n] = peak_of(lambda: asyncio.run(replay_parked(ledger, up)))  # noqa: B023
        ledger.close()
        assert up.submitted == n and up.in_order  # every one, in event-time order
    assert peaks[16_000] - peaks[2_000] < 3 * MB, (
        f"replay peak {peaks[2_000] / MB:.1f} MB with 2,000 parked events, "
        f"{peaks[16_000] / MB:.1f} MB with 16,000")


# --- a resume of a long run ---------------------------------------------------------------

def test_resume_memory_stays_flat_as_done_batches_grow(tmp_path: Path) -> None:
    day = tmp_path / "events" / "2023-11-14.json"
    day.parent.mkdir()
    day.write_bytes(b"".join(orjson.dumps(page_view(n)) + b"\n" for n in range(40)))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = files_config([day], work, url, api_key=API_KEY)
        assert migrate(cfg, upload_overrides=FAST).exit_code == 0
        results = []

        def resume() -> None:
            results.append(migrate(cfg, resume=True, upload_overrides=FAST))

        resume()  # warmed: imports and caches outside the measure
        before = peak_of(resume)
        # the done batches of a long run (empty ones, in a lane this run does not use, so
        # that the window still adds up), as the observer writes them
        ledger = Ledger(work / "ledger.sqlite")
        add_done_batches(ledger, ledger.windows()[0].window_id, 20_000, key="w0/99", size=0)
        ledger.close()
        after = peak_of(resume)
    assert [r.exit_code for r in results] == [0, 0, 0], results[-1].as_dict()["problems"]
    assert after - before < 2 * MB, (
        f"resume peak {before / MB:.1f} MB, {after / MB:.1f} MB with 20,000 more done "
        "batches in the ledger")


# --- guards: checked and found right --------------------------------------------------------

def test_dead_letter_file_is_rendered_streaming(tmp_path: Path) -> None:
    """dead-letters.jsonl is written row by row from the ledger: its Python memory does
    not grow with the dead letters (20,000 rows of ~1 KB take far less than their 20 MB)."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("day.json", "files", {})])
    payload = orjson.dumps({"p": "x" * 1000}).decode()
    ledger.add_rejects([("day.json", i, "day.json", "amplitude", "invalid_event", "bad", None,
                         payload, "w0/0/0") for i in range(20_000)])
    peak = peak_of(lambda: write_dead_letters(ledger, tmp_path))
    ledger.close()
    assert sum(1 for _ in (tmp_path / "dead-letters.jsonl").open("rb")) == 20_000
    assert peak < 3 * MB
