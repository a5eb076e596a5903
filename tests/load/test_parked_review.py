"""Review of parking behind a device's parked events: what a crash leaves in the ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mp2amp.ledger import Ledger
from mp2amp.load import Uploader, UploadSettings
from mp2amp.pipeline.observer import LedgerObserver
from mp2amp.pipeline.parked import replay_parked
from mp2amp.pipeline.progress import Counters


class Crash(Exception):
    """Stands for kill -9."""


def _event(i: int, device: str) -> dict[str, Any]:
    return {"event_type": "e", "device_id": device, "time": 1_700_000_000_000 + i * 1000,
            "insert_id": f"i-{i:03d}"}


def crash_while_a_batch_waits(fake: Any, events: list[dict[str, Any]], ledger: Ledger,
                              observer: LedgerObserver) -> None:
    """Send ``events`` (one lane, batches of two) and crash (kill -9) once two batches are
    done, while a throttled one still waits: the state such a kill leaves in the ledger."""
    async def scenario() -> None:
        url = await fake.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, concurrency=1, max_events=2,
                               park_retries=0, park_delay=0.01, throttle_wait=0.05,
                               backoff_base=0.005, backoff_cap=0.05)
            async with Uploader(s, observer=observer) as up:
                for i, e in enumerate(events):
                    await up.submit(e, ("src", i + 1), batch_key="w")
                await up.flush("w")
                for _ in range(300):  # until two batches are done
                    if ledger.done_batch_count("win") >= 2:
                        break
                    await asyncio.sleep(0.01)
                raise Crash  # while the throttled one still waits
        finally:
            await fake.stop()

    with pytest.raises(Crash):
        asyncio.run(scenario())


def test_a_crash_leaves_parked_rows_a_resume_replays_in_each_devices_order(
        fake_cls: Any, tmp_path: Path) -> None:
    # one lane, batches of two: w/0/0 = [D0, A1], Y = w/0/1 = [D2, T3], Z = w/0/2 = [D4, D5]
    devices = ["D", "A", "D", "T", "D", "D"]
    events = [_event(i, d) for i, d in enumerate(devices)]
    fake = fake_cls(quota_devices={"D"}, throttle_devices={"T": 10_000})
    ledger = Ledger(tmp_path / "ledger.sqlite")
    observer = LedgerObserver(ledger, Counters(), {"w": "win"}, on_window_loaded=lambda w: None)

    crash_while_a_batch_waits(fake, events, ledger, observer)
    done = frozenset(b.batch_id for b in ledger.batches() if b.state == "done")
    assert done == {"w/0/0", "w/0/2"}, done  # the state a kill -9 at that moment leaves

    async def resume(server: Any, settled: frozenset[str]) -> None:
        # as migrate --resume does (pipeline/parked.py), then the window again
        url = await server.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, concurrency=1, max_events=2)
            async with Uploader(s, observer=observer, settled_batches=settled) as up:
                await replay_parked(ledger, up)
                for i, e in enumerate(events):
                    await up.submit(e, ("src", i + 1), batch_key="w")
                await up.close()
        finally:
            await server.stop()

    # A day later the quota has room again, but D's earlier event D2 sat in the batch the
    # crash left unfinished (sent again now) while D4, D5 wait parked from a finished one:
    # sending D4, D5 first would put them before D2. So this resume parks all of D again.
    later = fake_cls()
    asyncio.run(resume(later, done))
    assert not [i for i in later.sequence if devices[int(i[2:])] == "D"]
    assert later.sequence == ["i-003"]  # (A1 was accepted before the crash)
    # The next resume delivers D, in time order.
    done = frozenset(b.batch_id for b in ledger.batches() if b.state == "done")
    last = fake_cls()
    asyncio.run(resume(last, done))
    ledger.close()
    order = [i for i in last.sequence if devices[int(i[2:])] == "D"]
    assert order == ["i-000", "i-002", "i-004", "i-005"], f"device D reached Amplitude as {order}"


def _run(fake: Any, events: list[dict[str, Any]], observer: Any, **kw: Any) -> Any:
    async def scenario() -> Any:
        url = await fake.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, park_retries=0,
                               park_delay=0.01, throttle_wait=0.05, backoff_base=0.005,
                               backoff_cap=0.05, **kw)
            async with Uploader(s, observer=observer) as up:
                for i, e in enumerate(events):
                    await up.submit(e, ("src", i + 1), batch_key="w")
                return await up.close()
        finally:
            await fake.stop()
    return asyncio.run(scenario())


def test_a_batch_parked_whole_without_a_request_is_done_in_the_ledger_not_sent(
        fake_cls: Any, tmp_path: Path) -> None:
    # one lane, batches of two: [D0, A1] (D0 refused: D parked), [D2, D3] never sent
    devices = ["D", "A", "D", "D", "A", "A"]
    events = [_event(i, d) for i, d in enumerate(devices)]
    fake = fake_cls(quota_devices={"D"})
    ledger = Ledger(tmp_path / "ledger.sqlite")
    loaded: list[str] = []
    observer = LedgerObserver(ledger, Counters(), {"w": "win"}, on_window_loaded=loaded.append)
    report = _run(fake, events, observer, concurrency=1, max_events=2)
    observer.flushed("win", 3)
    rows = {b.batch_id: b for b in ledger.batches()}
    assert {k: (b.state, b.accepted, b.parked, b.dead_lettered) for k, b in rows.items()} == {
        "w/0/0": ("done", 1, 1, 0), "w/0/1": ("done", 0, 2, 0), "w/0/2": ("done", 2, 0, 0)}
    assert loaded == ["win"]
    carried = {i for _, ids, _ in fake.requests for i in ids}
    assert not carried & {"i-002", "i-003"}
    assert report.parked == 3 and report.accepted == 3
    assert report.sent == 4  # the batches that went out: the parked-whole one did not
    assert ledger.parked_counts() == {"src": {"parked": 3}}
    ledger.close()


def test_events_of_a_user_without_device_over_the_quota_hold_back_that_users_later_events(
        fake_cls: Any, observer: Any) -> None:
    events = []
    for i in range(40):
        e = _event(i, f"dev-{i % 4}")
        if i % 4 == 0:  # the user's own events, without a device
            del e["device_id"]
            e["user_id"] = "U"
        events.append(e)
    fake = fake_cls(quota_users={"U"})
    report = _run(fake, events, observer, concurrency=2, max_events=3)
    mine = [e["insert_id"] for e in events if e.get("user_id") == "U"]
    assert [e["insert_id"] for e, _, _ in observer.parked] == mine  # in order, each once
    carried = [i for _, ids, _ in fake.requests for i in ids if i in mine]
    assert set(carried) <= {mine[0], mine[1], mine[2]}  # only the first request with them
    assert report.parked == len(mine) and report.accepted == len(events) - len(mine)


def test_a_user_quota_refusal_parks_the_devices_later_events_of_other_users(
        fake_cls: Any, observer: Any) -> None:
    # device D is shared: U's events are over the quota, the later V events of D wait
    events = [_event(i, "D") for i in range(12)]
    for i, e in enumerate(events):
        e["user_id"] = "U" if i < 4 else "V"
    fake = fake_cls(quota_users={"U"})
    report = _run(fake, events, observer, concurrency=1, max_events=2)
    assert [e["insert_id"] for e, _, _ in observer.parked] == [e["insert_id"] for e in events]
    assert not fake.stored and report.parked == 12
