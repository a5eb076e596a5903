"""SIGTERM stops a run the way Ctrl-C does: at its next ``await``, with a clear message.

Why: ``docker stop``, systemd and Kubernetes stop a process with SIGTERM, which Python
answers by dying where it stands (safe for the ledger, as kill -9 is, but silent: no word
on what was kept or how to go on). asyncio already turns Ctrl-C into a cancellation of
the run at an ``await``, so the ledger, the worker processes and the staging pool are
closed by their context managers; SIGTERM now takes the same path and ends in
``Terminated`` (a ``KeyboardInterrupt``) that the CLI reports with its exit code (143).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Whether SIGTERM (not Ctrl-C) is stopping the run in progress: the attempt recorded in the
# ledger then names it and its exit code (signals are the process's, so this is too).
_sigterm_seen: list[bool] = [False]


def stop_exit_code() -> int:
    """The exit code of a run being stopped now: 143 (SIGTERM) or 130 (Ctrl-C)."""
    return Terminated.exit_code if _sigterm_seen[0] else 128 + signal.SIGINT


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the run at an ``await``; what was recorded is consistent."""

    exit_code = 128 + signal.SIGTERM


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, cancelled by SIGTERM as by Ctrl-C (then ``Terminated``).

    The handler is only installed where asyncio can (the main thread of a POSIX
    process); elsewhere SIGTERM keeps its usual meaning. The caller's own handler is put
    back after (``demo``'s, which stops its generation and read-back the same way)."""
    stopped: list[int] = []
    installed: list[bool] = []
    _sigterm_seen[0] = False

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:
            if stopped:  # one cancellation: a second SIGTERM must not cut the cleanup short
                return
            stopped.append(signal.SIGTERM)
            _sigterm_seen[0] = True
            if task is not None:
                task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            installed.append(True)
        except (ValueError, RuntimeError, NotImplementedError):  # off the main thread; Windows
            pass
        try:
            return await coro
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)
                if stopped:  # already stopping: a second SIGTERM must not kill the cleanup
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    before = signal.getsignal(signal.SIGTERM)
    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if stopped:
            raise Terminated() from None
        raise
    finally:
        # as the caller had it (asyncio leaves SIG_DFL, which dies silently)
        if installed and before is not None:
            signal.signal(signal.SIGTERM, before)
