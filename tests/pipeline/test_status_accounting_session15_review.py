"""Session 15 review of the ledger, the end-of-run accounting, the printed result
(``--json``) and the progress display: what a data engineer sees of a migration that is
resumed, that runs with a transform worker, or whose staged copy lost records.

Each defect is a strict xfail whose reason names what is wrong and where."""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest
from migrate_kit import (
    Project,
    amplitude,
    assert_exactly_once,
    make_config,
    run_until_crash,
    stored_counts,
)
from rich.console import Console

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline import progress as progress_module
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters, RichReporter

# --- the result's `values` report with a transform worker ----------------------------------


def _long_values_file(path: Path, n: int = 20) -> Path:
    """``n`` events, each with a string property longer than Amplitude's 1024 characters:
    the transform cuts each one and counts it under ``values.truncated``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps({"event": "Viewed", "properties": {
        "time": 1704100000 + i, "distinct_id": f"dev-{i % 3}", "$insert_id": f"iid-{i:06d}",
        "long": "x" * 2000}}) for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_the_values_report_counts_what_a_transform_worker_truncated(tmp_path: Path) -> None:
    events = _long_values_file(tmp_path / "in" / "day.jsonl")
    got = {}
    for workers in (0, 1):  # 1: what `transform_workers` defaults to with two cores
        with amplitude(tmp_path / f"amp{workers}") as url:
            cfg = make_config(events, tmp_path / f"work{workers}", url,
                              **{"mixpanel.timezone": "UTC", "run.transform_workers": workers})
            result = migrate(cfg)
        assert result.exit_code == EXIT_OK
        got[workers] = orjson.loads(orjson.dumps(result.as_dict()))["values"]
    assert got[0]["truncated"] == {"long": 20}  # in-process: counted
    assert got[1] == got[0], f"with a transform worker: {got[1]}"


# --- the check `read = sent + ...` reads the transform's own count --------------------------


def test_records_missing_from_a_staged_copy_are_staged_again_before_anything_is_sent(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        run_until_crash(cfg, monkeypatch, 2)  # the first window is being loaded
        # the last window's staged copy lost its last 5 lines (a work folder copied to a
        # bigger disk by a copy that stopped short, say): whole lines, nothing looks cut
        ledger = Ledger(work / "ledger.sqlite")
        last = ledger.windows()[-1]
        ledger.close()
        staged = Path(str(last.staged_path))
        lines = staged.read_bytes().splitlines(keepends=True)
        staged.write_bytes(b"".join(lines[:-5]))
        # found by the identity pass, before anything is sent: the copy is removed and the
        # next resume stages the window again from its source (it was found only at the
        # end before, its batches sent short, which no resume could mend)
        before = stored_counts(url)
        with pytest.raises(TerminalError, match=f"holds {last.records - 5} lines, but "
                           f"{last.records} were staged into it"):
            migrate(cfg, resume=True)
        assert stored_counts(url) == before and not staged.exists()
        aside = staged.with_name(staged.name + ".changed")  # moved aside, never deleted
        assert aside.read_bytes() == b"".join(lines[:-5])
        result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, project.expected)
    got = {w.window: w for w in result.windows}[last.window_id]
    assert got.read == last.records and got.balanced


# --- the terminal's ETA and elapsed time across phases --------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_FRAME = re.compile(r"(\w+) [━╺╸ ]+ (\d+)/(\d+) (\S+) ETA (\S+)")


def test_the_terminal_eta_of_a_phase_after_a_finished_one(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr(progress_module, "time", type("T", (), {"monotonic": staticmethod(clock)}))
    out = io.StringIO()
    reporter = RichReporter(console=Console(file=out, force_terminal=True, width=120,
                                            color_system=None, get_time=clock))
    counters = Counters()
    counters.begin("identity", 1000)  # a resume: the identity pass over staged windows
    reporter.update(counters)
    for i in range(1, 5):
        clock.now += 1
        counters.done = 250 * i
        reporter.update(counters)
    counters.begin("load", 1000)  # the same records, now sent
    for i in range(1, 5):
        clock.now += 1
        counters.done = counters.sent = 100 * i
        reporter.update(counters)
    frames = _FRAME.findall(out.getvalue())
    phase, done, total, elapsed, eta = frames[-1]
    assert (phase.removeprefix("2K"), done, total) == ("load", "400", "1000")
    assert counters.eta() == 6.0
    assert eta != "0:00:00", f"ETA {eta} with 600 of 1000 records to go at 100/s"
    assert elapsed == "0:00:08", f"elapsed {elapsed} after 8 s"
    reporter.close(counters)


def test_the_terminal_eta_of_a_resumed_load(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        run_until_crash(make_config(project.events, work, url), monkeypatch, 2)
    out = io.StringIO()
    with amplitude(tmp_path / "amp", latency_ms=150) as url:
        reporter = RichReporter(console=Console(file=out, force_terminal=True, width=120,
                                                color_system=None), tick=0.1)
        result = migrate(make_config(project.events, work, url), resume=True, reporter=reporter)
    assert result.exit_code == EXIT_OK
    load = [f for f in _FRAME.findall(out.getvalue())
            if f[0].endswith("load") and int(f[1]) < int(f[2])]
    assert load, out.getvalue()[-2000:]
    assert all(f[4] != "0:00:00" for f in load), (
        f"ETA 0:00:00 with records to go: {load[:3]}")


# --- the load's ETA on a resume (log lines) --------------------------------------------------


class _Recorder:
    tick = 0.05

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, float | None]] = []

    def update(self, counters: Counters) -> None:
        self.seen.append((counters.phase, counters.done, counters.sent, counters.eta()))

    def close(self, counters: Counters) -> None:
        return None


def test_the_eta_of_a_resumed_load_counts_only_this_runs_progress(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        run_until_crash(cfg, monkeypatch, 20)  # two of the three windows are loaded
    ledger = Ledger(work / "ledger.sqlite")
    replayed = sum(w.records for w in ledger.windows() if w.state == "loaded")
    ledger.close()
    assert replayed > 0
    recorder = _Recorder()
    with amplitude(tmp_path / "amp", latency_ms=1000) as url:
        result = migrate(make_config(project.events, work, url), resume=True,
                         reporter=recorder)
    assert result.exit_code == EXIT_OK
    before = [s for s in recorder.seen if s[0] == "load" and s[2] == 0 and s[1] <= replayed]
    assert before, recorder.seen
    # the third window's requests take 1 s each: an ETA under that is not an estimate
    bad = [s for s in before if s[3] is not None and s[3] < 1.0]
    assert not bad, f"ETA before this run delivered anything: {bad[:3]}"
