"""Session 20 review of `mp2amp status` and the progress display / plain log lines.

README (Progress): "on a `--resume` the windows and batches an earlier run delivered show
as done but do not count toward the pace, so the ETA reads `-:--:--` (`eta=?`) until this
run has delivered something."
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from migrate_kit import (
    FAST,
    LOG_LINE,
    TIMEZONE,
    Clock,
    Crash,
    amplitude,
    crash_at_batch,
    make_config,
    small_events,
)

from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, migrate
from mp2amp.pipeline.progress import Counters, LogReporter
from mp2amp.pipeline.status import status

TZ = TIMEZONE
LINE = LOG_LINE


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project (2 days, 400 records, one duplicate in the first day's file)."""
    return small_events(tmp_path_factory.mktemp("small"))


def _load_lines(text: str) -> list[dict[str, str]]:
    rows = [m.groupdict() for m in map(LINE.fullmatch, text.splitlines()) if m]
    return [r for r in rows if r["phase"] == "load"]


def test_resume_eta_is_unknown_until_this_run_delivers(events: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    upload: dict[str, Any] = {**FAST, "max_bytes": 20_000, "concurrency": 1}
    with amplitude(tmp_path / "amp", latency_ms=250) as url:
        cfg = make_config(events, tmp_path / "work", url)
        with monkeypatch.context() as m:
            crash_at_batch(m, 4)  # killed inside the first window: 3 of its batches done
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        before = status(tmp_path / "work")
        assert before.batches["done"] == 3 and not before.loaded
        out = io.StringIO()
        result = migrate(cfg, resume=True, reporter=LogReporter(out, interval=0.05),
                         upload_overrides=upload)
    assert result.exit_code == EXIT_OK
    load = _load_lines(out.getvalue())
    waiting = [r for r in load if r["sent"] == "0"]
    assert waiting, out.getvalue()  # lines while the first request of this run was out
    # nothing delivered by this run yet: the pace is unknown (observed eta=24s, 48s, 73s...)
    assert all(r["eta"] == "?" for r in waiting), [(r["done"], r["total"], r["sent"], r["eta"]) for r in waiting]


def test_parked_resume_does_not_show_finished_before_delivering(events: Path,
                                                                tmp_path: Path) -> None:
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 1, "concurrency": 4}
    with amplitude(tmp_path / "amp", daily_quota=20, now=clock, latency_ms=300) as url:
        cfg = make_config(events, tmp_path / "work", url)
        first = migrate(cfg, upload_overrides=upload)
        assert first.exit_code == EXIT_PARKED and first.totals["parked"] > 0
        clock.offset += 25 * 3600  # the quota allows more now
        out = io.StringIO()
        second = migrate(cfg, resume=True, reporter=LogReporter(out, interval=0.05),
                         upload_overrides=upload)
    assert second.totals["sent"] > first.totals["sent"]  # this run delivered parked events
    load = _load_lines(out.getvalue())
    waiting = [r for r in load if r["sent"] == "0"]
    assert waiting, out.getvalue()
    # observed: done=400/400 ... eta=0s while the parked events were still on their way
    assert all(r["eta"] == "?" for r in waiting), [(r["done"], r["total"], r["sent"], r["eta"]) for r in waiting]


def test_status_totals_agree_with_the_run_after_kill_and_resume(events: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Guard: status after a crash names in-flight batches and an unbalanced run; after
    the resume its totals are the resume's."""
    upload: dict[str, Any] = {**FAST, "max_bytes": 20_000, "concurrency": 2}
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url)
        with monkeypatch.context() as m:
            crash_at_batch(m, 5)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        mid = status(tmp_path / "work")
        assert not mid.complete and mid.running_pid is None
        assert mid.last_attempt is not None and mid.last_attempt["outcome"] == "crashed"
        result = migrate(cfg, resume=True, upload_overrides=upload)
    after = status(tmp_path / "work")
    assert after.complete and after.totals == result.totals


def test_counters_eta_and_rate_never_divide_by_zero() -> None:
    c = Counters()
    c.begin("load", 0)
    assert c.eta() is None and c.rate() >= 0
    c.begin("load", 10, done=10)
    assert c.eta() == 0.0


def test_migrate_runs_with_stderr_closed(events: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from migrate_kit import API_KEY, write_toml

    env = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "c.toml", events, tmp_path / "work", url)
        # fd 2 closed in the child: Python sets sys.stderr to None (plain log lines have
        # nowhere to go; the run itself must not depend on them)
        proc = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg)],
                              stdout=subprocess.PIPE, text=True, env=env, timeout=120,
                              preexec_fn=lambda: os.close(2))
    assert proc.returncode == 0, proc.stdout
    assert status(tmp_path / "work").complete


# --- fixes (session 20): the load's pace and done count, and a run without stderr ------

class _Ledger:
    """The ledger calls the observer makes while parked events are replayed."""

    def __init__(self) -> None:
        self.resolved: list[tuple[str, str]] = []

    def resolve_parked(self, origin: str, outcome: str) -> None:
        self.resolved.append((origin, outcome))

    def park(self, *args: Any) -> None:
        return None

    def add_rejects(self, rows: Any) -> None:
        return None

    def atomic(self) -> Any:
        import contextlib
        return contextlib.nullcontext()


def _observer(counters: Counters) -> Any:
    from mp2amp.pipeline.observer import LedgerObserver
    return LedgerObserver(_Ledger(), counters, {"w0": "a", "w1": "b"},  # type: ignore[arg-type]
                          on_window_loaded=lambda window: None)


def _window(window_id: str, state: str, records: int) -> Any:
    from types import SimpleNamespace
    return SimpleNamespace(window_id=window_id, state=state, records=records)


def _submitted(window: str, line: int, batch_id: str) -> Any:
    from mp2amp.load.observer import Submitted
    return Submitted(b"{}", (window, line), batch_id, "d", None, 0)


def test_parked_replays_are_this_runs_work_and_counted_once() -> None:
    """A resume replaying parked events: those of loaded windows are not done at the start
    and become done, at this run's pace, as each is accepted, dead-lettered or parked
    again; those of a window not loaded count once (their done batch is skipped)."""
    from mp2amp.load.settings import LoadReport

    c = Counters()
    obs = _observer(c)
    earlier = obs.resume_from([_window("a", "loaded", 100), _window("b", "extracted", 50)],
                              {"a": {"parked": 10, "accepted": 4}, "b": {"parked": 3}})
    assert earlier == 90
    c.begin("load", 150, done=earlier)
    report = LoadReport()
    obs.refresh(report)
    assert (c.done, c.eta()) == (90, None)
    # a's events: accepted, dead-lettered, parked again
    report.accepted += 1
    obs.on_batch_accepted("parked/0/0", [_submitted("a", 1, "parked/0/0")])
    report.dead_lettered["invalid"] += 1
    obs.on_dead_letter({}, ("a", 2), "invalid", "bad", batch_id="parked/0/0")
    report.parked += 1
    obs.on_parked({}, ("a", 3), "daily_quota", "parked/0/1")
    obs.refresh(report)
    assert c.done == 93 and c.eta() is not None
    # b's: its record is done once its done batch is skipped, not twice
    report.accepted += 1
    obs.on_batch_accepted("parked/0/2", [_submitted("b", 1, "parked/0/2")])
    obs.refresh(report)
    assert c.done == 93
    report.skipped += 20
    pace = c.done - c._done_at_phase_start
    obs.refresh(report)
    assert c.done == 113 and c.done - c._done_at_phase_start == pace  # skipped: not the pace


def test_records_done_without_amplitude_are_not_the_pace_before_its_first_outcome() -> None:
    """Duplicates, identity records and rejects are done at once; until Amplitude
    answered this run the ETA is unknown (an unserializable event's dead letter is not
    an answer), then they count toward the pace."""
    from mp2amp.load.settings import LoadReport

    c = Counters()
    obs = _observer(c)
    c.begin("load", 1000, done=obs.resume_from([], {}))
    report = LoadReport()
    obs.unsent_records = 30
    report.dead_lettered["unserializable"] += 1
    obs.refresh(report)
    assert (c.done, c.eta()) == (31, None)
    report.accepted = 10
    obs.refresh(report)
    assert c.done == 41 and c.done - c._done_at_phase_start == 10 and c.eta() is not None
    obs.unsent_records = 35
    obs.refresh(report)
    assert c.done - c._done_at_phase_start == 15  # from now on: this run's pace


def test_no_stderr_no_progress_output(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """sys.stderr is None: no reporter, and a log reporter made anyway writes nowhere
    (``print(file=None)`` would write to stdout, where the result goes)."""
    import sys

    from mp2amp.pipeline.progress import NullReporter, choose_reporter

    monkeypatch.setattr(sys, "stderr", None)
    assert isinstance(choose_reporter(False), NullReporter)
    log = LogReporter(interval=0.0)
    c = Counters()
    log.update(c)
    log.close(c)
    assert capsys.readouterr().out == ""


def _closed_stderr_run(args: list[str]) -> Any:
    import os
    import subprocess
    import sys

    from migrate_kit import API_KEY

    env = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], stdout=subprocess.PIPE,
                          text=True, env=env, timeout=120, preexec_fn=lambda: os.close(2))


def test_migrate_with_stderr_closed_prints_its_result_and_keeps_its_exit_code(
        events: Path, tmp_path: Path) -> None:
    """`2>&-`: the totals are still printed on stdout, and a refused run exits with its
    own code (2), its stop object on stdout with --json."""
    import json

    from migrate_kit import write_toml

    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "c.toml", events, tmp_path / "work", url)
        done = _closed_stderr_run(["migrate", "-c", str(cfg)])
        again = _closed_stderr_run(["migrate", "-c", str(cfg)])
        again_json = _closed_stderr_run(["migrate", "-c", str(cfg), "--json"])
    assert done.returncode == 0, done.stdout
    assert "400" in done.stdout, done.stdout  # the totals table: 400 records read
    assert again.returncode == 2, again.stdout
    assert again_json.returncode == 2, again_json.stdout
    stop = json.loads(again_json.stdout)
    assert stop["exit_code"] == 2 and "already holds a migration" in stop["error"]["message"]
