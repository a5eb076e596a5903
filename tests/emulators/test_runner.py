"""runner.py: an aiohttp app served on loopback from a private loop in a thread."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from aiohttp import web

from mp2amp.emulators.runner import AppServer, run_in_thread


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def _server(port: int) -> AppServer:
    app = web.Application()
    app.router.add_get("/", _hello)
    return AppServer(app, "127.0.0.1", port)


def test_serves_on_a_free_port_and_stops() -> None:
    server = _server(0)

    async def start() -> str:
        await server.start()
        return server.base_url

    with run_in_thread(start, server.stop, name="test-runner") as url:
        assert server.port != 0
        with urllib.request.urlopen(url + "/", timeout=10) as res:
            assert res.read() == b"hello"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass  # nothing listens any more


def test_a_failed_start_is_raised_in_the_caller() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = _server(busy.getsockname()[1])

        async def start() -> str:
            await server.start()
            return server.base_url

        with pytest.raises(OSError), run_in_thread(start, server.stop, name="test-runner"):
            pass
