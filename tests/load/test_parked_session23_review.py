"""A resume killed after its parked replay began: the next resume must still keep a
device's later parked events behind its earlier ones in a batch not yet done.

Found by a soak (1M-event scale, quota and throttle faults, kill -9 and resume): a later
parked event reached Amplitude ~57 s before its device's 20 earlier events. The replay's
guard read the device from the parked rows of unfinished batches, and the replay itself
deleted those rows; killed before the batch was sent again, the next resume had no trace.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.load.test_parked_review import Crash, _event, crash_while_a_batch_waits

from mp2amp.ledger import Ledger
from mp2amp.load import Uploader, UploadSettings
from mp2amp.pipeline.observer import LedgerObserver
from mp2amp.pipeline.parked import replay_parked
from mp2amp.pipeline.progress import Counters


def test_a_resume_killed_after_its_replay_still_keeps_the_device_behind_its_earlier_event(
        fake_cls: Any, tmp_path: Path) -> None:
    # one lane, batches of two: w/0/0 = [D0, A1], w/0/1 = [D2, T3], w/0/2 = [D4, D5]
    devices = ["D", "A", "D", "T", "D", "D"]
    events = [_event(i, d) for i, d in enumerate(devices)]
    ledger = Ledger(tmp_path / "ledger.sqlite")
    observer = LedgerObserver(ledger, Counters(), {"w": "win"}, on_window_loaded=lambda w: None)

    # D2 parked in w/0/1, which T3's throttle keeps unfinished; D4, D5 parked in done w/0/2
    crash_while_a_batch_waits(fake_cls(quota_devices={"D"}, throttle_devices={"T": 10_000}),
                              events, ledger, observer)

    def done() -> frozenset[str]:
        return frozenset(b.batch_id for b in ledger.batches() if b.state == "done")

    assert done() == {"w/0/0", "w/0/2"}

    async def resume(server: Any, *, window: bool) -> None:
        url = await server.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, concurrency=1, max_events=2,
                               park_retries=0, park_delay=0.01, backoff_base=0.005,
                               backoff_cap=0.05)
            async with Uploader(s, observer=observer, settled_batches=done()) as up:
                await replay_parked(ledger, up)
                if not window:
                    await up.close()
                    raise Crash  # killed before the window's batches went out again
                for i, e in enumerate(events):
                    await up.submit(e, ("src", i + 1), batch_key="w")
                await up.close()
        finally:
            await server.stop()

    # The quota still says no; this resume replays D's parked events (parked again
    # behind D2) and is killed before w/0/1 is sent again.
    with pytest.raises(Crash):
        asyncio.run(resume(fake_cls(quota_devices={"D"}), window=False))
    assert "w/0/1" not in done()
    # A day later the quota has room: D2 is still in w/0/1, not done, so D's later events
    # must not go ahead of it; this resume parks all of D again ...
    later = fake_cls()
    asyncio.run(resume(later, window=True))
    sent_d = [i for i in later.sequence if devices[int(i[2:])] == "D"]
    assert sent_d == [], f"device D reached Amplitude as {sent_d} before its event i-002"
    # ... and the next delivers D in time order.
    last = fake_cls()
    asyncio.run(resume(last, window=True))
    ledger.close()
    order = [i for i in last.sequence if devices[int(i[2:])] == "D"]
    assert order == ["i-000", "i-002", "i-004", "i-005"], f"device D reached Amplitude as {order}"


def test_the_ledger_keeps_an_unfinished_batchs_parked_rows_listed_until_that_batch_is_done(
        tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {})])
    led.batch_sent("b-flying", "w", 0, 2)
    led.park("w", "b-flying", '["f",1]', b'{"device_id":"D","time":1}', "daily_quota")
    led.park("w", "parked", '["f",2]', b'{"device_id":"D","time":2}', "daily_quota")
    assert list(led.parked_events()) == [("w", '["f",2]', b'{"device_id":"D","time":2}')]
    assert led.parked_counts() == {"w": {"parked": 1}}  # the set-aside row is not parked
    led.close()
    led = Ledger(tmp_path / "l.sqlite")  # killed before b-flying went out again
    assert list(led.unfinished_parked_events()) == [b'{"device_id":"D","time":1}']
    assert list(led.parked_events()) == [("w", '["f",2]', b'{"device_id":"D","time":2}')]
    led.resolve_parked('["f",1]', "dead_lettered")  # its batch's outcome, not the replay's
    assert list(led.unfinished_parked_events()) == [b'{"device_id":"D","time":1}']
    # sent again and parked again: a parked row once more, replayed once its batch is done
    led.park("w", "b-flying", '["f",1]', b'{"device_id":"D","time":1}', "daily_quota")
    led.batch_done("b-flying", accepted=1, dead_lettered=0, parked=1)
    assert list(led.unfinished_parked_events()) == []
    assert [o for _, o, _ in led.parked_events()] == ['["f",1]', '["f",2]']
    assert led.parked_counts() == {"w": {"parked": 2}}
    # accepted in its resent batch instead: the set-aside row goes when the batch is done
    led.batch_sent("b-two", "w", 1, 1)
    led.park("w", "b-two", '["f",3]', b'{"device_id":"E","time":3}', "daily_quota")
    list(led.parked_events())
    led.batch_done("b-two", accepted=1, dead_lettered=0, parked=0)
    assert list(led.unfinished_parked_events()) == []
    assert [o for _, o, _ in led.parked_events()] == ['["f",1]', '["f",2]']
    assert led.parked_counts() == {"w": {"parked": 2}}
    led.close()
