"""Session-18 second review of the fresh uploader fixes (aeecce8: connect timeout, hold ends
extended by a later 429, 415 to gzip) and of the identity pass's staged-copy check
(b0e3b50), driven over real loopback sockets.

Each ``xfail(strict=True)`` test pins one defect (its reason says what is wrong) and
asserts the behaviour the README / reference asks for.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest

from mp2amp.errors import Mp2AmpError
from mp2amp.load import Uploader, UploadSettings
from mp2amp.load.holds import HoldRegistry
from mp2amp.load.observer import Submitted

KEY = "session18-second-review-key"
T0 = 1_700_000_000_000


def _ev(i: int, device: str | None, user: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"event_type": "view", "time": T0 + i * 1000,
                         "insert_id": f"s18b-{i:04d}"}
    if device is not None:
        e["device_id"] = device
    if user is not None:
        e["user_id"] = user
    return e


def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)


@contextmanager
def _blackholed_port(hosts: list[str]) -> Iterator[int]:
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


# --- connect timeouts ----------------------------------------------------------------------


def test_a_blackholed_host_with_several_addresses_stops_as_unreachable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy(monkeypatch)
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    with _blackholed_port(addresses) as port:
        real = socket.getaddrinfo

        def fake_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host == "amp-multi.test":  # a name with three A records, like api2.amplitude.com
                return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                         (a, port)) for a in addresses]
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)

        async def main() -> tuple[Any, BaseException | None]:
            # timeout 0.3 s: a connect is given 0.15 s per address (10 s of 120 s, scaled)
            up = Uploader(UploadSettings(api_key=KEY, api_host=f"http://amp-multi.test:{port}",
                                         concurrency=1, timeout=0.3, backoff_base=0.005,
                                         backoff_cap=0.01, max_retries=7))
            err: BaseException | None = None
            try:
                async with up:
                    await up.submit(_ev(0, "device-00001"), ("src.jsonl", 1))
                    await up.close()
            except Mp2AmpError as exc:
                err = exc
            return up.report, err

        report, err = asyncio.run(main())
    assert err is not None
    # no connection was ever made: README "counted as connect_failed ... apart from
    # connection_error, a request sent and then lost", and the run stops after 5 attempts
    assert "connection_error" not in report.requests_by_status, dict(report.requests_by_status)
    assert "cannot connect" in str(err), str(err)


async def _refusing_proxy(answers: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    """A proxy that answers every CONNECT with 407 (a corporate proxy wanting credentials)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            answers.append(head.split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_proxy_refusing_the_connect_is_not_a_request_sent_then_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_proxy(monkeypatch)
    connects: list[bytes] = []

    async def main() -> tuple[Any, BaseException | None]:
        server, port = await _refusing_proxy(connects)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        up = Uploader(UploadSettings(api_key=KEY, api_host="https://api2.amplitude.com",
                                     concurrency=1, timeout=2, backoff_base=0.005,
                                     backoff_cap=0.01, max_retries=7))
        err: BaseException | None = None
        try:
            async with up:
                await up.submit(_ev(0, "device-00001"), ("src.jsonl", 1))
                await up.close()
        except Mp2AmpError as exc:
            err = exc
        finally:
            server.close()
            await server.wait_closed()
        return up.report, err

    report, err = asyncio.run(main())
    assert connects and connects[0].startswith(b"CONNECT api2.amplitude.com:443")
    assert err is not None
    assert "connection_error" not in report.requests_by_status, dict(report.requests_by_status)
    assert len(connects) <= 5, f"{len(connects)} CONNECTs refused by the proxy were retried"


# --- holds -----------------------------------------------------------------------------------


def _item(n: int, device: str | None, user: str | None) -> Submitted:
    return Submitted(b'{"insert_id":"%d"}' % n, ("s", n), "b", device, user, 0, 0, n)


def test_a_longer_wait_for_a_user_holds_all_of_that_users_held_events() -> None:
    reg = HoldRegistry()
    # lane A: device D over its eps (Retry-After 10); its event is user U's
    by_device = reg.hold("throttle", 10.0, [_item(1, "D", "U")], devices=["D"])
    # lane B: user U throttled across its devices, Retry-After 30; its event is on device E
    by_user = reg.hold("throttle", 30.0, [_item(2, "E", "U")], users=["U"])
    assert by_user.until == 30.0
    held_of_u = [h for h in (by_device, by_user) if any(i.user == "U" for i in h.items)]
    # every held event of U waits until U's throttle ends
    assert all(h.until >= 30.0 for h in held_of_u), [(h.keys, h.until) for h in held_of_u]
