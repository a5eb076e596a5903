"""Session 18, third review of the Export API client (0a5e86e, 02f71fe) and of the
environment's proxy (proxyenv.proxy_for, 14cc7a2, 5093ccf): the line joiner on real wild
records, an unframed body cut at a line end, proxies written without a scheme or with
``https://``, a proxy login kept in ~/.netrc, aiohttp's deprecated ``auth=``, Engage's
proxy refusals and connect timeout, credentials written into a Mixpanel ``api_host``.
Requests go over real loopback sockets.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong. Each
was checked to fail for that reason with ``--runxfail``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

import mp2amp.extract.export as export
from mp2amp.errors import Mp2AmpError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.export import WindowFile, fetch_windows, iter_window_records
from mp2amp.extract.lines import MAX_JOINED_LINES, parse_lines, split_lines
from mp2amp.extract.ratelimit import RateLimiter, RetriesSpent
from mp2amp.load import Uploader, UploadSettings
from mp2amp.proxyenv import PROXY_VARIABLES
from shared_kit import serve_routes

DAY = date(2024, 1, 1)
WILD = Path("/work/shared/fixtures/wild")
AMPLITUDE_OK = b'{"code":200,"events_ingested":1}'


def record(i: int, **extra: Any) -> bytes:
    props = {"time": 1704067200000 + i, "$insert_id": f"id-{i}", "distinct_id": f"user-{i}",
             **extra}
    return json.dumps({"event": "Viewed", "properties": props}, separators=(",", ":")).encode()


def mixpanel(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01,
                            "max_attempts": 3, **kw}
    return MixpanelSettings(**opts)


async def fetch(st_: MixpanelSettings, workdir: Path) -> list[WindowFile]:
    limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
    return [w async for w in fetch_windows(st_, [DAY], workdir, limiter=limiter)]


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy unless a test sets one; an empty ~/.netrc; no 1 s waits between refusals."""
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    monkeypatch.setattr(export, "refused_wait", lambda: 0.01)


Answer = Callable[[bytes], tuple[int, bytes]]


class FakeProxy:
    """A forward proxy on loopback: records each request's head and answers it with
    ``answer(head) -> (status, body)`` (a GET or POST in absolute form for an http://
    host; a CONNECT for an https:// one). ``connections`` counts every TCP connection,
    whatever was said on it (a TLS ClientHello to an https:// proxy URL too)."""

    REASONS: ClassVar[dict[int, bytes]] = {200: b"OK", 403: b"Forbidden", 407: b"Proxy Authentication Required",
               502: b"Bad Gateway"}

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            status, body = self.answer(head)
            ctype = b"application/json" if body.startswith(b'{"code"') else b"text/plain"
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s"
                         % (status, self.REASONS[status], ctype, len(body), body))
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


def run(coro: Awaitable[Any], limit: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit))  # type: ignore[arg-type]


async def upload_one(host: str) -> Any:
    up = Uploader(UploadSettings(api_key="k", api_host=host, concurrency=1, gzip=False,
                                 max_retries=2, backoff_base=0.01))
    async with up:
        await up.submit({"event_type": "v", "device_id": "device-1", "insert_id": "n1",
                         "time": 1_700_000_000_000}, ("s", 1))
        return await up.close()


# --- the line joiner on real records -----------------------------------------------------


def _wild_records() -> list[bytes]:
    out = []
    for name in ("mixpanel-export-events.jsonl", "mixpanel-engage-profiles.jsonl"):
        for line in (WILD / name).read_bytes().splitlines():
            if line.strip() and isinstance(json.loads(line), dict):
                out.append(line)
    return out


WILD_RECORDS = _wild_records()


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.data())
def test_wild_records_cut_into_up_to_max_pieces_come_back_whole(data: st.DataObject) -> None:
    # Regression guard (passes): several real records, each maybe cut into 2..8 pieces at
    # any byte, blank lines between records, CRLF or LF, a UTF-8 BOM first: every record
    # once, whole, at its first line, what the Export stream and a saved file both read.
    n = data.draw(st.integers(1, 4))
    lines = [data.draw(st.sampled_from(WILD_RECORDS)) for _ in range(n)]
    fed: list[bytes] = []
    want: list[tuple[int, Any]] = []
    for rec in lines:
        pieces = [rec]
        if data.draw(st.booleans()):
            count = data.draw(st.integers(2, MAX_JOINED_LINES))
            cuts = sorted(data.draw(st.sets(st.integers(1, len(rec) - 1),
                                            min_size=count - 1, max_size=count - 1)))
            pieces = [rec[a:b] for a, b in zip([0, *cuts], [*cuts, len(rec)], strict=True)]
            if any(not p.strip() for p in pieces):  # a blank line carries nothing
                pieces = [rec]
        want.append((len(fed) + 1, json.loads(rec)))
        fed.extend(pieces)
        if data.draw(st.booleans()):
            fed.append(b"")
    if data.draw(st.booleans()):
        fed[0] = b"\xef\xbb\xbf" + fed[0]
    end = data.draw(st.sampled_from([b"\n", b"\r\n"]))
    body = b"".join(line + end for line in fed)
    chunks = [body[i:i + 13] for i in range(0, len(body), 13)]
    got = [(r.line, r.record) for r in parse_lines("p", split_lines(chunks))]
    assert got == want


# --- an unframed body cut at a line end --------------------------------------------------


def test_unframed_body_cut_right_after_a_split_records_first_piece_is_fetched_again(
        tmp_path: Path) -> None:
    # No Content-Length, not chunked: the body ends when the connection closes. A server
    # writes line by line, so a cut at a line end is the likely one; here it falls after
    # the first piece of a record Mixpanel split across two lines.
    split = record(1, address="Street 12 City")
    cut = split.index(b"12 City")
    whole = b"\n".join([record(0), split[:cut], split[cut:], record(2)]) + b"\n"
    answers = [record(0) + b"\n" + split[:cut] + b"\n", whole]
    sent: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        body = answers[min(len(sent), len(answers) - 1)]
        sent.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     b"\r\n" + body)
        await writer.drain()
        writer.close()

    async def main() -> WindowFile:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            (w,) = await fetch(mixpanel(base), tmp_path)
            return w
        finally:
            server.close()

    window = run(main())
    assert [r.record for r in iter_window_records(window)] == [
        json.loads(record(0)), json.loads(split), json.loads(record(2))]
    assert (window.record_count, window.rejected_count, len(sent)) == (3, 0, 2)


# --- proxies from the environment --------------------------------------------------------


@pytest.mark.parametrize("client", ["export", "uploader"])
def test_a_proxy_written_without_a_scheme_is_used_as_curl_uses_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    def answer(head: bytes) -> tuple[int, bytes]:
        return 200, (AMPLITUDE_OK if head.startswith(b"POST") else record(0) + b"\n")

    async def main() -> tuple[Any, FakeProxy]:
        async with FakeProxy(answer) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"127.0.0.1:{proxy.port}")
            if client == "export":
                windows = await fetch(mixpanel("http://mixpanel-behind-a-proxy.invalid"),
                                      tmp_path)
                return [w.record_count for w in windows], proxy
            report = await upload_one("http://amplitude-behind-a-proxy.invalid")
            return report.accepted, proxy

    got, proxy = run(main())
    assert len(proxy.heads) == 1 and got == ([1] if client == "export" else 1)


def test_a_scheme_less_proxy_password_never_reaches_logs_or_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        ) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> str:
        async with FakeProxy(lambda head: (407, b"")) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"ops:s3cret@127.0.0.1:{proxy.port}")
            try:
                await fetch(mixpanel("http://mixpanel-behind-a-proxy.invalid"), tmp_path)
            except Exception as exc:
                return str(exc)
            return ""

    said = run(main())
    assert said, "the export went through a proxy that refuses every request"
    shown = said + "\n" + caplog.text
    assert "s3cret" not in shown, shown


def test_an_https_proxy_url_is_not_silently_gone_around_by_the_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> FakeProxy:
        async with FakeProxy(lambda head: (502, b"")) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"https://127.0.0.1:{proxy.port}")
            with suppress(Exception):  # the fake proxy speaks no TLS: where it went counts
                # a TLS handshake the fake never answers: bounded by the connect timeout
                await fetch(mixpanel("https://mixpanel-behind-a-proxy.invalid",
                                     max_attempts=1, connect_timeout=1), tmp_path)
            return proxy

    proxy = run(main())
    assert proxy.connections >= 1, "the export never connected to the proxy it was given"


def test_a_proxy_login_in_netrc_works_for_the_upload_as_for_the_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login ops password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    def answer(head: bytes) -> tuple[int, bytes]:
        if b"proxy-authorization: basic" not in head.lower():
            return 407, b""
        return 200, (AMPLITUDE_OK if head.startswith(b"POST") else record(0) + b"\n")

    async def main() -> tuple[list[int], Any, list[bytes]]:
        async with FakeProxy(answer) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            windows = await fetch(mixpanel("http://mixpanel-behind-a-proxy.invalid"),
                                  tmp_path / "work")
            try:
                accepted = (await upload_one("http://amplitude-behind-a-proxy.invalid")
                            ).accepted
            except Mp2AmpError as exc:
                accepted = str(exc)
            return [w.record_count for w in windows], accepted, proxy.heads

    exported, uploaded, heads = run(main())
    assert exported == [1]  # the export passes the proxy with the netrc login
    posts = [h for h in heads if h.startswith(b"POST")]
    assert posts and all(b"proxy-authorization: basic" in h.lower() for h in posts), posts
    assert uploaded == 1


def test_a_proxys_407_to_an_http_amplitude_host_names_the_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[str, FakeProxy]:
        async with FakeProxy(lambda head: (407, b"")) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://ops:s3cret@127.0.0.1:{proxy.port}")
            with pytest.raises(Mp2AmpError) as stopped:
                await upload_one("http://amplitude-behind-a-proxy.invalid")
            return str(stopped.value), proxy

    said, proxy = run(main())
    assert len(proxy.heads) == 1, said
    assert f"proxy http://***@127.0.0.1:{proxy.port}" in said, said
    assert "Amplitude answered 407" not in said and "s3cret" not in said, said


# --- aiohttp's deprecated auth= ----------------------------------------------------------


def test_export_and_engage_requests_raise_no_deprecation_warning(tmp_path: Path) -> None:
    async def export_day(request: web.Request) -> web.Response:
        return web.Response(text=record(0).decode() + "\n")

    async def engage(request: web.Request) -> web.Response:
        return web.json_response({"results": [{"$distinct_id": "u", "$properties": {}}],
                                  "page": 0, "page_size": 1000, "session_id": "s",
                                  "total": 1, "status": "ok"})

    async def main() -> tuple[list[WindowFile], list[Any]]:
        async with serve_routes({("GET", "/api/2.0/export"): export_day,
                                 ("POST", "/api/query/engage"): engage}) as base:
            windows = await fetch(mixpanel(base), tmp_path)
            profiles = [r async for r in EngagePager(mixpanel(base)).records()]
            return windows, profiles

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        windows, profiles = run(main())
    assert [w.record_count for w in windows] == [1] and len(profiles) == 1
    deprecated = [f"{w.filename}:{w.lineno}: {w.message}" for w in seen
                  if issubclass(w.category, DeprecationWarning)]
    assert deprecated == []


# --- Engage: a proxy's refusal, the connect timeout --------------------------------------


def test_engage_stops_at_a_proxys_407_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[BaseException, FakeProxy]:
        async with FakeProxy(lambda head: (407, b"")) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"http://ops:s3cret@127.0.0.1:{proxy.port}")
            pager = EngagePager(mixpanel("https://mixpanel-behind-a-proxy.invalid"))
            with pytest.raises(Mp2AmpError) as stopped:
                _ = [r async for r in pager.records()]
            return stopped.value, proxy

    error, proxy = run(main())
    said = str(error)
    assert len(proxy.heads) == 1, f"asked the proxy {len(proxy.heads)} times: {said}"
    assert not isinstance(error, RetriesSpent), said
    assert "407" in said and f"127.0.0.1:{proxy.port}" in said and "s3cret" not in said


@contextmanager
def blackholed_port() -> Iterator[int]:
    """A loopback port whose SYNs are dropped (a listener whose accept queue is full)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.1)
        yield port
    finally:
        for s in [*fillers, srv]:
            s.close()


def test_engage_gives_up_a_connect_after_the_connect_timeout() -> None:
    with blackholed_port() as port:
        settings_ = mixpanel(f"http://127.0.0.1:{port}", connect_timeout=0.2,
                             read_timeout=2.5, max_attempts=1)

        async def main() -> str:
            with pytest.raises(Mp2AmpError) as stopped:
                _ = [r async for r in EngagePager(settings_).records()]
            return str(stopped.value)

        started = time.monotonic()
        said = run(main())
        took = time.monotonic() - started
    assert took < 1.5, f"{took:.1f} s for a connect given 0.2 s: {said}"


# --- credentials in a Mixpanel api_host --------------------------------------------------


@pytest.mark.parametrize("client", ["export", "engage"])
def test_credentials_in_a_mixpanel_api_host_are_refused_as_the_readme_says(
        tmp_path: Path, client: str) -> None:
    # README: "a Mixpanel api_host holding credentials is refused (they come only from
    # the environment)"; mp2amp is also a library, whose settings check themselves.
    async def main() -> None:
        settings_ = mixpanel("http://ops:s3cret@127.0.0.1:9")
        if client == "export":
            await fetch(settings_, tmp_path)
        else:
            _ = [r async for r in EngagePager(settings_).records()]

    with pytest.raises(Exception) as stopped:  # its type is the point
        run(main())
    assert isinstance(stopped.value, Mp2AmpError), repr(stopped.value)
    assert "s3cret" not in str(stopped.value)
