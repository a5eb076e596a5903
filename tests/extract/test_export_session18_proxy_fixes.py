"""Beside the session-18 third review's pinned tests: a ~/.netrc that cannot be parsed is
not read on every request, an unframed body whose last line is no whole record is fetched
again (a framed one is kept), Engage stops at a proxy's 407 to an http:// host."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import mp2amp.extract.export as export
from mp2amp.errors import TerminalError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.export import WindowFile, fetch_windows
from mp2amp.extract.ratelimit import RateLimiter
from mp2amp.proxyenv import PROXY_VARIABLES
from shared_kit import serve_routes

DAYS = [date(2024, 1, 1), date(2024, 1, 2)]
RECORD = json.dumps({"event": "Viewed", "properties": {"time": 1704067200, "distinct_id": "u",
                                                       "$insert_id": "a"}})


def settings(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01,
                            "max_attempts": 3, **kw}
    return MixpanelSettings(**opts)


async def fetch(st: MixpanelSettings, workdir: Path, days: list[date]) -> list[WindowFile]:
    limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
    return sorted([w async for w in fetch_windows(st, days, workdir, limiter=limiter)],
                  key=lambda w: w.day)


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(export, "refused_wait", lambda: 0.01)


def test_a_netrc_that_cannot_be_parsed_is_not_read_for_each_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "netrc"
    broken.write_text("machine data.example nonsense\n")
    monkeypatch.setenv("NETRC", str(broken))

    async def day(request: web.Request) -> web.Response:
        return web.Response(text=RECORD + "\n")

    async def engage(request: web.Request) -> web.Response:
        return web.json_response({"results": [{"$distinct_id": "u", "$properties": {}}],
                                  "page": 0, "page_size": 1000, "session_id": "s",
                                  "total": 1, "status": "ok"})

    async def main() -> tuple[list[WindowFile], list[Any]]:
        async with serve_routes({("GET", "/api/2.0/export"): day,
                                 ("POST", "/api/query/engage"): engage}) as base:
            windows = await fetch(settings(base), tmp_path, DAYS)
            return windows, [r async for r in EngagePager(settings(base)).records()]

    with caplog.at_level(logging.DEBUG):
        windows, profiles = asyncio.run(asyncio.wait_for(main(), 30))
    assert [w.record_count for w in windows] == [1, 1] and len(profiles) == 1
    assert "netrc" not in caplog.text.lower(), caplog.text


def _unframed_server(bodies: list[bytes], sent: list[bytes], framed: bool
                     ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A server answering ``bodies`` in turn, closing the connection after each."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        body = bodies[min(len(sent), len(bodies) - 1)]
        sent.append(body)
        length = b"Content-Length: %d\r\n" % len(body) if framed else b""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + length
                     + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()
    return handle


@pytest.mark.parametrize("framed", [False, True])
def test_a_body_whose_last_line_is_no_record(tmp_path: Path, framed: bool) -> None:
    # Unframed, a last line that is not a whole record (newline or not) is where the
    # connection may have closed: the day is fetched again. Framed, the body is whole and
    # the line is kept as malformed_json.
    body = RECORD.encode() + b"\n" + b'{"event": "Cut' + b"\n"
    sent: list[bytes] = []

    async def main() -> list[WindowFile]:
        server = await asyncio.start_server(_unframed_server([body], sent, framed),
                                            "127.0.0.1", 0)
        try:
            return await fetch(settings(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"),
                               tmp_path, DAYS[:1])
        finally:
            server.close()

    if framed:
        (window,) = asyncio.run(asyncio.wait_for(main(), 30))
        assert (window.record_count, window.rejected_count, len(sent)) == (2, 1, 1)
    else:
        with pytest.raises(Exception, match="ended in the middle of a record"):
            asyncio.run(asyncio.wait_for(main(), 30))
        assert len(sent) == 3  # every attempt


def test_an_unframed_body_ending_with_a_whole_record_and_blank_lines_is_kept(
        tmp_path: Path) -> None:
    body = RECORD.encode() + b"\r\n" + RECORD.encode() + b"\r\n\r\n\n"
    sent: list[bytes] = []

    async def main() -> list[WindowFile]:
        server = await asyncio.start_server(_unframed_server([body], sent, False),
                                            "127.0.0.1", 0)
        try:
            return await fetch(settings(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"),
                               tmp_path, DAYS[:1])
        finally:
            server.close()

    (window,) = asyncio.run(asyncio.wait_for(main(), 30))
    assert (window.record_count, window.rejected_count, len(sent)) == (2, 0, 1)


def test_engage_stops_at_a_proxys_407_answer_to_an_http_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> str:
        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTP_PROXY", f"ops:s3cret@127.0.0.1:{port}")
        try:
            with pytest.raises(TerminalError) as stopped:
                _ = [r async for r in EngagePager(
                    settings("http://mixpanel-behind-a-proxy.invalid")).records()]
            return str(stopped.value)
        finally:
            server.close()

    said = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(heads) == 1 and b"proxy-authorization: basic" in heads[0].lower()
    assert "the proxy http://***@127.0.0.1:" in said and "407" in said
    assert "engage" in said and "s3cret" not in said
