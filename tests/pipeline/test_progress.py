"""Progress while a migration loads: driven by time, not by transformed chunks, so the log
lines and the terminal display keep moving while requests, retries and backoff waits are
in flight, and end at the true end."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from migrate_kit import FAST, Project, amplitude, make_config
from rich.console import Console

from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters, LogReporter, RichReporter, ticking

LINE = re.compile(
    r"mp2amp: t=(?P<t>\d+\.\d)s phase=(?P<phase>\w+) done=(?P<done>\d+)/(?P<total>\d+) "
    r"sent=(?P<sent>\d+) rate=\d+/s retries=(?P<retries>\d+) throttles=\d+ "
    r"dead_letters=\d+ eta=(?:\?|\d+s)")


def slow_upload() -> dict[str, Any]:
    """~40 batches small by bytes, two at a time: the uploader's backpressure counts
    events (2 x concurrency x 2000), so the whole project is transformed at once and the
    upload, 150 ms a request with one in five failing, takes seconds after that."""
    return {**FAST, "max_bytes": 60_000, "concurrency": 2}


def test_log_lines_are_periodic_during_the_upload(project: Project, tmp_path: Path) -> None:
    out = io.StringIO()
    with amplitude(tmp_path / "amp", latency_ms=150, fail_rate=0.2, seed=3) as url:
        result = migrate(make_config(project.events, tmp_path / "work", url),
                         reporter=LogReporter(out, interval=0.25),
                         upload_overrides=slow_upload())
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    lines = out.getvalue().splitlines()
    assert all(LINE.fullmatch(line) for line in lines), lines
    rows = [m.groupdict() for m in map(LINE.fullmatch, lines) if m]
    load = [r for r in rows if r["phase"] == "load"]
    read, sent = result.totals["read"], result.totals["sent"]

    # the last line is the true end: every record done, every event delivered
    final = load[-1]
    assert (int(final["done"]), int(final["total"]), int(final["sent"])) == (read, read, sent)
    assert int(final["retries"]) == result.load["retries"] > 0
    assert lines[-1].endswith(" eta=0s")

    # lines while events were still in flight, spread over the upload, not only while
    # the records were transformed (at its start)
    moving = [r for r in load if 0 < int(r["sent"]) < sent]
    assert len(moving) >= 3, lines
    start, end = float(load[0]["t"]), float(final["t"])
    assert float(moving[-1]["t"]) - float(moving[0]["t"]) >= 0.5 * (end - start), lines
    for key in ("done", "sent", "retries"):
        values = [int(r[key]) for r in load]
        assert values == sorted(values), f"{key} went back: {values}"
    assert len({r["sent"] for r in moving}) >= 3
    assert any(int(r["retries"]) > 0 for r in moving), "retries shown only at the end"
    assert all(int(r["done"]) <= int(r["total"]) for r in rows)


FRAME = re.compile(r"load .*? (?P<done>\d+)/(?P<total>\d+) .*?\n\s*sent (?P<sent>\d+) · \d+ "
                   r"ev/s · retries (?P<retries>\d+) · throttles \d+ · dead letters \d+")


def test_terminal_display_moves_while_requests_are_in_flight(project: Project,
                                                             tmp_path: Path) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200, color_system=None)
    with amplitude(tmp_path / "amp", latency_ms=150, fail_rate=0.2, seed=3) as url:
        result = migrate(make_config(project.events, tmp_path / "work", url),
                         reporter=RichReporter(console, tick=0.2),
                         upload_overrides=slow_upload())
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    frames = [m.groupdict() for m in FRAME.finditer(screen.getvalue())]
    read, sent = result.totals["read"], result.totals["sent"]
    assert frames, screen.getvalue()[-2000:]
    last = frames[-1]
    assert (int(last["done"]), int(last["total"]), int(last["sent"])) == (read, read, sent)
    # redrawn with new numbers while requests were in flight
    in_flight = [f for f in frames if int(f["done"]) < read]
    assert len({(f["done"], f["sent"]) for f in in_flight}) >= 3, frames
    assert any(int(f["retries"]) > 0 for f in in_flight), "retries shown only at the end"
    sents = [int(f["sent"]) for f in frames]
    assert sents == sorted(sents)


class Recorder:
    def __init__(self, fail_after: int | None = None) -> None:
        self.updates = 0
        self.fail_after = fail_after

    def update(self, counters: Counters) -> None:
        self.updates += 1
        if self.fail_after is not None and self.updates >= self.fail_after:
            raise OSError("the terminal went away")

    def close(self, counters: Counters) -> None:
        return None


def test_ticker_refreshes_without_the_body_and_stops_with_it() -> None:
    reporter, counters = Recorder(), Counters()
    samples: list[int] = []

    async def run() -> None:
        with pytest.raises(KeyError):
            async with ticking(reporter, counters, period=0.01) as ticker:
                ticker.sample = lambda: samples.append(len(samples))
                await asyncio.sleep(0.2)  # the body does nothing: the ticker refreshes
                raise KeyError("the load failed")
        seen = reporter.updates
        await asyncio.sleep(0.05)
        assert reporter.updates == seen, "the ticker outlived its body"
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(run())
    assert reporter.updates >= 5 and len(samples) == reporter.updates


def test_a_failing_reporter_stops_the_run_with_its_error() -> None:
    reporter = Recorder(fail_after=3)
    reached: list[str] = []

    async def run() -> None:
        with pytest.raises(OSError, match="the terminal went away"):
            async with ticking(reporter, Counters(), period=0.01):
                await asyncio.sleep(5)
                reached.append("end of the body")
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(asyncio.wait_for(run(), 2))
    assert reached == [] and reporter.updates == 3


def test_an_eta_past_any_clock_or_not_finite_is_drawn_not_raised() -> None:
    # a display error stops the run: an ETA from a pace of almost nothing must draw
    from rich.progress import Progress

    from mp2amp.pipeline.progress import _SecondsColumn

    progress = Progress()
    task_id = progress.add_task("x", total=10)
    task = progress.tasks[task_id]
    column = _SecondsColumn("eta", "cyan", round_up=True)
    for seconds, shown in [(1e300, "115740 days, 17:46:40"), (float("inf"), "-:--:--"),
                           (float("nan"), "-:--:--"), (1.2, "0:00:02"), (None, "-:--:--")]:
        task.fields["eta"] = seconds
        assert column.render(task).plain == shown
