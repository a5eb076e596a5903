"""Beside the session-18 second review's pinned tests: how each answer of a proxy to the
CONNECT is counted and when it stops the run, and the index of the holds holding each
user's events (divert, release, the daily quota's take-over)."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import pytest

from mp2amp.errors import Mp2AmpError
from mp2amp.load import Uploader, UploadSettings
from mp2amp.load.holds import HoldRegistry
from mp2amp.load.observer import Submitted
from mp2amp.load.sender import UNREACHABLE_ATTEMPTS, ProxyRefused, RetriesExhausted
from mp2amp.load.settings import CONNECT_FAILED

KEY = "session18-proxy-key"
REASONS = {403: b"Forbidden", 407: b"Proxy Authentication Required", 502: b"Bad Gateway"}


def _item(n: int, device: str | None, user: str | None) -> Submitted:
    return Submitted(b'{"insert_id":"%d"}' % n, ("s", n), "b", device, user, 0, 0, n)


# --- a proxy answering the CONNECT -----------------------------------------------------------


async def _proxy(status: int, heads: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    """A proxy answering every CONNECT with ``status``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(Exception):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                         % (status, REASONS[status]))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _through_proxy(monkeypatch: pytest.MonkeyPatch, status: int, userinfo: str = "",
                   host: str = "https://api2.amplitude.com",
                   ) -> tuple[Any, Mp2AmpError | None, list[bytes]]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    heads: list[bytes] = []

    async def main() -> tuple[Any, Mp2AmpError | None]:
        server, port = await _proxy(status, heads)
        monkeypatch.setenv("HTTPS_PROXY", f"http://{userinfo}127.0.0.1:{port}")
        monkeypatch.setenv("HTTP_PROXY", f"http://{userinfo}127.0.0.1:{port}")
        up = Uploader(UploadSettings(api_key=KEY, api_host=host,
                                     concurrency=1, timeout=2, backoff_base=0.005,
                                     backoff_cap=0.01, max_retries=7))
        err: Mp2AmpError | None = None
        try:
            async with up:
                await up.submit({"event_type": "v", "device_id": "device-1",
                                 "insert_id": "p1", "time": 1_700_000_000_000}, ("s", 1))
                await up.close()
        except Mp2AmpError as exc:
            err = exc
        finally:
            server.close()
            await server.wait_closed()
        return up.report, err

    report, err = asyncio.run(main())
    return report, err, heads


def test_a_proxy_wanting_credentials_stops_at_once_naming_it_without_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    report, err, heads = _through_proxy(monkeypatch, 407, userinfo="ops:s3cret@")
    assert len(heads) == 1 and b"Proxy-Authorization" in heads[0]
    assert isinstance(err, ProxyRefused)
    # nothing reached Amplitude: the key is unbound as for an Amplitude never reached
    assert isinstance(err, RetriesExhausted)
    assert dict(report.requests_by_status) == {CONNECT_FAILED: 1}
    text = str(err)
    assert "s3cret" not in text and "ops:" not in text
    assert "the proxy http://***@127.0.0.1:" in text and "407" in text
    assert "HTTPS_PROXY" in text and "--resume" in text


def test_a_proxys_407_to_an_http_host_counts_as_a_failed_connect_not_an_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # an http:// api_host: the proxy's 407 is the answer to the POST itself (no CONNECT)
    report, err, heads = _through_proxy(monkeypatch, 407, userinfo="ops:s3cret@",
                                        host="http://amplitude-behind-a-proxy.invalid")
    assert len(heads) == 1 and heads[0].startswith(b"POST http://")
    assert isinstance(err, ProxyRefused)
    assert dict(report.requests_by_status) == {CONNECT_FAILED: 1}
    text = str(err)
    assert "the proxy http://***@127.0.0.1:" in text and "s3cret" not in text
    assert "HTTPS_PROXY" in text and "--resume" in text


def test_a_proxy_refusing_the_host_stops_at_once_saying_how_to_get_past_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    report, err, heads = _through_proxy(monkeypatch, 403)
    assert len(heads) == 1
    assert isinstance(err, ProxyRefused) and "403" in str(err)
    assert "NO_PROXY" in str(err) and "api2.amplitude.com" in str(err)
    assert dict(report.requests_by_status) == {CONNECT_FAILED: 1}


def test_a_proxy_that_cannot_reach_amplitude_counts_as_a_failed_connect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    report, err, heads = _through_proxy(monkeypatch, 502)
    # retried like a refused connect, then stopped as unreachable
    assert len(heads) == UNREACHABLE_ATTEMPTS
    assert isinstance(err, RetriesExhausted) and not isinstance(err, ProxyRefused)
    assert "cannot connect" in str(err) and "the proxy answered 502" in str(err)
    assert dict(report.requests_by_status) == {CONNECT_FAILED: UNREACHABLE_ATTEMPTS}


# --- the holds holding each user's events ---------------------------------------------------


def test_a_users_event_joining_a_devices_hold_waits_for_the_users_throttle() -> None:
    reg = HoldRegistry()
    by_device = reg.hold("throttle", 10.0, [_item(1, "D", None)], devices=["D"])
    reg.hold("throttle", 30.0, [_item(2, "E", "U")], users=["U"])
    assert by_device.until == 10.0  # it holds no event of U yet
    assert reg.divert(_item(3, "D", "U"))  # D's later event, of U: D's order first
    assert by_device.until == 30.0


def test_a_user_named_again_after_its_events_left_a_hold_leaves_that_hold_alone() -> None:
    reg = HoldRegistry()
    first = reg.hold("throttle", 10.0, [_item(1, "D", "U")], devices=["D"])
    assert [i.seq for i in reg.release(first)] == [1]
    second = reg.hold("throttle", 5.0, [_item(2, "F", None)], devices=["F"])
    reg.hold("throttle", 30.0, [_item(3, "E", "U")], users=["U"])
    assert first.until == 10.0 and second.until == 5.0


def test_a_user_over_its_quota_takes_its_events_out_of_a_devices_throttle_hold() -> None:
    reg = HoldRegistry()
    by_device = reg.hold("throttle", 10.0, [_item(1, "D", "U"), _item(2, "D", None)],
                         devices=["D"])
    quota = reg.hold("daily_quota", 3600.0, [], users=["U"])
    # U's event, and D's later one behind it, wait for the quota; the throttle hold ends as
    # it was and keeps nothing
    assert [i.seq for i in quota.items] == [1, 2]
    assert by_device.items == [] and by_device.until == 10.0
    assert reg.find(_item(3, "D", None)) is quota


def test_a_throttle_outlasting_a_quota_holds_end_lengthens_it() -> None:
    reg = HoldRegistry()
    quota = reg.hold("daily_quota", 20.0, [_item(1, "D", None)])
    reg.hold("throttle", 50.0, [], devices=["D"])  # D paused longer than the quota's rest
    assert quota.until == 50.0


def test_a_user_over_its_quota_does_not_keep_a_throttle_hold_for_an_hour() -> None:
    reg = HoldRegistry()
    by_device = reg.hold("throttle", 10.0, [_item(1, "D", None)], devices=["D"])
    reg.hold("daily_quota", 3600.0, [_item(2, "E", "U")], users=["U"])
    assert reg.divert(_item(3, "D", "U"))
    assert by_device.until == 10.0
