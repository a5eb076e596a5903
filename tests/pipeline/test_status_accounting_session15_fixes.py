"""The fixes of the session 15 review of the printed result and the progress display,
beyond what its pinned tests check: the `values` report is the same with and without a
transform worker on a resumed run and with import files; a staged copy with records the
extraction did not stage does not add up either; batches an earlier run delivered are not
this run's pace; the terminal's ETA says 0:00:00 only once nothing is left."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import amplitude, make_config, run_until_crash
from rich.console import Console

from mp2amp.config import load_config
from mp2amp.ledger import Ledger
from mp2amp.load.settings import LoadReport
from mp2amp.pipeline import progress as progress_module
from mp2amp.pipeline.accounting import WindowCounts
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.observer import LedgerObserver
from mp2amp.pipeline.progress import Counters, RichReporter

DAYS = 3
PER_DAY = 40


def _long_values_days(folder: Path) -> Path:
    """``DAYS`` day files of ``PER_DAY`` events, each with a string property longer than
    Amplitude's 1024 characters (cut and counted under ``values.truncated``)."""
    folder.mkdir(parents=True)
    for day in range(DAYS):
        lines = [orjson.dumps({"event": "Viewed", "properties": {
            "time": 1704100000 + day * 86400 + i, "distinct_id": f"dev-{i % 3}",
            "$insert_id": f"iid-{day}-{i:04d}", "long": "x" * 2000}}) for i in range(PER_DAY)]
        (folder / f"2024-01-0{day + 1}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def _values(result: Any) -> dict[str, Any]:
    values: dict[str, Any] = orjson.loads(orjson.dumps(result.as_dict()))["values"]
    return values


def test_a_resumed_runs_values_report_is_the_same_with_and_without_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _long_values_days(tmp_path / "in")
    got = {}
    for workers in (0, 1):
        work = tmp_path / f"work{workers}"
        with amplitude(tmp_path / f"amp{workers}") as url:
            # one request at a time, in order: a window is one batch
            cfg = make_config(events, work, url, **{"mixpanel.timezone": "UTC",
                                                    "run.transform_workers": workers,
                                                    "run.concurrency": 1})
            run_until_crash(cfg, monkeypatch, 2)  # the first window loaded, the second not
            ledger = Ledger(work / "ledger.sqlite")
            assert [w.state for w in ledger.windows()].count("loaded") == 1
            ledger.close()
            result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK
        got[workers] = _values(result)
    # every window is transformed once by the resumed run (the loaded one replayed): the
    # report is the whole migration's, as a run that was never stopped gives it
    assert got[0]["truncated"] == {"long": DAYS * PER_DAY}
    assert got[1] == got[0]


def test_the_values_report_of_import_files_is_the_same_with_and_without_a_worker(
    tmp_path: Path
) -> None:
    events = _long_values_days(tmp_path / "in")
    got = {}
    for workers in (0, 1):
        cfg = load_config(None, {"source.files": [str(events)], "mixpanel.timezone": "UTC",
                                 "amplitude.output_dir": str(tmp_path / f"out{workers}"),
                                 "run.workdir": str(tmp_path / f"work{workers}"),
                                 "run.transform_workers": workers}, env={})
        result = migrate(cfg)
        assert result.exit_code == EXIT_OK
        got[workers] = _values(result)
    assert got[0]["truncated"] == {"long": DAYS * PER_DAY}
    assert got[1] == got[0]


def test_a_staged_copy_with_more_records_than_were_staged_does_not_add_up() -> None:
    row = WindowCounts(window="day-1", state="loaded", read=10, sent=12, staged_path="/s/d1",
                       read_from_copy=12)
    assert not row.balanced
    problem = row.problem()
    assert problem is not None
    assert "staged 10 records but the load read 12 from the staged copy /s/d1" in problem
    assert "new work folder" in problem  # what to do next
    complete = WindowCounts(window="day-1", state="loaded", read=10, sent=10,
                            read_from_copy=10)
    assert complete.balanced and complete.problem() is None


def test_batches_an_earlier_run_delivered_are_not_this_runs_pace(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    counters = Counters()
    observer = LedgerObserver(ledger, counters, {}, on_window_loaded=lambda _: None)
    counters.begin("load", 1000, done=400)  # a window an earlier run loaded
    observer.earlier = 400
    # the uploader skipped 300 events of batches an earlier run delivered, at once
    observer.refresh(LoadReport(skipped=300))
    assert counters.done == 700
    assert counters.eta() is None  # nothing of this run's yet: no pace to tell
    observer.refresh(LoadReport(skipped=300, accepted=100))
    assert counters.done == 800
    assert counters.eta() is not None
    ledger.close()


_FRAME = re.compile(r"(\w+) [━╺╸ ]+ (\d+)/(\d+) (\S+) ETA (\S+)")


def test_the_terminal_eta_is_0_only_once_nothing_is_left(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(progress_module, "time",
                        type("T", (), {"monotonic": staticmethod(lambda: now[0])}))
    out = io.StringIO()
    reporter = RichReporter(console=Console(file=out, force_terminal=True, width=120,
                                            color_system=None, get_time=lambda: now[0]))
    counters = Counters()
    counters.begin("load", 1000)
    now[0] += 1
    counters.done = 998  # two left, 2 ms at this pace
    reporter.update(counters)
    assert _FRAME.findall(out.getvalue())[-1][4] == "0:00:01"
    now[0] += 1
    counters.done = 1000
    reporter.update(counters)
    assert _FRAME.findall(out.getvalue())[-1][4] == "0:00:00"
    reporter.close(counters)
