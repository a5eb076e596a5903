"""A second Ctrl-C while a migration stops: a callback at the loop, never an exception
raised wherever the main thread is (inside compiled code mypyc aborted: SIGABRT)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

import pytest

from mp2amp.pipeline import stopping


def _press(after: float) -> threading.Timer:
    timer = threading.Timer(after, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_a_second_ctrl_c_during_the_cleanup_waits_for_it_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    async def run() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            # the cleanup: busy outside any await (as the identity pass or a chunk
            # transformed in this process), pressed again meanwhile, then pressed once more
            _press(0.05)
            _press(0.15)
            end = time.monotonic() + 0.4
            while time.monotonic() < end:
                sum(range(100))  # Python calls: where a raised KeyboardInterrupt would land
            done.append("busy part")
            await asyncio.sleep(0.05)  # the loop runs the callbacks of the presses here
            done.append("cleanup")

    _press(0.1)
    with caplog.at_level(logging.WARNING, logger="mp2amp"), \
            pytest.raises(KeyboardInterrupt):
        stopping.run(run())
    assert done == ["busy part", "cleanup"]
    said = [r.getMessage() for r in caplog.records if "already stopping" in r.getMessage()]
    assert said == [f"already stopping (the ledger is being brought up to date); to stop at "
                    f"once, kill -9 {os.getpid()} is safe too: then run the same command with "
                    "--resume"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_callers_ctrl_c_handler_is_put_back() -> None:
    seen: list[int] = []

    def mine(signum: int, frame: object) -> None:
        seen.append(signum)

    before = signal.signal(signal.SIGINT, mine)
    try:
        async def quick() -> int:
            await asyncio.sleep(0)
            return 7

        assert stopping.run(quick()) == 7
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        async def pressed() -> str:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.1)
            return "went on"

        assert stopping.run(pressed()) == "went on"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
