"""Session 18, second review of d4e7ac9 (split records with JSON middle pieces, 429 refunds,
the ~5 s stop for an unreachable Mixpanel) and of the proxy settings (trust_env, 4379a22),
over real loopback sockets where a request is involved.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong. Each
was checked to fail for that reason with ``--runxfail``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import WindowFile, fetch_windows, iter_window_records
from mp2amp.extract.lines import parse_lines
from mp2amp.extract.ratelimit import RateLimiter
from mp2amp.proxyenv import PROXY_VARIABLES, bypass_proxy_for_loopback
from shared_kit import serve_routes

DAY = date(2024, 1, 1)


def record(i: int, **extra: Any) -> bytes:
    props = {"time": 1704067200000 + i, "$insert_id": f"id-{i}", "distinct_id": f"user-{i}",
             **extra}
    return json.dumps({"event": "Viewed", "properties": props}, separators=(",", ":")).encode()


def mixpanel(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01}
    opts.update(kw)
    return MixpanelSettings(**opts)


def limiter() -> RateLimiter:
    return RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)


def served(body: bytes) -> Any:
    """GET /api/2.0/export answering ``body`` in 7-byte chunks that ignore lines."""
    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 7):
            await resp.write(body[i:i + 7])
        await resp.write_eof()
        return resp
    return handle


def fetch_body(body: bytes, workdir: Path) -> WindowFile:
    async def main() -> WindowFile:
        async with serve_routes({("GET", "/api/2.0/export"): served(body)}) as base:
            (w,) = [w async for w in fetch_windows(mixpanel(base), [DAY], workdir,
                                                   limiter=limiter())]
            return w
    return asyncio.run(asyncio.wait_for(main(), 20))


# --- (a) records split across lines ----------------------------------------------------

SPLIT = record(1, address="Street 12 City")
_PROPS = SPLIT.index(b"{", 1)
_KEY = SPLIT.index(b'"$insert_id"')


@pytest.mark.parametrize("pieces", [
    # the properties object cut over two lines, its closing brace and the record's apart
    [SPLIT[:_PROPS], SPLIT[_PROPS:_KEY + 12], SPLIT[_KEY + 12:-1], b"}"],
    # a key cut in two: '"$insert_' + 'id"' is the JSON string "$insert_id"
    [SPLIT[:_KEY], SPLIT[_KEY:_KEY + 9], SPLIT[_KEY + 9:_KEY + 12], SPLIT[_KEY + 12:]],
], ids=["middle-lines-are-an-object", "middle-lines-are-a-string"])
def test_record_split_in_four_whose_middle_lines_join_into_json_is_rejoined(
        tmp_path: Path, pieces: list[bytes]) -> None:
    # The fix rejoins a record whose single middle line is JSON alone; two middle lines
    # that are JSON together (the same whole nested object, only cut once more) end the
    # join early: the record is lost, its first and last pieces become malformed_json and
    # the middle one a bogus record (no event) or a not_an_object rejection.
    assert b"".join(pieces) == SPLIT
    body = b"\n".join([record(0), *pieces, record(2)]) + b"\n"
    window = fetch_body(body, tmp_path)
    got = list(iter_window_records(window))
    assert [(r.line, r.record) for r in got] == [
        (1, json.loads(record(0))), (2, json.loads(SPLIT)), (6, json.loads(record(2)))]
    assert (window.record_count, window.rejected_count) == (3, 0)


def test_bom_before_a_split_record_with_a_json_middle_piece(tmp_path: Path) -> None:
    cut = SPLIT.index(b"12 City")
    bom = b"\xef\xbb\xbf"
    # the same file without the middle JSON piece, or without the BOM, reads the record
    two = [bom + SPLIT[:cut], SPLIT[cut:], record(2)]
    assert [r.record for r in parse_lines("f", two)] == [json.loads(SPLIT),
                                                          json.loads(record(2))]
    three = [bom + SPLIT[:cut], b"12", SPLIT[cut + 2:], record(2)]
    got = list(parse_lines("f", three))
    assert [(r.line, r.record) for r in got] == [(1, json.loads(SPLIT)),
                                                 (4, json.loads(record(2)))]


_records = st.builds(
    lambda i, text, number: record(i, note=text, n=number, nested={"a": [number, text]}),
    st.integers(0, 10**6), st.text(max_size=10), st.integers(-10**12, 10**12))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(_records, min_size=2, max_size=4), st.data())
def test_any_record_split_in_two_or_three_comes_back_whole(
        lines: list[bytes], data: st.DataObject) -> None:
    # Regression guard for the fix: with one middle line at most (JSON alone or not),
    # cutting one record anywhere gives back every record once, at its first line.
    k = data.draw(st.integers(0, len(lines) - 1))
    rec = lines[k]
    cuts = sorted(data.draw(st.sets(st.integers(1, len(rec) - 1), min_size=1, max_size=2)))
    pieces = [rec[a:b] for a, b in zip([0, *cuts], [*cuts, len(rec)], strict=True)]
    if any(not p.strip() for p in pieces):
        return  # a blank line carries nothing (its bytes would be whitespace only)
    fed = [*lines[:k], *pieces, *lines[k + 1:]]
    got = list(parse_lines("p", fed))
    want_lines = [i + 1 if i <= k else i + len(pieces) for i in range(len(lines))]
    assert [(r.line, r.record) for r in got] == list(
        zip(want_lines, [json.loads(x) for x in lines], strict=True))


# --- (d) proxies from the environment ---------------------------------------------------


def test_a_netrc_entry_for_the_host_does_not_break_the_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A data engineer's ~/.netrc (curl, pip, git use it) may name the host, or hold a
    # `default` entry; the export sends its own credentials and must keep working.
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password elsewhere\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    window = fetch_body(record(0) + b"\n", tmp_path / "work")
    assert window.record_count == 1


class _Proxy:
    """A forward proxy on loopback that only records what was asked of it (answers 502)."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.asked.append(await reader.readline())
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.mark.parametrize("no_proxy", ["127.0.0.2", "*"], ids=["user-host", "star"])
def test_hosts_the_user_keeps_off_the_proxy_stay_off_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    # HTTP_PROXY set machine-wide, NO_PROXY (upper case only, as often written) naming the
    # host mp2amp talks to, or '*' (no proxy at all). 127.0.0.2 is loopback to the kernel
    # but not one of the names mp2amp adds, so it stands for any host of the user's list.
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = _Proxy()
    asked: list[str] = []

    async def export(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(text=record(0).decode() + "\n")

    async def main() -> list[WindowFile]:
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        app = web.Application()
        app.router.add_get("/api/2.0/export", export)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.2", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        monkeypatch.setenv("HTTP_PROXY",
                           f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        monkeypatch.setenv("NO_PROXY", no_proxy)
        bypass_proxy_for_loopback()  # what `mp2amp` does first
        try:
            gen = fetch_windows(mixpanel(f"http://127.0.0.2:{port}", max_attempts=2),
                                [DAY], tmp_path, limiter=limiter())
            return [w async for w in gen]
        except Exception:  # what matters here is where the requests went
            return []
        finally:
            server.close()
            await runner.cleanup()

    windows = asyncio.run(asyncio.wait_for(main(), 20))
    assert proxy.asked == [], (
        f"NO_PROXY={no_proxy!r} was set, yet the export went to the proxy: {proxy.asked}")
    assert asked == ["/api/2.0/export"] and [w.record_count for w in windows] == [1]


# --- (a) an unframed stream cut right after a middle piece ------------------------------


def test_unframed_body_cut_after_a_json_middle_piece_is_fetched_again(tmp_path: Path) -> None:
    # No Content-Length, not chunked (HTTP/1.0 style, some proxies): the end of the body is
    # only the connection closing. The first answer stops inside the split record, just
    # after its '12' (JSON alone, but the record is still open); the second is whole.
    cut = SPLIT.index(b"12 City")
    whole = b"\n".join([record(0), SPLIT[:cut], SPLIT[cut:], record(2)]) + b"\n"
    answers = [b"\n".join([record(0), SPLIT[:cut], b"12"]), whole]
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
            (w,) = [w async for w in fetch_windows(mixpanel(base), [DAY], tmp_path,
                                                   limiter=limiter())]
            return w
        finally:
            server.close()

    window = asyncio.run(asyncio.wait_for(main(), 20))
    assert [r.record for r in iter_window_records(window)] == [
        json.loads(record(0)), json.loads(SPLIT), json.loads(record(2))]
    assert (window.record_count, window.rejected_count, len(sent)) == (3, 0, 2)
