"""Session 20, second review of the progress fixes (2a37dd5) and the emulator fixes
(e78cf3d, 4d6b051).

README (Progress): "nothing with `--quiet` or `--json`, or when stderr is closed (`2>&-`):
the run goes on, prints its result on stdout and exits with its own code. ... records done
before Amplitude has answered any of this run's requests (...; on a `--resume` also the
windows and batches an earlier run delivered) show as done but do not count toward the
pace, so the ETA reads `-:--:--` (`eta=?`) until this run has delivered something."
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from migrate_kit import API_KEY, LOG_LINE, TIMEZONE, amplitude, small_events, write_toml

from mp2amp.config import load_config
from mp2amp.load.settings import LoadReport
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.observer import LedgerObserver
from mp2amp.pipeline.progress import Counters, LogReporter
from mp2amp.pipeline.status import status

TZ = TIMEZONE
LINE = LOG_LINE


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project (2 days, 400 records, one duplicate)."""
    return small_events(tmp_path_factory.mktemp("small2"))


def test_migrate_survives_a_stderr_pipe_whose_reader_is_gone(events: Path,
                                                             tmp_path: Path) -> None:
    # e.g. `mp2amp migrate -c c.toml 2> >(some-logger)` and the logger died, or a
    # launcher that closed its end of the stderr pipe: the progress lines have nowhere to
    # go, as with `2>&-`; the migration itself must not depend on them
    env = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "c.toml", events, tmp_path / "work", url)
        r, w = os.pipe()
        os.close(r)
        try:
            proc = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg)],
                                  stdout=subprocess.PIPE, stderr=w, text=True, env=env,
                                  timeout=120)
        finally:
            os.close(w)
    # observed: exit 1, empty stdout, the work folder's migration not complete
    assert (proc.returncode, status(tmp_path / "work").complete) == (EXIT_OK, True), proc.stdout
    assert "400" in proc.stdout


def test_eta_pace_does_not_count_the_time_before_amplitude_first_answered() -> None:
    # a resume: 900 of 1000 records loaded by an earlier run; replaying those windows for
    # their dedup and session state takes a while (here 0.6 s; minutes on a big migration)
    # before this run's first request is answered
    c = Counters()
    obs = LedgerObserver(SimpleNamespace(), c, {}, on_window_loaded=lambda w: None)  # type: ignore[arg-type]
    c.begin("load", 1000, done=obs.resume_from(
        [SimpleNamespace(window_id="a", state="loaded", records=900)], {}))
    report = LoadReport()
    time.sleep(0.6)
    obs.refresh(report)
    assert c.eta() is None  # nothing answered yet: eta=?
    report.accepted = 1  # the first answer
    obs.refresh(report)
    time.sleep(0.1)
    report.accepted = 11  # 10 more in 0.1 s: 89 left, about 0.9 s at this pace
    obs.refresh(report)
    eta = c.eta()
    assert eta is not None
    # observed: about 89 * 0.7 / 11 = 5.7 s (the replay's 0.6 s counted as this run's pace)
    assert eta < 2.5, eta


def test_s3_sink_progress_reaches_its_totals_and_shows_an_eta(events: Path,
                                                              tmp_path: Path) -> None:
    """Guard: the S3-import sink (no Amplitude answers at all) shows an ETA while writing,
    and its last line's numbers are the result's."""
    cfg = load_config(None, {"source.files": [str(events)], "mixpanel.timezone": TZ,
                             "amplitude.output_dir": str(tmp_path / "out"),
                             "run.workdir": str(tmp_path / "work")},
                      env={"AMPLITUDE_API_KEY": API_KEY})
    out = io.StringIO()
    result = migrate(cfg, reporter=LogReporter(out, interval=0.0))
    assert result.exit_code == EXIT_OK
    rows = [m.groupdict() for m in map(LINE.fullmatch, out.getvalue().splitlines()) if m]
    write = [r for r in rows if r["phase"] == "write"]
    assert write and write[-1]["done"] == write[-1]["total"] == "400"
    assert any(r["eta"] != "?" for r in write)
    last = rows[-1]
    assert last["phase"] == "files"
    assert int(last["done"]) == int(last["total"]) == int(last["sent"]) \
        == result.totals["sent"] == result.load["events"]


def test_s3_sink_with_stderr_closed_and_json(events: Path, tmp_path: Path) -> None:
    """Guard: `2>&-` with --json and the S3-import sink: exit 0, the result on stdout."""
    import json

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{events}"]\n'
                   f'[amplitude]\noutput_dir = "{tmp_path / "out"}"\n'
                   f'[run]\nworkdir = "{tmp_path / "work"}"\n')
    env = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--json"],
                          stdout=subprocess.PIPE, text=True, env=env, timeout=120,
                          preexec_fn=lambda: os.close(2))
    assert proc.returncode == EXIT_OK, proc.stdout
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["exit_code"] == 0 and doc["load"]["events"] == doc["totals"]["sent"] == 399
