"""Adversarial review of the Raw Export client and the Mixpanel emulator's /export.

Claims from reference mixpanel-api.md §1 (and peers-and-pitfalls.md) that the existing
tests do not check, over real loopback sockets. A test marked ``xfail(strict=True)``
shows a defect; its reason says what is wrong.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import importlib.util
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

from mp2amp.errors import (
    AuthError,
    ContractError,
    Mp2AmpError,
    TerminalError,
)
from mp2amp.extract.export import WindowFile, fetch_windows, iter_window_records
from mp2amp.extract.ratelimit import RetriesSpent


def _sibling(name: str) -> ModuleType:
    """The helpers of a neighbouring test module (test dirs are not packages)."""
    spec = importlib.util.spec_from_file_location(f"_review_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conftest = _sibling("conftest")
_client_tests = _sibling("test_export")
_emulator_tests = _sibling("test_against_emulator")
lines_for = _client_tests.lines_for
settings = _client_tests.settings
write_project = _emulator_tests.write_project
emulator = _emulator_tests.emulator
client = _emulator_tests.client
stats = _emulator_tests.stats
EMU_DAYS: list[date] = _emulator_tests.DAYS
PER_DAY: int = _emulator_tests.PER_DAY

DAY = date(2024, 1, 1)


# --- a scripted raw server: any status, headers, body bytes, framing ----------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)  # written one by one (HTTP chunks)
    drop: bool = False  # close the connection instead of ending the body


class ScriptedServer:
    """Each request gets the next Reply (the last one repeats); requests are logged."""

    def __init__(self, replies: list[Reply] | Callable[[int], Reply]) -> None:
        self.replies = replies
        self.log: list[tuple[float, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.log.append((time.monotonic(), dict(request.query)))
        n = len(self.log)
        replies = self.replies
        reply = replies(n) if callable(replies) else replies[min(n, len(replies)) - 1]
        resp = web.StreamResponse(status=reply.status,
                                  headers={"Content-Type": "text/plain", **reply.headers})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in reply.body:
            await resp.write(piece)
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with _conftest.serve_export(self.handle) as base_url:
            yield base_url


def fetch_scripted(srv: ScriptedServer, workdir: Path, days: list[date] | None = None,
                   timeout: float = 30.0, **kw: Any) -> list[WindowFile]:
    async def main() -> list[WindowFile]:
        async with srv.running() as base:
            gen = fetch_windows(settings(base, **kw), days or [DAY], workdir, concurrency=2)
            return [w async for w in gen]
    return asyncio.run(asyncio.wait_for(main(), timeout))


def body_of(lines: list[bytes]) -> bytes:
    return b"".join(x + b"\n" for x in lines)


def records_of(w: WindowFile) -> list[Any]:
    return [r.record for r in iter_window_records(w)]


# --- stream shapes: empty day, blank lines, no final newline, gzip members ----------------


def test_a_day_with_zero_events_is_a_complete_empty_window(tmp_path: Path) -> None:
    # The emulator answers 200 with an empty body (no gzip: under 1400 bytes); the
    # window is whole, fetched once, and reads back as nothing.
    write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj")
    empty = date(2024, 2, 20)  # no day file

    async def main() -> list[WindowFile]:
        base = await emu.start()
        try:
            return [w async for w in fetch_windows(client(base), [empty], tmp_path / "w")]
        finally:
            await emu.stop()

    (w,) = asyncio.run(main())
    assert (w.day, w.record_count, w.rejected_count, w.attempts, w.bytes) == (empty, 0, 0, 1, 0)
    assert records_of(w) == []


def test_empty_gzip_body_and_gzip_of_nothing_are_empty_windows(tmp_path: Path) -> None:
    srv = ScriptedServer([Reply(headers={"Content-Encoding": "gzip"},
                                body=[gzip.compress(b"")])])
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.attempts) == (0, 1)


def test_blank_and_whitespace_only_lines_are_neither_records_nor_rejections(
        tmp_path: Path) -> None:
    good = lines_for(DAY, 3)
    body = b"\n" + good[0] + b"\r\n   \n\t\n" + good[1] + b"\n \r\n\n" + good[2] + b"\n\n"
    srv = ScriptedServer([Reply(body=[body[i:i + 5] for i in range(0, len(body), 5)])])
    (w,) = fetch_scripted(srv, tmp_path)
    recs = list(iter_window_records(w))
    assert (w.record_count, w.rejected_count) == (3, 0) == (len(recs), 0)
    assert [r.record for r in recs] == [json.loads(x) for x in good]
    assert [r.line for r in recs] == [2, 5, 8]  # numbering counts the blank lines


def test_last_record_without_a_final_newline_is_kept(tmp_path: Path) -> None:
    good = lines_for(DAY, 4)
    body = b"\n".join(good)  # no newline at the end; chunked framing says it is whole
    srv = ScriptedServer([Reply(body=[body[:50], body[50:]])])
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.attempts) == (4, 1)
    assert records_of(w) == [json.loads(x) for x in good]


def test_record_cut_at_a_gzip_member_boundary_is_reassembled(tmp_path: Path) -> None:
    good = lines_for(DAY, 30)
    raw = body_of(good)
    cut = len(body_of(good[:10])) + 17  # mid-record
    members = gzip.compress(raw[:cut]) + gzip.compress(raw[cut:])
    srv = ScriptedServer([Reply(headers={"Content-Encoding": "gzip"},
                                body=[members[i:i + 11] for i in range(0, len(members), 11)])])
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.rejected_count, w.attempts) == (30, 0, 1)
    assert records_of(w) == [json.loads(x) for x in good]


@pytest.mark.parametrize("line", [b"export terminated early", b"terminated early\r",
                                  b"  Terminated Early  "])
def test_terminated_early_variants_refetch_the_window(tmp_path: Path, line: bytes) -> None:
    # mixpanel-utils #5 saw "export terminated early"; Airbyte checks "terminated early".
    good = lines_for(DAY, 5)
    cut = ScriptedServer([Reply(body=[body_of(good[:2]) + line + b"\n"]),
                          Reply(body=[body_of(good)])])
    (w,) = fetch_scripted(cut, tmp_path)
    assert (w.record_count, w.attempts) == (5, 2)
    assert records_of(w) == [json.loads(x) for x in good]


def test_terminated_early_as_the_last_line_without_newline_refetches(tmp_path: Path) -> None:
    good = lines_for(DAY, 5)
    srv = ScriptedServer([Reply(body=[body_of(good[:3]) + b"terminated early"]),
                          Reply(body=[body_of(good)])])
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.attempts) == (5, 2)


def test_gzip_body_dropped_mid_member_is_fetched_again(tmp_path: Path) -> None:
    good = lines_for(DAY, 200)
    packed = gzip.compress(body_of(good))
    srv = ScriptedServer([
        Reply(headers={"Content-Encoding": "gzip"}, body=[packed[: len(packed) // 2]],
              drop=True),
        Reply(headers={"Content-Encoding": "gzip"}, body=[packed]),
    ])
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.attempts) == (200, 2)
    assert not list(tmp_path.rglob("*.part"))


# --- a 5xx after the body started, against the emulator -----------------------------------


def test_server_failing_mid_stream_never_yields_a_half_window(tmp_path: Path) -> None:
    # The emulator's day file is damaged past its first ~KB: it sends 200 and some
    # records, then cuts the body (a 5xx it can no longer report). The window must not
    # come out half-counted; the other days must, whole.
    by_day = write_project(tmp_path / "proj")
    bad = EMU_DAYS[1]
    path = tmp_path / "proj" / "events" / f"{bad}.jsonl.gz"
    big = "".join(json.dumps({"event": "E", "properties": {
        "time": 1709251200 + i, "$insert_id": f"x{i}", "pad": "y" * 80}}) + "\n"
        for i in range(400)).encode()
    packed = gzip.compress(big)
    path.write_bytes(packed[: len(packed) * 2 // 3])
    emu = emulator(tmp_path / "proj")
    got: list[WindowFile] = []

    async def main() -> Any:
        base = await emu.start()
        try:
            async for w in fetch_windows(client(base, max_attempts=3), EMU_DAYS,
                                         tmp_path / "w", concurrency=1):
                got.append(w)
        finally:
            st = await stats(base)
            await emu.stop()
        return st

    with pytest.raises(RetriesSpent, match=rf"export of {bad} failed 3 times"):
        asyncio.run(main())
    assert bad not in [w.day for w in got]
    for w in got:
        assert records_of(w) == by_day[w.day.isoformat()]
    assert not (tmp_path / "w" / "export" / f"{bad}.jsonl").exists()
    assert not list(tmp_path.rglob("*.part"))
    assert emu.state.stats["export_file_errors"] == 3


# --- bad input: every good record kept, every bad one named ------------------------------


def test_bad_lines_are_named_by_window_and_line_and_the_rest_is_kept(tmp_path: Path) -> None:
    good = lines_for(DAY, 4)
    deep = b'{"event":"D","properties":{"n":' + b"[" * 3000 + b"]" * 3000 + b"}}"
    huge_int = b'{"event":"H","properties":{"n":123456789012345678901234567890}}'
    huge_str = b'{"event":"S","properties":{"s":"' + b"z" * 3_000_000 + b'"}}'
    lines = [good[0], b"{oops", b"[1,2]", b'"text"', b"null", b'{"event":"\xff"}', deep,
             good[1], huge_int, huge_str, good[2], b"{\"event\": 1,", good[3]]
    body = body_of(lines)
    srv = ScriptedServer([Reply(headers={"Content-Encoding": "gzip"},
                                body=[gzip.compress(body)])])
    (w,) = fetch_scripted(srv, tmp_path)
    recs = list(iter_window_records(w))
    assert (w.record_count, w.rejected_count) == (len(recs), 7)
    kept = [r.record for r in recs if r.record is not None]
    assert kept[:2] == [json.loads(good[0]), json.loads(good[1])]
    assert kept[2]["event"] == "H"  # its value: see the nearest-double test below
    assert len(kept[3]["properties"]["s"]) == 3_000_000
    assert kept[4:] == [json.loads(good[2]), json.loads(good[3])]
    bad = {r.line: r.rejection for r in recs if r.rejection is not None}
    assert {k: v.reason for k, v in bad.items()} == {
        2: "malformed_json", 3: "not_an_object", 4: "not_an_object", 5: "not_an_object",
        6: "invalid_utf8", 7: "malformed_json", 12: "malformed_json"}
    for line, rej in bad.items():
        assert rej.source == "export:2024-01-01" and rej.line == line
        assert f"export:2024-01-01 line {line}" in rej.message


# --- HTTP errors: 402, 403, to_date later than today, secret auth, filters ----------------


def test_402_payment_required_stops_at_once_with_its_message(tmp_path: Path) -> None:
    body = json.dumps({"error": "Your plan does not include the export API",
                       "status": "error"}).encode()
    srv = ScriptedServer([Reply(status=402, headers={"Content-Type": "application/json"},
                                body=[body])])
    with pytest.raises(ContractError) as info:
        fetch_scripted(srv, tmp_path)
    assert "402" in str(info.value) and "does not include the export API" in str(info.value)
    assert len(srv.log) == 1  # not retried


def _run_emulator(tmp_path: Path, days: list[date], emu_kw: dict[str, Any] | None = None,
                  **client_kw: Any) -> tuple[list[WindowFile], Any]:
    write_project(tmp_path / "proj")
    emu = emulator(tmp_path / "proj", **(emu_kw or {}))
    concurrency = client_kw.pop("_c", 3)

    async def main() -> tuple[list[WindowFile], Any]:
        base = await emu.start()
        try:
            ws = [w async for w in fetch_windows(client(base, **client_kw), days,
                                                 tmp_path / "w", concurrency=concurrency)]
            return ws, await stats(base)
        finally:
            await emu.stop()

    return asyncio.run(main())


def test_service_account_for_another_project_is_a_403_auth_error(tmp_path: Path) -> None:
    with pytest.raises(AuthError) as info:
        _run_emulator(tmp_path, EMU_DAYS[:1], project_id=43)
    text = str(info.value)
    assert "403" in text and "with the service account credentials" in text
    assert "mixpanel.project_id" in text and "svc:pw" not in text


def test_to_date_later_than_today_stops_with_the_timezone_hint(tmp_path: Path) -> None:
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    with pytest.raises(TerminalError, match=r"later than today.*mixpanel.timezone"):
        _run_emulator(tmp_path, [tomorrow])


def test_api_secret_auth_against_the_emulator(tmp_path: Path) -> None:
    ws, _ = _run_emulator(tmp_path, EMU_DAYS[:1], emu_kw={"service_account": None,
                                                           "api_secret": "sek"},
                           service_account=None, api_secret="sek", project_id=None)
    assert [w.record_count for w in ws] == [PER_DAY]


def test_event_and_where_filters_reach_the_emulator(tmp_path: Path) -> None:
    ws, _ = _run_emulator(tmp_path, EMU_DAYS[:2], events=["E1", "E2"],
                          where='properties["distinct_id"] != "u1"')
    for w in ws:
        names = {r["event"] for r in records_of(w)}
        ids = {r["properties"]["distinct_id"] for r in records_of(w)}
        assert names == {"E1", "E2"} and "u1" not in ids
        assert w.record_count == sum(1 for i in range(PER_DAY) if i % 3 and i != 1)


# --- limits against the emulator: 3/s and concurrency --------------------------------------


def test_client_at_the_documented_3_per_second_never_draws_a_429(tmp_path: Path) -> None:
    days = [date(2024, 3, 1) + timedelta(days=i) for i in range(7)]
    ws, st = _run_emulator(tmp_path, days, emu_kw={"export_per_second": 3,
                                                   "export_per_hour": 1000},
                           per_second=3, _c=4)
    assert len(ws) == 7 and st["requests"].get("export_429", 0) == 0
    assert st["requests"]["export_requests"] == 7


def test_client_concurrency_cap_matches_the_server_cap(tmp_path: Path) -> None:
    ws, st = _run_emulator(tmp_path, EMU_DAYS, emu_kw={"export_concurrent": 1,
                                                       "chunk_delay": 0.05, "chunk_bytes": 512},
                           max_concurrent=1, _c=3)
    assert sorted(w.day for w in ws) == EMU_DAYS
    assert st["requests"].get("export_429", 0) == 0


def test_server_concurrency_429_is_waited_out(tmp_path: Path) -> None:
    ws, st = _run_emulator(tmp_path, EMU_DAYS, emu_kw={"export_concurrent": 1,
                                                       "chunk_delay": 0.05, "chunk_bytes": 512},
                           _c=3)
    assert sorted(w.day for w in ws) == EMU_DAYS
    assert all(w.record_count == PER_DAY for w in ws)
    assert st["requests"].get("export_429", 0) >= 1


# --- Retry-After forms ---------------------------------------------------------------------


def _throttled_then_ok(retry_after: Callable[[], str]) -> ScriptedServer:
    good = body_of(lines_for(DAY, 3))

    def reply(n: int) -> Reply:
        if n == 1:
            return Reply(status=429, headers={"Retry-After": retry_after()},
                         body=[b"Query rate limit exceeded"])
        return Reply(body=[good])

    return ScriptedServer(reply)


def test_retry_after_in_seconds_is_waited(tmp_path: Path) -> None:
    srv = _throttled_then_ok(lambda: "2")
    (w,) = fetch_scripted(srv, tmp_path)
    assert w.attempts == 2 and srv.log[1][0] - srv.log[0][0] >= 2.0


def test_retry_after_as_an_http_date_is_waited(tmp_path: Path) -> None:
    def at() -> str:
        return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=3),
                                           usegmt=True)

    srv = _throttled_then_ok(at)
    (w,) = fetch_scripted(srv, tmp_path)
    assert w.attempts == 2 and srv.log[1][0] - srv.log[0][0] >= 2.0


def test_non_finite_retry_after_does_not_hang_the_run(tmp_path: Path) -> None:
    srv = _throttled_then_ok(lambda: "inf")
    try:
        (w,) = fetch_scripted(srv, tmp_path, timeout=5.0)
    except TimeoutError:
        pytest.fail("the export waited forever on Retry-After: inf")
    except Mp2AmpError:
        return  # a clear error is fine too
    assert w.record_count == 3


def test_integer_past_64_bits_is_read_as_the_nearest_double(tmp_path: Path) -> None:
    """Documented (README, dead letters): orjson reads it so, as JavaScript does; finding
    such digits first would cost a quarter of every parse."""
    big = 123456789012345678901234567890
    line = b'{"event":"H","properties":{"time":1704067200,"distinct_id":%d}}' % big
    srv = ScriptedServer([Reply(body=[line + b"\n"])])
    (w,) = fetch_scripted(srv, tmp_path)
    (rec,) = records_of(w)
    assert rec["properties"]["distinct_id"] == float(big)
    assert type(rec["properties"]["distinct_id"]) is float
