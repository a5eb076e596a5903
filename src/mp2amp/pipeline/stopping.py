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
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from types import FrameType
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


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """SIGTERM's handler while no run's loop has one (``entry.main`` installs it once the
    CLI is loaded): the command stops as a Ctrl-C stops it there, reported as SIGTERM (143),
    where Python's default died silently (-15 to the caller, nothing said)."""
    _sigterm_seen[0] = True
    raise Terminated()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, cancelled by SIGTERM as by Ctrl-C (then ``Terminated``).

    The handler is only installed where asyncio can (the main thread of a POSIX
    process); elsewhere SIGTERM keeps its usual meaning. The caller's own handler is put
    back after (``demo``'s, which stops its generation and read-back the same way)."""
    stopped: list[int] = []
    interrupted: list[bool] = []
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

        def on_sigint() -> None:
            # asyncio.run's own handler raises KeyboardInterrupt on a second press wherever
            # the main thread is: inside compiled code (the identity pass, a chunk
            # transformed here) mypyc takes it for out-of-memory and aborts (SIGABRT). Here
            # every press is a callback at the loop: the first cancels, the rest wait.
            if interrupted or stopped:
                if len(interrupted) == 1:  # once: what a user pressing again can do
                    interrupted.append(True)
                    logging.getLogger("mp2amp").warning(
                        "already stopping (the ledger is being brought up to date); to stop "
                        "at once, kill -9 %d is safe too: then run the same command with "
                        "--resume", os.getpid())
                return
            interrupted.append(True)
            if task is not None:
                task.cancel()

        try:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
            installed.append(True)
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                loop.add_signal_handler(signal.SIGINT, on_sigint)
                installed.append(True)
        except (ValueError, RuntimeError, NotImplementedError):  # off the main thread; Windows
            pass
        try:
            return await coro
        finally:
            if len(installed) > 1:
                loop.remove_signal_handler(signal.SIGINT)
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)
                if stopped:  # already stopping: a second SIGTERM must not kill the cleanup
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)
    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if stopped:
            raise Terminated() from None
        if interrupted:
            raise KeyboardInterrupt() from None
        raise
    finally:
        # as the caller had it (asyncio leaves SIG_DFL, which dies silently)
        if installed and before is not None:
            signal.signal(signal.SIGTERM, before)
        if len(installed) > 1 and before_int is not None:  # asyncio leaves the default
            signal.signal(signal.SIGINT, before_int)


class DeferredStop:
    """A Ctrl-C (or SIGTERM) noted by ``signals_deferred``, raised where it is safe.

    ``seen``: what to raise (``KeyboardInterrupt``, or ``Terminated`` for SIGTERM), None
    while no signal came. It stays set once raised: a stop swallowed on the way (a
    ``__del__``) is raised again at the next ``check()``."""

    __slots__ = ("armed", "seen")

    def __init__(self) -> None:
        self.seen: type[KeyboardInterrupt] | None = None
        self.armed = False  # the profile hook may raise (off once it did, or at the end)

    def check(self) -> None:
        """Raise the noted stop; a loop calls it between records (cheap when none)."""
        if self.seen is not None:
            self.armed = False
            raise self.seen()


@contextmanager
def signals_deferred(*, sigterm: bool = False) -> Iterator[DeferredStop]:
    """Ctrl-C (and SIGTERM with ``sigterm``) stops the code inside as before, but never
    from within compiled (mypyc) code. Why: Python's own SIGINT handler raises
    ``KeyboardInterrupt`` wherever the interpreter checks for signals, and big-integer
    arithmetic checks inside primitives that mypyc assumes cannot fail: mypyc then aborts
    the process ("fatal: out of memory", SIGABRT, a core dump), the outputs left as they
    were, temporary files and all.

    The handler only notes the signal; the stop is raised at the next Python-level call
    or return (a profile hook: compiled code checks the result of every call it makes),
    at the next ``check()``, whichever comes first, or as the block ends. Off the main
    thread, or with SIGINT ignored or handled by someone else, SIGINT is left alone."""
    stop = DeferredStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def noted(signum: int, frame: FrameType | None) -> None:
        if stop.seen is not None:  # the first signal stands (Ctrl-C, then SIGTERM: 130)
            return
        stop.seen = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        stop.armed = True
        if sys.getprofile() is None:  # a profiler in use is left alone: check() still stops
            sys.setprofile(hook)

    handler_code = noted.__code__

    def hook(frame: FrameType, event: str, arg: object) -> None:
        # never in the handler's own frame: it runs wherever the signal was checked
        if stop.armed and frame.f_code is not handler_code:
            stop.check()

    taken: dict[int, Any] = {}
    for signum in (signal.SIGINT, *((signal.SIGTERM,) if sigterm else ())):
        before = signal.getsignal(signum)
        if before is signal.SIG_IGN or (signum == signal.SIGINT
                                        and before is not signal.default_int_handler):
            continue
        taken[signum] = signal.signal(signum, noted)
    try:
        yield stop
    except BaseException as exc:
        stop.armed = False  # already stopping: no second stop in the cleanup
        if stop.seen is not None and not isinstance(exc, KeyboardInterrupt) \
                and _raised_for(exc):
            # the stop raised where Python wraps what it catches (a class body's
            # __set_name__: RuntimeError): still the stop, not a crash with a traceback
            raise stop.seen() from exc
        raise
    else:
        stop.check()  # a signal after the last check still stops the run
    finally:
        stop.armed = False  # before any call below: the hook must not fire here
        if sys.getprofile() is hook:
            sys.setprofile(None)
        for signum, before in taken.items():
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue  # the block printed the process's last word (``signals_held``)
            if signum == signal.SIGTERM and stop.seen is Terminated:
                before = signal.SIG_IGN  # as run(): a second SIGTERM must not cut the cleanup
            signal.signal(signum, signal.SIG_DFL if before is None else before)


def _raised_for(exc: BaseException) -> bool:
    """Whether ``exc`` was raised because of a ``KeyboardInterrupt`` (its cause or context,
    a few links deep)."""
    seen: BaseException | None = exc
    for _ in range(8):
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            return False
        if isinstance(seen, KeyboardInterrupt):
            return True
    return False


@contextmanager
def signals_held(*, second_stops: bool = False,
                 ignore_after: bool = False) -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM noted, never raised, for a step that must happen whole: the
    renames that put finished outputs in place, the printing of a run's result. Why: a
    stop raised halfway leaves a new file beside an old one, or half a JSON document
    followed by an error object. The signals that came are in the yielded list: once the
    step is done the run is complete, so the caller drops them (a stop too late to undo
    anything). With ``second_stops`` a second signal stops at once: a write blocked on a
    reader that never reads stays stoppable. With ``ignore_after`` the signals are ignored
    from then on, once the step is done whole, instead of handled as before: the step was
    the process's last word (its result printed), and a stop during its exit would turn
    the result's exit code into a death by signal. Off the main thread nothing is held."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def note(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)
        if second_stops and len(seen) > 1:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    taken: dict[int, Any] = {}
    for held in (signal.SIGINT, signal.SIGTERM):
        before = signal.getsignal(held)
        if before is not signal.SIG_IGN and before is not None:  # None: not set from Python
            taken[held] = signal.signal(held, note)
    whole = False
    try:
        yield seen
        whole = True
    finally:
        # ignored only after a step done whole: one cut short by a second stop is not the
        # last word, and what the stop then says must stay stoppable
        for signum, handler in taken.items():
            signal.signal(signum, signal.SIG_IGN if ignore_after and whole else handler)
