"""The Raw Export client over real loopback sockets: windows, limits, faults, auth, hosts."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mp2amp.errors import AuthError, ConfigError, TerminalError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import (
    Days,
    WindowFile,
    completed_window,
    days_between,
    fetch_windows,
    iter_window_records,
    window_path,
    window_source,
    windows_of,
)
from mp2amp.extract.ratelimit import RetriesSpent

DAYS = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]


def lines_for(day: date, n: int) -> list[bytes]:
    return [json.dumps({"event": "E", "properties": {
        "time": 1704067200 + i, "$insert_id": f"{day}-{i}", "text": "caf\u00e9 \u2028 x"}}).encode()
        for i in range(n)]


def settings(base_url: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base_url, "service_account": "user:pw",
                            "per_second": 1000, "per_hour": 1000, "backoff_base": 0.01}
    opts.update(kw)
    return MixpanelSettings(**opts)


def fetch_all(srv: Any, workdir: Path, days: list[date], **kw: Any) -> list[WindowFile]:
    concurrency = kw.pop("concurrency", 3)

    async def main() -> list[WindowFile]:
        async with srv.running() as base:
            return [w async for w in fetch_windows(settings(base, **kw), days, workdir,
                                                   concurrency=concurrency)]
    return sorted(asyncio.run(main()), key=lambda w: w.day)


def setup_days(srv: Any, n: int = 5) -> None:
    srv.days = {d.isoformat(): lines_for(d, n) for d in DAYS}


def test_one_request_per_day_with_inclusive_dates(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    export_server.chunk_delay = 0.01
    windows = fetch_all(export_server, tmp_path, [*DAYS, DAYS[0]], concurrency=3)
    assert [w.day for w in windows] == DAYS
    asked = [(r["query"]["from_date"], r["query"]["to_date"]) for r in export_server.log]
    assert sorted(asked) == [(d.isoformat(), d.isoformat()) for d in DAYS]  # no day twice
    assert all(r["gzip"] for r in export_server.log)
    assert export_server.max_in_flight > 1  # several windows in flight
    for w in windows:
        recs = list(iter_window_records(w))
        assert w.record_count == len(recs) == 5 and w.rejected_count == 0 and w.attempts == 1
        assert [r.record for r in recs] == [json.loads(x) for x in lines_for(w.day, 5)]
        assert recs[0].source == f"export:{w.day}" and recs[0].line == 1
        assert w.bytes == w.path.stat().st_size
    assert not list(tmp_path.rglob("*.part"))


def test_days_between_is_inclusive() -> None:
    assert days_between(DAYS[0], DAYS[2]) == DAYS
    assert days_between(DAYS[1], DAYS[1]) == [DAYS[1]]
    with pytest.raises(ValueError):
        days_between(DAYS[2], DAYS[0])


def test_windows_of_several_days_follow_one_another_without_sharing_a_day() -> None:
    jan = [date(2024, 1, d) for d in range(1, 11)]
    windows = windows_of(jan[0], jan[-1], 3)
    assert [(w.first.day, w.last.day) for w in windows] == [(1, 3), (4, 6), (7, 9), (10, 10)]
    assert [str(w) for w in windows][-2:] == ["2024-01-07..2024-01-09", "2024-01-10"]
    assert windows_of(jan[0], jan[2]) == [Days(d, d) for d in jan[:3]]
    assert windows_of(jan[0], jan[1], 31) == [Days(jan[0], jan[1])]
    assert window_source(windows[0]) == "export:2024-01-01..2024-01-03"
    assert window_source(jan[0]) == window_source(Days(jan[0], jan[0])) == "export:2024-01-01"
    assert window_path(Path("w"), windows[0]) == Path("w/export/2024-01-01..2024-01-03.jsonl")


def test_export_window_days_is_checked() -> None:
    from mp2amp.config import load_config

    for bad in (0, 32):
        with pytest.raises(ConfigError, match="export_window_days"):
            load_config(None, {"source.from_date": "2024-01-01", "source.to_date": "2024-01-02",
                               "source.export_window_days": bad}, env={})


def test_429_waits_for_retry_after_and_pauses_everyone(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    export_server.script = {"2024-01-01": ["429"]}
    export_server.retry_after = "0.3"
    windows = fetch_all(export_server, tmp_path, DAYS[:1])
    assert windows[0].attempts == 2 and windows[0].record_count == 5
    first, second = export_server.log
    assert second["t"] - first["t"] >= 0.3


def test_429_pauses_the_windows_that_start_meanwhile(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    export_server.script = {"2024-01-01": ["429"]}
    export_server.retry_after = "0.5"
    fetch_all(export_server, tmp_path, DAYS, concurrency=2)
    first = export_server.log[0]["t"]
    third = next(r["t"] for r in export_server.log if r["day"] == "2024-01-03")
    assert third - first >= 0.5  # day 3 waited for the pause, not only day 1


def test_429_does_not_use_up_the_attempts(export_server: Any, tmp_path: Path) -> None:
    # Throttling is the server saying "later", not a failure: a window that lost the race
    # for a slot a few times must not stop the run (only real failures count).
    setup_days(export_server)
    export_server.script = {"2024-01-01": ["429"] * 4 + ["500"]}
    export_server.retry_after = "0.01"
    (w,) = fetch_all(export_server, tmp_path, DAYS[:1], max_attempts=2)
    assert (w.attempts, w.record_count) == (6, 5)


def test_endless_429_stops_with_the_rate_limit_error(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    export_server.script = {"2024-01-01": ["429"] * 5}
    export_server.retry_after = "0.01"
    with pytest.raises(RetriesSpent, match=r"2024-01-01 was throttled 3 times"):
        fetch_all(export_server, tmp_path, DAYS[:1], max_rate_limited=3)
    assert len(export_server.log) == 3


@pytest.mark.parametrize("fault", ["terminated", "drop", "500"])
def test_broken_stream_refetches_the_whole_window(export_server: Any, tmp_path: Path,
                                                   fault: str) -> None:
    setup_days(export_server, n=6)
    export_server.script = {"2024-01-02": [fault, fault]}
    windows = fetch_all(export_server, tmp_path, DAYS)
    w = windows[1]
    assert w.attempts == 3
    recs = list(iter_window_records(w))
    assert [r.record for r in recs] == [json.loads(x) for x in lines_for(w.day, 6)]
    assert w.record_count == 6 and b"terminated" not in w.path.read_bytes()
    assert [r["day"] for r in export_server.log].count("2024-01-02") == 3
    assert not list(tmp_path.rglob("*.part"))


def test_split_record_rejoined_and_counted_once(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server, n=4)
    export_server.split = {"2024-01-01"}
    (w,) = fetch_all(export_server, tmp_path, DAYS[:1])
    recs = list(iter_window_records(w))
    assert w.record_count == len(recs) == 4 and w.rejected_count == 0
    assert [r.record for r in recs] == [json.loads(x) for x in lines_for(w.day, 4)]
    assert [r.line for r in recs] == [1, 2, 4, 5]


def test_malformed_line_in_export_is_counted_as_rejected(export_server: Any, tmp_path: Path) -> None:
    export_server.days = {"2024-01-01": [b'{"event":"a"}', b"{oops", b'{"event":"b"}']}
    (w,) = fetch_all(export_server, tmp_path, DAYS[:1])
    assert (w.record_count, w.rejected_count) == (3, 1)
    bad = [r for r in iter_window_records(w) if r.rejection]
    assert bad[0].rejection is not None and bad[0].rejection.reason == "malformed_json"
    assert bad[0].line == 2 and "export:2024-01-01" in bad[0].rejection.message


def test_gives_up_after_max_attempts_with_the_last_error(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    export_server.script = {"2024-01-01": ["500"] * 5}
    with pytest.raises(RetriesSpent, match=r"2024-01-01 failed 3 times.*500"):
        fetch_all(export_server, tmp_path, DAYS[:1], max_attempts=3)


def test_bad_credentials_stop_with_a_clear_message(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    with pytest.raises(AuthError) as info:
        fetch_all(export_server, tmp_path, DAYS, service_account="user:WRONGSECRET")
    message = str(info.value)
    assert "MIXPANEL_SERVICE_ACCOUNT" in message and "WRONGSECRET" not in message
    assert len(export_server.log) <= 3  # no retries of a terminal error


def test_api_secret_auth(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    (w,) = fetch_all(export_server, tmp_path, DAYS[:1], service_account=None,
                     api_secret="sekret", project_id=None)
    assert w.record_count == 5 and "project_id" not in export_server.log[0]["query"]


def test_completed_windows_are_reused_not_refetched(export_server: Any, tmp_path: Path) -> None:
    setup_days(export_server)
    fetch_all(export_server, tmp_path, DAYS[:2])
    # A crash mid-window leaves no meta: that day is fetched again.
    (tmp_path / "export" / "2024-01-02.meta.json").unlink()
    export_server.log.clear()
    windows = fetch_all(export_server, tmp_path, DAYS)
    assert sorted(r["day"] for r in export_server.log) == ["2024-01-02", "2024-01-03"]
    assert [w.attempts for w in windows] == [0, 1, 1]
    assert completed_window(tmp_path, DAYS[0]) == windows[0]
    # A different query (event filter) does not reuse the file.
    assert completed_window(tmp_path, DAYS[0], settings("http://x", events=["E"])) is None
    assert completed_window(tmp_path, DAYS[0], settings("http://x")) == windows[0]
    windows[0].discard()
    assert completed_window(tmp_path, DAYS[0]) is None


@pytest.mark.parametrize(("region", "export_host", "query_host"), [
    ("us", "https://data.mixpanel.com", "https://mixpanel.com"),
    ("eu", "https://data-eu.mixpanel.com", "https://eu.mixpanel.com"),
    ("in", "https://data-in.mixpanel.com", "https://in.mixpanel.com"),
])
def test_residency_hosts(region: str, export_host: str, query_host: str) -> None:
    s = MixpanelSettings(project_id=1, region=region, service_account="u:p")
    assert s.export_url == f"{export_host}/api/2.0/export"
    assert s.engage_url == f"{query_host}/api/query/engage"


def test_settings_validation_and_secret_masking() -> None:
    with pytest.raises(ConfigError) as info:
        MixpanelSettings(region="mars", service_account="nocolon")
    text = str(info.value)
    assert "us, eu, in" in text and "user:secret" in text and "project_id" in text
    s = MixpanelSettings.from_env({"MIXPANEL_SERVICE_ACCOUNT": "me:topsecret"}, project_id=3)
    assert "topsecret" not in repr(s) and s.auth_kind == "service account"
    s2 = MixpanelSettings.from_env({"MIXPANEL_SECRET": "abc"})
    assert s2.auth_kind == "project API secret" and "abc" not in repr(s2)


def test_settings_from_the_config_section() -> None:
    from mp2amp.config.sections import MixpanelConfig, Secret

    cfg = MixpanelConfig(project_id=9, region="eu", service_account=Secret("me:pw"),
                         secret=Secret("ignored"))
    s = MixpanelSettings.from_config(cfg, per_hour=10)
    assert (s.project_id, s.region, s.per_hour, s.auth_kind) == (9, "eu", 10, "service account")
    assert s.export_url.startswith("https://data-eu.mixpanel.com")
    with pytest.raises(ConfigError, match="no Mixpanel credentials"):
        MixpanelSettings.from_config(MixpanelConfig(project_id=9))


def test_unwritable_work_folder_stops_with_a_clear_message(export_server: Any,
                                                            tmp_path: Path) -> None:
    setup_days(export_server)
    (tmp_path / "export" / "2024-01-01.jsonl.part").mkdir(parents=True)  # cannot be opened
    with pytest.raises(TerminalError, match=r"cannot write the export window .*2024-01-01"):
        fetch_all(export_server, tmp_path, DAYS[:1])
    assert len(export_server.log) == 1  # not retried


class CloseDelimitedServer:
    """Answers with a body that ends when the connection closes (no Content-Length, not
    chunked), as HTTP/1.0 proxies do; the first answer per day is cut mid-record."""

    def __init__(self, body: bytes, gz: bool) -> None:
        self.body = body
        self.gz = gz
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        payload = gzip.compress(self.body) if self.gz else self.body
        if self.requests == 1:
            payload = payload[: len(payload) // 2 + 7]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        head += b"Content-Encoding: gzip\r\n\r\n" if self.gz else b"\r\n"
        writer.write(head + payload)
        await writer.drain()
        writer.close()


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_body_cut_mid_record_without_framing_is_fetched_again(tmp_path: Path, gz: bool) -> None:
    # aiohttp cannot see such a cut (nor a gzip stream that stops short): the client must,
    # or half a day would pass as a complete window with one malformed last line.
    lines = lines_for(DAYS[0], 200)
    srv = CloseDelimitedServer(b"".join(x + b"\n" for x in lines), gz)

    async def main() -> list[WindowFile]:
        server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return [w async for w in fetch_windows(settings(f"http://127.0.0.1:{port}"),
                                                   DAYS[:1], tmp_path)]
        finally:
            server.close()
            await server.wait_closed()

    (w,) = asyncio.run(main())
    assert (w.attempts, w.record_count, w.rejected_count) == (2, 200, 0)
    assert [r.record for r in iter_window_records(w)] == [json.loads(x) for x in lines]


WILD_EXPORT = Path("/work/shared/fixtures/wild/mixpanel-export-events.jsonl")


@pytest.mark.skipif(not WILD_EXPORT.is_file(), reason="real-record fixtures not present")
def test_every_real_export_record_streams_through_the_client(export_server: Any,
                                                              tmp_path: Path) -> None:
    # The real records, in 7-byte gzip chunks, one of them split across two lines.
    lines = [ln for ln in WILD_EXPORT.read_bytes().split(b"\n") if ln.strip()]
    export_server.days = {"2024-01-01": lines}
    export_server.split = {"2024-01-01"}
    (w,) = fetch_all(export_server, tmp_path, DAYS[:1])
    recs = list(iter_window_records(w))
    assert (w.record_count, w.rejected_count) == (len(lines), 0)
    assert [r.record for r in recs] == [json.loads(x) for x in lines]
    assert export_server.log[0]["gzip"]


def test_a_mixpanel_never_reached_stops_after_a_few_refused_connections(tmp_path: Path) -> None:
    """A wrong api_host or port: every connection refused. Backing off through
    max_attempts per window took minutes; the 5th refused connection before any answer
    stops the run, naming the URL and what to check."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there

    async def main() -> list[WindowFile]:
        return [w async for w in fetch_windows(
            settings(f"http://127.0.0.1:{port}", max_attempts=50, backoff_cap=0.02),
            DAYS[:1], tmp_path)]

    with pytest.raises(TerminalError) as stopped:
        asyncio.run(main())
    assert str(stopped.value).startswith(
        f"cannot connect to Mixpanel at http://127.0.0.1:{port}/api/2.0/export (")
    assert "5 times and never since this run started: check [mixpanel] api_host" \
        in str(stopped.value)


def test_a_host_that_never_answers_the_connection_fails_fast(tmp_path: Path) -> None:
    """A host that drops the connection's packets (a firewall, a wrong private address)
    costs the connect timeout per attempt, not the system's ~2 minutes. Here the listening
    socket's backlog is full, so the kernel drops the SYNs the same way."""
    import socket
    import time

    from mp2amp.errors import Mp2AmpError

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)

    async def main() -> None:
        async for _ in fetch_windows(settings(f"http://127.0.0.1:{port}", connect_timeout=0.3,
                                              max_attempts=2), DAYS[:1], tmp_path):
            pass

    began = time.monotonic()
    try:
        with pytest.raises(Mp2AmpError):
            asyncio.run(main())
    finally:
        for s in [*fillers, server]:
            s.close()
    assert time.monotonic() - began < 20
