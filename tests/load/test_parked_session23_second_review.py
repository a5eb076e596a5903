"""Second review of the set-aside parked rows (``resend``, f165ba4): paths around it.

A resume that sends the unfinished batch again parks the guarded device's event in it once
more (a ``parked`` row again, of a batch still not done); killed then, the next resume must
still keep the device behind it. The same for a user without a device (its key is the
user). These pass on the fixed code: they pin what the review checked.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from tests.load.test_parked_review import Crash

from mp2amp.ledger import Ledger
from mp2amp.load import Uploader, UploadSettings
from mp2amp.pipeline.accounting import totals, window_counts
from mp2amp.pipeline.observer import LedgerObserver
from mp2amp.pipeline.parked import replay_parked
from mp2amp.pipeline.progress import Counters


def _ev(i: int, who: str, kind: str) -> dict[str, Any]:
    ids = {"device_id": who} if kind == "device" or who == "T" else {"user_id": who}
    return {"event_type": "e", **ids, "time": 1_700_000_000_000 + i * 1000,
            "insert_id": f"i-{i:03d}"}


def _row(path: Path, origin: str) -> tuple[str, str] | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT state, batch_id FROM parked WHERE origin = ?",
                         (origin,)).fetchone()
    finally:
        db.close()
    return None if row is None else (str(row[0]), str(row[1]))


@pytest.mark.parametrize("kind", ["device", "user"])
def test_a_resume_killed_after_parking_the_event_again_in_its_unfinished_batch_keeps_the_guard(
        fake_cls: Any, tmp_path: Path, kind: str) -> None:
    # one lane, batches of two: w/0/0 = [D0, A1], w/0/1 = [D2, T3], w/0/2 = [D4, D5]
    who = ["D", "A", "D", "T", "D", "D"]
    events = [_ev(i, d, kind) for i, d in enumerate(who)]
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    observer = LedgerObserver(ledger, Counters(), {"w": "win"}, on_window_loaded=lambda w: None)
    quota = {"quota_devices": {"D"}} if kind == "device" else {"quota_users": {"D"}}

    def done() -> frozenset[str]:
        return frozenset(b.batch_id for b in ledger.batches() if b.state == "done")

    def settings(url: str) -> UploadSettings:
        return UploadSettings(api_key="test-key", api_host=url, concurrency=1, max_events=2,
                              park_retries=0, park_delay=0.01, throttle_wait=0.05,
                              backoff_base=0.005, backoff_cap=0.05)

    async def run(server: Any, *, replay: bool, until: Any = None) -> None:
        url = await server.start()
        try:
            async with Uploader(settings(url), observer=observer,
                                settled_batches=done()) as up:
                if replay:
                    await replay_parked(ledger, up)
                for i, e in enumerate(events):
                    await up.submit(e, ("src", i + 1), batch_key="w")
                await up.flush("w")
                if until is None:
                    await up.close()
                    return
                for _ in range(500):
                    if until():
                        break
                    await asyncio.sleep(0.01)
                assert until()
                raise Crash
        finally:
            await server.stop()

    # 1. T3 throttled for good: w/0/1 (D2 parked in it) is not done at the kill
    with pytest.raises(Crash):
        asyncio.run(run(fake_cls(**quota, throttle_devices={"T": 10_000}), replay=False,
                        until=lambda: len(done()) >= 2))
    assert done() == {"w/0/0", "w/0/2"}
    # 2. a resume sends w/0/1 again: D2 is parked in it once more, T3 is still throttled;
    # killed there, w/0/1 still not done
    with pytest.raises(Crash):
        asyncio.run(run(fake_cls(**quota, throttle_devices={"T": 10_000}), replay=True,
                        until=lambda: _row(path, '["src",3]') == ("parked", "w/0/1")))
    assert "w/0/1" not in done()
    # 3. the quota has room: D's later events must still wait behind D2
    later = fake_cls()
    asyncio.run(run(later, replay=True))
    sent_d = [i for i in later.sequence if who[int(i[2:])] == "D"]
    assert sent_d == [], f"D reached Amplitude as {sent_d} before its event i-002"
    # 4. delivered in time order, and the window adds up
    last = fake_cls()
    asyncio.run(run(last, replay=True))
    order = [i for i in last.sequence if who[int(i[2:])] == "D"]
    assert order == ["i-000", "i-002", "i-004", "i-005"], f"D reached Amplitude as {order}"
    counts = ledger.parked_counts()
    assert counts == {"src": {"accepted": 4}}, counts  # a window is its source
    ledger.close()


def test_set_aside_rows_are_counted_once_through_a_resend_that_parks_them_again(
        tmp_path: Path) -> None:
    """The accounting while a row is set aside and after its batch parks it again: the
    window's events are the batch's (accepted, parked) and the parked table's, each once."""
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.batch_sent("w0/0/0", "w", 0, 2)
    led.park("w", "w0/0/0", '["f",1]', b'{"device_id":"D","time":1}', "daily_quota")
    assert list(led.parked_events()) == []  # set aside
    assert totals(window_counts(led))["parked"] == 0
    led.park("w", "w0/0/0", '["f",1]', b'{"device_id":"D","time":1}', "daily_quota")
    led.batch_done("w0/0/0", accepted=1, dead_lettered=0, parked=1)
    t = totals(window_counts(led))
    assert (t["sent"], t["parked"]) == (1, 1), t
    assert [o for _, o, _ in led.parked_events()] == ['["f",1]']
    led.resolve_parked('["f",1]', "accepted")
    t = totals(window_counts(led))
    assert (t["sent"], t["parked"]) == (2, 0), t
    led.close()
