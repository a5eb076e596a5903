"""Serve an aiohttp application on loopback, in the caller's loop or in a thread of its own.

Both emulators use this: ``AppServer`` binds (port 0 picks a free port) inside a running
loop; ``run_in_thread`` drives any start/stop pair from synchronous code (tests, the CLI,
``demo``) by giving it a private event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")


class AppServer:
    """One aiohttp app bound to ``host:port``; ``port`` is the real port once started."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()  # e.g. the port is taken: leave nothing half-started
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextmanager
def run_in_thread(
    start: Callable[[], Awaitable[T]], stop: Callable[[], Awaitable[None]], name: str
) -> Iterator[T]:
    """Run ``start()`` in a private loop in a daemon thread, yield its result, then ``stop()``.

    An exception raised by ``start`` is re-raised here, in the caller's thread.
    """
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, object] = {}

    def _main() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["value"] = loop.run_until_complete(start())
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(stop())
        loop.close()

    thread = threading.Thread(target=_main, name=name, daemon=True)
    thread.start()
    ready.wait()
    if "error" in outcome:
        thread.join()
        raise outcome["error"]  # type: ignore[misc]
    try:
        yield outcome["value"]  # type: ignore[misc]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
