"""Session 18: the export's connect timeout covers every address of the host (and stops as
"cannot connect", not as a request sent then lost), and a proxy's answer to the export is
never a connection lost: 407/403 stop at once naming the proxy without its credentials,
other answers count as a connection never made (the 5-attempt stop). Over loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import mp2amp.extract.export as export
from mp2amp.errors import TerminalError, Unreachable
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import Days, WindowFile, fetch_windows
from mp2amp.extract.export_errors import never_connected, request_timeout
from mp2amp.extract.ratelimit import RateLimiter
from mp2amp.proxyenv import PROXY_VARIABLES

DAY = date(2024, 1, 1)
REASONS = {403: b"Forbidden", 407: b"Proxy Authentication Required", 502: b"Bad Gateway"}


def settings(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01,
                            "max_attempts": 50, **kw}
    return MixpanelSettings(**opts)


async def fetch(base: str, workdir: Path, **kw: Any) -> list[WindowFile]:
    limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
    return [w async for w in fetch_windows(settings(base, **kw), [DAY], workdir,
                                           limiter=limiter)]


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy unless a test sets one; no 1 s waits between refused connections."""
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(export, "refused_wait", lambda: 0.01)


# --- connect timeout ---------------------------------------------------------------------


@contextmanager
def blackholed_port(hosts: list[str]) -> Iterator[int]:
    """One port on every address of ``hosts`` whose SYNs are dropped: a listening socket
    per address that never accepts, its accept queue full (a firewall dropping packets)."""
    servers: list[socket.socket] = []
    fillers: list[socket.socket] = []
    port = 0
    try:
        for host in hosts:
            srv = socket.socket()
            srv.bind((host, port))
            srv.listen(0)
            port = srv.getsockname()[1]
            servers.append(srv)
            for _ in range(3):
                c = socket.socket()
                c.setblocking(False)
                with suppress(BlockingIOError):
                    c.connect((host, port))
                fillers.append(c)
        time.sleep(0.1)
        yield port
    finally:
        for s in fillers + servers:
            s.close()


def test_a_blackholed_host_with_several_addresses_stops_as_never_reached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    with blackholed_port(addresses) as port:
        real = socket.getaddrinfo

        def fake_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "mixpanel-multi.test":  # a name with three A records
                return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                         (a, port)) for a in addresses]
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
        started = time.monotonic()
        with pytest.raises(TerminalError) as stopped:
            asyncio.run(asyncio.wait_for(fetch(f"http://mixpanel-multi.test:{port}", tmp_path,
                                               connect_timeout=0.3), 60))
        took = time.monotonic() - started
    said = str(stopped.value)
    # the 5-attempt stop of a host never reached, not the backoff through max_attempts
    assert said.startswith("cannot connect to Mixpanel at http://mixpanel-multi.test:"), said
    assert "5 times and never since this run started" in said, said
    # 0.3 s per attempt in all, not 0.3 s per address (5 x 3 x 0.3 = 4.5 s)
    assert took < 3.5, f"{took:.1f} s: the connect timeout is per address"


def test_the_connect_timeout_stays_under_a_total_timeout() -> None:
    assert request_timeout(settings("http://x", connect_timeout=30.0)).connect == 30.0
    timeout = request_timeout(settings("http://x", connect_timeout=30.0, timeout=20.0))
    assert (timeout.total, timeout.connect, timeout.sock_connect) == (20.0, 10.0, None)


def test_a_connect_that_timed_out_counts_as_never_reached() -> None:
    err = never_connected(aiohttp.ConnectionTimeoutError("Connection timeout to host x"),
                          Days(DAY, DAY), settings("http://x"))
    assert isinstance(err, Unreachable) and "ConnectionTimeoutError" in str(err)


# --- a proxy answering the export --------------------------------------------------------


async def answering_proxy(status: int, heads: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    """A proxy answering every request (a CONNECT, or a GET for an http:// host) with
    ``status``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(Exception):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                         % (status, REASONS[status]))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def through_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: int,
                  scheme: str = "https", userinfo: str = "") -> tuple[str, list[bytes]]:
    """What stopped the export of a host reached through a proxy answering ``status``, and
    the heads of the requests the proxy got."""
    heads: list[bytes] = []

    async def main() -> str:
        server, port = await answering_proxy(status, heads)
        monkeypatch.setenv(f"{scheme.upper()}_PROXY", f"http://{userinfo}127.0.0.1:{port}")
        try:
            with pytest.raises(TerminalError) as stopped:
                await fetch(f"{scheme}://mixpanel-behind-a-proxy.invalid", tmp_path)
        finally:
            server.close()
            await server.wait_closed()
        return str(stopped.value)

    return asyncio.run(asyncio.wait_for(main(), 60)), heads


def test_a_proxy_wanting_credentials_stops_at_once_naming_it_without_them(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    said, heads = through_proxy(monkeypatch, tmp_path, 407, userinfo="ops:s3cret@")
    assert len(heads) == 1 and heads[0].startswith(b"CONNECT mixpanel-behind-a-proxy.invalid")
    assert said.startswith("the proxy http://***@127.0.0.1:"), said
    assert "407 Proxy Authentication Required" in said and "nothing was exported" in said
    assert "HTTPS_PROXY / HTTP_PROXY as user:password@" in said and "--resume" in said
    assert "s3cret" not in said and "ops:" not in said


def test_a_proxy_refusing_mixpanel_stops_at_once_saying_how_to_get_past_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    said, heads = through_proxy(monkeypatch, tmp_path, 403)
    assert len(heads) == 1
    assert "403 Forbidden" in said and "mixpanel-behind-a-proxy.invalid" in said
    assert "add it to NO_PROXY" in said and "--resume" in said


def test_a_proxy_that_cannot_reach_mixpanel_is_a_connection_never_made(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    said, heads = through_proxy(monkeypatch, tmp_path, 502)
    # retried like a refused connection, then the 5-attempt stop (max_attempts is 50)
    assert len(heads) == 5, len(heads)
    assert said.startswith("cannot connect to Mixpanel at https://mixpanel-behind-a-proxy"
                           ".invalid/api/2.0/export through the proxy http://127.0.0.1:"), said
    assert "(the proxy answered 502 Bad Gateway), 5 times" in said, said


def test_a_proxy_asked_with_get_wanting_credentials_stops_at_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    said, heads = through_proxy(monkeypatch, tmp_path, 407, scheme="http",
                                userinfo="ops:s3cret@")
    assert len(heads) == 1 and heads[0].startswith(b"GET http://mixpanel-behind-a-proxy")
    assert said.startswith("the proxy http://***@127.0.0.1:"), said
    assert "407" in said and "HTTPS_PROXY / HTTP_PROXY" in said and "s3cret" not in said
