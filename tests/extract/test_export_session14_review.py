"""Session 14 adversarial review of the Raw Export extraction (client, limiter, planning,
and the Mixpanel emulator's /export), over real loopback sockets.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong, what
should happen and where. The others pin edge cases the earlier tests do not cover.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import importlib.util
import itertools
import json
import sys
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mp2amp.errors import Mp2AmpError
from mp2amp.extract.export import WindowFile, fetch_windows, iter_window_records
from mp2amp.extract.ratelimit import RetriesSpent


def _sibling(name: str) -> ModuleType:
    """The helpers of a neighbouring test module (test dirs are not packages)."""
    spec = importlib.util.spec_from_file_location(
        f"_s14_{name}", Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_review = _sibling("test_export_review")
Reply = _review.Reply
ScriptedServer = _review.ScriptedServer
fetch_scripted = _review.fetch_scripted
body_of = _review.body_of
records_of = _review.records_of
write_project = _review.write_project
settings = _review.settings

DAY = date(2024, 1, 1)


def utf8_lines(n: int) -> list[bytes]:
    """Records with raw (unescaped) multi-byte UTF-8, as Mixpanel's export writes them."""
    return [
        json.dumps(
            {
                "event": "Ansicht geöffnet",
                "properties": {
                    "time": 1704067200000 + i,
                    "$insert_id": f"u8-{i}",
                    "distinct_id": f"u{i}",
                    "title": "日本語のタイトル 🎉 Ærø",
                },
            },
            ensure_ascii=False,
        ).encode()
        for i in range(n)
    ]


# --- planning: a to_date Mixpanel will refuse ------------------------------------------


def test_to_date_after_today_is_refused_before_any_export_query(tmp_path: Path) -> None:
    from mp2amp.config import load_config
    from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
    from mp2amp.pipeline.migrate import migrate

    write_project(tmp_path / "proj")  # a newer project: UTC days
    today = datetime.now(UTC).date()
    mixpanel = MixpanelEmulator(
        MixpanelConfig(
            data_dir=tmp_path / "proj",
            api_secret="sek",
            export_per_hour=None,
            export_per_second=None,
        )
    )
    amplitude = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key="k"))
    with mixpanel.running() as mp_url, amplitude.running() as amp_url:
        cfg = load_config(
            None,
            {
                "source.from_date": (today - timedelta(days=2)).isoformat(),
                "source.to_date": (today + timedelta(days=2)).isoformat(),
                "mixpanel.api_host": mp_url,
                "amplitude.api_host": amp_url,
                "run.workdir": str(tmp_path / "work"),
            },
            env={"AMPLITUDE_API_KEY": "k", "MIXPANEL_SECRET": "sek"},
        )
        with pytest.raises(Mp2AmpError) as info:
            migrate(
                cfg,
                mixpanel_overrides={"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01},
            )
        with urllib.request.urlopen(mp_url + "/_emulator/stats", timeout=10) as resp:
            queried = json.loads(resp.read())["requests"].get("export_requests", 0)
    assert "to_date" in str(info.value)
    assert queried == 0, f"{queried} export queries spent before the to_date was refused"


# --- retries: Retry-After and statuses ------------------------------------------------------


def test_503_with_a_short_retry_after_still_backs_off(tmp_path: Path) -> None:
    srv = ScriptedServer(
        [Reply(status=503, headers={"Retry-After": "1"}, body=[b"upstream unavailable"])]
    )
    with pytest.raises(RetriesSpent, match="failed 3 times"):
        fetch_scripted(srv, tmp_path, max_attempts=3, backoff_base=3.0)
    starts = [t for t, _ in srv.log]
    assert len(starts) == 3
    # backoff alone: first wait in [1.5, 3] s, second in [3, 6] s
    assert starts[2] - starts[1] >= 2.9, [round(b - a, 2) for a, b in itertools.pairwise(starts)]


def test_408_request_timeout_is_retried_not_fatal(tmp_path: Path) -> None:
    good = body_of(utf8_lines(3))
    srv = ScriptedServer([Reply(status=408, body=[b"Request Timeout"]), Reply(body=[good])])
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.attempts) == (3, 2)


def test_window_that_keeps_failing_names_resume(tmp_path: Path) -> None:
    srv = ScriptedServer([Reply(status=500, body=[b"internal error"])])
    with pytest.raises(RetriesSpent) as info:
        fetch_scripted(srv, tmp_path, max_attempts=2)
    assert "--resume" in str(info.value)


def test_retry_after_http_date_in_the_past_is_retried_at_once(tmp_path: Path) -> None:
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    good = body_of(utf8_lines(2))
    srv = ScriptedServer(
        [
            Reply(status=429, headers={"Retry-After": past}, body=[b"Query rate limit exceeded"]),
            Reply(body=[good]),
        ]
    )
    (w,) = fetch_scripted(srv, tmp_path, timeout=10.0)
    assert (w.record_count, w.attempts) == (2, 2)
    assert srv.log[1][0] - srv.log[0][0] < 2.0


# --- stream shapes ----------------------------------------------------------------------


def test_record_split_across_lines_inside_a_multibyte_character(tmp_path: Path) -> None:
    """A split record whose cut falls inside a UTF-8 character, gzipped, arriving one byte
    per HTTP chunk: both halves are invalid UTF-8 alone, joined they are the record."""
    good = utf8_lines(4)
    second = good[1]
    cut = second.index("本".encode()) + 1  # after the first byte of a 3-byte character
    lines = [good[0], second[:cut], second[cut:], good[2], good[3]]
    packed = gzip.compress(body_of(lines))
    srv = ScriptedServer(
        [
            Reply(
                headers={"Content-Encoding": "gzip"},
                body=[packed[i : i + 1] for i in range(len(packed))],
            )
        ]
    )
    (w,) = fetch_scripted(srv, tmp_path)
    recs = list(iter_window_records(w))
    assert (w.record_count, w.rejected_count, w.attempts) == (4, 0, 1)
    assert [r.record for r in recs] == [json.loads(x) for x in good]
    assert [r.line for r in recs] == [1, 2, 4, 5]


def test_a_body_that_is_only_export_terminated_early_is_fetched_again(tmp_path: Path) -> None:
    # mixpanel-utils #5: the whole body was the one line 'export terminated early'
    good = utf8_lines(3)
    srv = ScriptedServer(
        [
            Reply(
                headers={"Content-Encoding": "gzip"},
                body=[gzip.compress(b"export terminated early")],
            ),
            Reply(body=[body_of(good)]),
        ]
    )
    (w,) = fetch_scripted(srv, tmp_path)
    assert (w.record_count, w.attempts) == (3, 2)
    assert records_of(w) == [json.loads(x) for x in good]


def test_auth_header_and_project_id_of_each_credential_kind(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    from aiohttp import web

    from mp2amp.extract.api import MixpanelSettings

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.headers.get("Authorization", ""), dict(request.query)))
        return web.Response(text="", content_type="text/plain")

    async def main() -> list[WindowFile]:
        async with _review._conftest.serve_export(handle) as base:
            out = []
            for i, kw in enumerate(
                (
                    {"service_account": "svc.user:s3cr:et", "project_id": 7},
                    {"api_secret": "sek", "project_id": None},
                )
            ):
                s = MixpanelSettings(api_host=base, **kw)
                out += [w async for w in fetch_windows(s, [DAY], tmp_path / str(i))]
            return out

    asyncio.run(asyncio.wait_for(main(), 20))
    (sa_auth, sa_query), (sec_auth, sec_query) = seen
    assert base64.b64decode(sa_auth.removeprefix("Basic ")) == b"svc.user:s3cr:et"
    assert sa_query["project_id"] == "7"
    assert base64.b64decode(sec_auth.removeprefix("Basic ")) == b"sek:"
    assert "project_id" not in sec_query
    for q in (sa_query, sec_query):
        assert (q["from_date"], q["to_date"]) == (DAY.isoformat(), DAY.isoformat())


# --- the emulator's /export -------------------------------------------------------------


def _emulator_export(root: Path, query: str) -> list[dict[str, Any]]:
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    emu = MixpanelEmulator(MixpanelConfig(data_dir=root, api_secret="sek"))
    with emu.running() as url:
        req = urllib.request.Request(
            f"{url}/api/2.0/export?from_date=2024-03-01&to_date=2024-03-01{query}",
            headers={"Authorization": "Basic " + base64.b64encode(b"sek:").decode()},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return [json.loads(x) for x in resp.read().splitlines() if x.strip()]


def _ms_project(root: Path) -> None:
    (root / "events").mkdir(parents=True)
    (root / "project.json").write_text(
        json.dumps({"project_id": 42, "timezone": "UTC", "legacy_time": False, "group_keys": []})
    )
    recs = [
        {
            "event": "A",
            "properties": {"time": 1709251200123, "distinct_id": "u1", "$insert_id": "a1"},
        },
        {"event": "B", "properties": {"time": 1709251201, "distinct_id": "u1", "$insert_id": "a2"}},
    ]
    (root / "events" / "2024-03-01.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_emulator_export_without_time_in_ms_gives_seconds(tmp_path: Path) -> None:
    _ms_project(tmp_path)
    times = [r["properties"]["time"] for r in _emulator_export(tmp_path, "")]
    assert times == [1709251200, 1709251201]


def test_emulator_export_with_time_in_ms_gives_milliseconds(tmp_path: Path) -> None:
    _ms_project(tmp_path)
    times = [r["properties"]["time"] for r in _emulator_export(tmp_path, "&time_in_ms=true")]
    assert times == [1709251200123, 1709251201000]


def test_windows_across_month_year_and_leap_day_read_each_day_once() -> None:
    from mp2amp.extract.export import windows_of

    first, last = date(2023, 12, 27), date(2024, 3, 2)
    for n in (1, 2, 5, 7, 31):
        windows = windows_of(first, last, n)
        days = [
            w.first + timedelta(days=i) for w in windows for i in range((w.last - w.first).days + 1)
        ]
        assert days == [first + timedelta(days=i) for i in range((last - first).days + 1)]
        assert all(b.first == a.last + timedelta(days=1) for a, b in itertools.pairwise(windows))
    assert date(2024, 2, 29) in {w.first for w in windows_of(first, last, 1)}


def test_unframed_body_ending_in_the_second_half_of_a_split_record(tmp_path: Path) -> None:
    good = utf8_lines(2)
    cut = len(good[1]) // 2
    body = good[0] + b"\n" + good[1][:cut] + b"\n" + good[1][cut:]  # no final newline
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await reader.readuntil(b"\r\n\r\n")
        requests += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    async def main() -> list[WindowFile]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return [
                w
                async for w in fetch_windows(
                    settings(f"http://127.0.0.1:{port}", max_attempts=2), [DAY], tmp_path
                )
            ]
        finally:
            server.close()
            await server.wait_closed()

    (w,) = asyncio.run(asyncio.wait_for(main(), 20))
    assert (w.record_count, w.rejected_count, w.attempts) == (2, 0, 1)
    assert records_of(w) == [json.loads(x) for x in good]
