"""Session 18 adversarial review of the Raw Export API extractor (client, line joining,
limiter, and how ``migrate`` plans and stages export days), over real loopback sockets.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong. Each
was checked to fail for that reason with ``--runxfail``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from mp2amp.errors import Mp2AmpError, TerminalError
from mp2amp.extract import export as export_module
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import WindowFile, fetch_windows, iter_window_records
from mp2amp.extract.ratelimit import RateLimiter

DAY = date(2024, 1, 1)
DAYS = [date(2024, 1, d) for d in (1, 2, 3)]


def record(i: int, **extra: Any) -> bytes:
    props = {"time": 1704067200000 + i, "$insert_id": f"id-{i}", "distinct_id": f"user-{i}",
             **extra}
    return json.dumps({"event": "Viewed", "properties": props}).encode()


def settings(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01}
    opts.update(kw)
    return MixpanelSettings(**opts)


class Script:
    """GET /api/2.0/export answering ``replies[n]`` (status, headers, body) to the n-th
    request (the last one repeats), the body in small chunks that ignore lines."""

    def __init__(self, replies: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.replies = replies
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        status, headers, body = self.replies[min(len(self.requests), len(self.replies)) - 1]
        resp = web.StreamResponse(status=status,
                                  headers={"Content-Type": "text/plain", **headers})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 9):
            await resp.write(body[i:i + 9])
        await resp.write_eof()
        return resp


def fetch(script: Script, workdir: Path, days: list[date], *, concurrency: int = 1,
          limiter: RateLimiter | None = None, **kw: Any) -> list[WindowFile]:
    from shared_kit import serve_routes

    async def main() -> list[WindowFile]:
        async with serve_routes({("GET", "/api/2.0/export"): script.handle}) as base:
            gen = fetch_windows(settings(base, **kw), days, workdir, concurrency=concurrency,
                                limiter=limiter)
            return [w async for w in gen]

    return sorted(asyncio.run(asyncio.wait_for(main(), 30)), key=lambda w: w.day)


# --- records split across lines ---------------------------------------------------------


SPLIT_RECORD = record(1, address="Street 12 City")


@pytest.mark.parametrize("pieces", [
    # cut inside a string value: the middle line is the number 12
    [SPLIT_RECORD[:SPLIT_RECORD.index(b"12 City")],
     b"12", SPLIT_RECORD[SPLIT_RECORD.index(b"12 City") + 2:]],
    # cut inside the time: the middle line is the number 67200
    [SPLIT_RECORD[:SPLIT_RECORD.index(b"17040") + 5], b"67200",
     SPLIT_RECORD[SPLIT_RECORD.index(b"17040") + 10:]],
    # cut around the properties object: the middle line is a whole object
    [SPLIT_RECORD[:SPLIT_RECORD.index(b"{", 1)], SPLIT_RECORD[SPLIT_RECORD.index(b"{", 1):-1],
     b"}"],
], ids=["middle-is-a-number-in-a-string", "middle-is-part-of-the-time", "middle-is-an-object"])
def test_record_split_in_three_with_a_json_middle_piece_is_rejoined(
        tmp_path: Path, pieces: list[bytes]) -> None:
    # A record split across lines (reference 1.5, Airbyte: "one record can be split into
    # multiple lines") is rejoined: two pieces and three pieces alike, as the module says.
    assert b"".join(pieces) == SPLIT_RECORD
    before, after = record(0), record(2)
    body = b"\n".join([before, *pieces, after]) + b"\n"
    (w,) = fetch(Script([(200, {}, body)]), tmp_path, [DAY])
    got = list(iter_window_records(w))
    assert [r.record for r in got] == [json.loads(x) for x in (before, SPLIT_RECORD, after)]
    assert (w.record_count, w.rejected_count) == (3, 0)


def test_record_split_in_three_with_non_json_pieces_is_rejoined(tmp_path: Path) -> None:
    # The guard beside the defect above: three pieces none of which parses alone are
    # joined into the one record, counted once, at the line where it starts.
    cut = SPLIT_RECORD.index(b"Street")
    pieces = [SPLIT_RECORD[:cut], SPLIT_RECORD[cut:cut + 9], SPLIT_RECORD[cut + 9:]]
    body = b"\n".join([record(0), *pieces, record(2)]) + b"\n"
    (w,) = fetch(Script([(200, {}, body)]), tmp_path, [DAY])
    got = list(iter_window_records(w))
    assert [r.record for r in got] == [json.loads(x) for x in (record(0), SPLIT_RECORD,
                                                                record(2))]
    assert [r.line for r in got] == [1, 2, 5]
    assert (w.record_count, w.rejected_count) == (3, 0)


# --- the rate limiter ----------------------------------------------------------------------


class FakeClock:
    """A monotonic and a wall clock that only move when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_throttled_queries_do_not_use_up_the_hours_budget(tmp_path: Path) -> None:
    # The project is briefly throttled (another tool's queries, a per-second refusal): the
    # first two requests get 429 without Retry-After, every later one is served. Three days
    # are three admitted queries, within a per-hour budget of 3.
    throttled = (429, {}, b'{"error": "Query rate limit exceeded", "status": "error"}')
    served = (200, {}, b"\n".join(record(i) for i in range(3)) + b"\n")
    script = Script([throttled, throttled, served])
    clock = FakeClock()
    limiter = RateLimiter(per_hour=3, per_second=1000, max_concurrent=100, clock=clock,
                          sleep=clock.sleep, wall=clock)
    windows = fetch(script, tmp_path, DAYS, limiter=limiter)
    assert [w.record_count for w in windows] == [3, 3, 3]
    assert len(script.requests) == 5  # 2 refused + 3 admitted
    # Mixpanel admitted 3 queries this hour: the budget of 3 is not exceeded, no wait due
    assert limiter.waited == 0, (
        f"the limiter waited {limiter.waited:.0f} s (fake clock) for the hour's budget, "
        "counting the two 429s as queries")


# --- documented behaviour ---------------------------------------------------------------


def test_unreachable_mixpanel_stops_within_about_five_seconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:  # record the backoff instead of sleeping it
        waits.append(seconds)

    # only the export module's own sleeps (the backoff); aiohttp keeps the real asyncio
    names = {name: getattr(asyncio, name) for name in dir(asyncio) if not name.startswith("_")}
    monkeypatch.setattr(export_module, "asyncio", SimpleNamespace(**{**names, "sleep": no_wait}))
    # the run's settings as `mp2amp migrate` builds them: every default but host and key
    mixpanel = MixpanelSettings(project_id=42, api_host=f"http://127.0.0.1:{port}",
                                service_account="svc:pw")
    limiter = RateLimiter(per_hour=mixpanel.per_hour, per_second=1000, max_concurrent=100)

    async def main() -> None:
        async for _ in fetch_windows(mixpanel, [DAY], tmp_path, limiter=limiter):
            pass

    with pytest.raises(TerminalError, match="5 times and never since this run started"):
        asyncio.run(asyncio.wait_for(main(), 30))
    assert len(waits) == 4
    assert sum(waits) + limiter.waited <= 10.0, (
        f"the 5 refused connections took {sum(waits):.1f} s of backoff, not ~5 s")


def _project(root: Path) -> None:
    (root / "events").mkdir(parents=True)
    (root / "project.json").write_text(json.dumps(
        {"project_id": 42, "timezone": "UTC", "legacy_time": False, "group_keys": []}))
    for d in range(1, 7):
        base = int(datetime(2024, 1, d, tzinfo=UTC).timestamp())
        events = [{"event": "Viewed", "properties": {
            "time": base + i * 60, "distinct_id": f"user-{i}", "$insert_id": f"{d}-{i}"}}
            for i in range(5)]
        (root / "events" / f"2024-01-0{d}.jsonl").write_text(
            "".join(json.dumps(e) + "\n" for e in events))


def test_to_date_refused_mid_run_says_what_can_be_done(tmp_path: Path) -> None:
    # Mixpanel's today is earlier than mp2amp's preflight thought (a legacy project whose
    # mixpanel.timezone is wrong, the very case the message names); here the emulator's
    # clock says 2024-01-05 while the run asks up to 2024-01-06.
    from mp2amp.config import load_config
    from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
    from mp2amp.pipeline.migrate import migrate

    _project(tmp_path / "proj")
    now = datetime(2024, 1, 5, 12, tzinfo=UTC).timestamp()
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=tmp_path / "proj", api_secret="sek", export_per_hour=None,
        export_per_second=None, clock=lambda: now))
    amplitude = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key="k"))
    overrides = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01}
    with mixpanel.running() as mp_url, amplitude.running() as amp_url:
        def config(to_date: str) -> Any:
            return load_config(None, {
                "source.from_date": "2024-01-01", "source.to_date": to_date,
                "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
                "run.workdir": str(tmp_path / "work"), "run.concurrency": 1},
                env={"AMPLITUDE_API_KEY": "k", "MIXPANEL_SECRET": "sek"})

        with pytest.raises(TerminalError) as stopped:
            migrate(config("2024-01-06"), mixpanel_overrides=overrides)
        said = str(stopped.value)
        assert "2024-01-06" in said
        # what the message asks for cannot be done:
        with pytest.raises(Mp2AmpError, match="already holds a migration"):
            migrate(config("2024-01-05"), mixpanel_overrides=overrides)  # "run again"
        with pytest.raises(Mp2AmpError, match="differs from the one the run started with"):
            migrate(config("2024-01-05"), resume=True, mixpanel_overrides=overrides)
    # so it must name what can: --resume (once the day has come) or a new work folder
    assert "--resume" in said or "new work folder" in said, said
