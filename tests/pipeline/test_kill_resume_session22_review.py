"""Review (session 22): kill -9 of a real ``mp2amp migrate`` subprocess, then ``--resume``,
through the day's changed code paths: staging's merge rounds (``staging._fewer_runs``),
the parked-event replay paged through a temporary table (``Ledger.parked_events``), the
uploader's quota relief (``Uploader._relieve_quota_pressure``), done batches looked up
live (``DoneBatches``) and globs passing over folders without data. After the kills and
resumes the Amplitude emulator holds each expected insert_id once, ``status --json``
equals the last run's totals (balanced) and nothing the quota now accepts stays parked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Clock,
    Project,
    amplitude,
    assert_counts_exactly_once,
    stored_counts,
)

EXIT_OK, EXIT_PARKED = 0, 3
QUOTA = 40

# every process of the run (staging may run in spawned workers): runs of 3 records merged
# 4 at a time, and kill -9 of the group at the N-th merged run of a round ($ROUND_AT)
_SITE = """
import os, signal, sys
if os.environ.get("MP2AMP_REVIEW_ROUNDS"):
    from mp2amp.pipeline import staging
    d = list(staging.stage.__defaults__)
    d[0] = 3
    staging.stage.__defaults__ = tuple(d)
    staging.MERGE_RUNS = 4
    _rp = staging._run_path
    _calls = [0]
    def _run_path(tmpdir, n):
        if sys._getframe(1).f_code.co_name == "_fewer_runs":
            _calls[0] += 1
            if _calls[0] == int(os.environ.get("ROUND_AT") or 0):
                os.killpg(os.getpgid(0), signal.SIGKILL)
        return _rp(tmpdir, n)
    staging._run_path = _run_path
"""

# ``mp2amp migrate`` with kill hooks: argv = config, AT (WHAT:N), upload overrides (JSON),
# migrate args. WHAT: replayed (after the N-th accepted replay batch of parked events is
# recorded), relief (right after the N-th quota relief that parked events), done (after
# the N-th batch_done), pending / extracted / loaded (after the N-th Ledger.mark_pending,
# mark_extracted, mark_loaded), none.
_HOOK = """
import dataclasses, json, os, signal, sys
what, _, n = sys.argv[2].partition(":")
n = int(n or 1)
calls = {}
def hit(name):
    calls[name] = calls.get(name, 0) + 1
    if what == name and calls[name] == n:
        os.killpg(os.getpgid(0), signal.SIGKILL)
from mp2amp.ledger import Ledger
from mp2amp.load.uploader import Uploader
from mp2amp.pipeline.observer import LedgerObserver, PARKED_KEY
_acc = LedgerObserver.on_batch_accepted
def on_batch_accepted(self, batch_id, events):
    out = _acc(self, batch_id, events)
    if batch_id.startswith(PARKED_KEY + "/"):
        hit("replayed")
    return out
LedgerObserver.on_batch_accepted = on_batch_accepted
_done = Ledger.batch_done
def batch_done(self, *a, **k):
    out = _done(self, *a, **k)
    hit("done")
    return out
Ledger.batch_done = batch_done
def after(name, original):
    def wrapped(self, *a, **k):
        out = original(self, *a, **k)
        hit(name)
        return out
    return wrapped
Ledger.mark_pending = after("pending", Ledger.mark_pending)
Ledger.mark_extracted = after("extracted", Ledger.mark_extracted)
Ledger.mark_loaded = after("loaded", Ledger.mark_loaded)
_relieve = Uploader._relieve_quota_pressure
def relieve(self):
    before = self.report.parked
    out = _relieve(self)
    if self.report.parked > before:
        hit("relief")
    return out
Uploader._relieve_quota_pressure = relieve
import mp2amp.pipeline.migrate as m
settings = m.upload_settings
over = json.loads(sys.argv[3])
m.upload_settings = lambda *a, **k: dataclasses.replace(settings(*a, **k), **over)
from mp2amp.cli import main
sys.argv = ["mp2amp", "migrate", "-c", sys.argv[1]] + sys.argv[4:]
main()
"""


def _config(path: Path, files: str, work: Path, url: str, concurrency: int = 2) -> Path:
    path.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{files}"]\n'
                    f'[amplitude]\napi_host = "{url}"\n'
                    f'[run]\nworkdir = "{work}"\nconcurrency = {concurrency}\n')
    return path


def _migrate(cfg: Path, at: str, upload: dict[str, Any], *args: str,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    site = cfg.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    full = dict(os.environ, AMPLITUDE_API_KEY=API_KEY, **(env or {}),
                PYTHONPATH=os.pathsep.join([str(site), *filter(None, [
                    os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", _HOOK, str(cfg), at, json.dumps(upload),
                           *args], env=full, capture_output=True, timeout=120,
                          start_new_session=True)


def _status(work: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir", str(work),
                           "--json"], env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(orjson.loads(proc.stdout)["totals"])


def _killed(proc: subprocess.CompletedProcess[bytes], at: str) -> None:
    assert proc.returncode == -9, (at, proc.returncode, proc.stderr[-3000:])


def _finish(cfg: Path, work: Path, upload: dict[str, Any], clock: Clock | None = None,
            env: dict[str, str] | None = None, tries: int = 4) -> dict[str, Any]:
    """Resume (a day later each time, with a clock) until the run ends 0; its result."""
    for _ in range(tries):
        if clock is not None:
            clock.offset += 25 * 3600
        proc = _migrate(cfg, "none", upload, "--resume", "--json", "--quiet", env=env)
        assert proc.returncode in (EXIT_OK, EXIT_PARKED), proc.stderr[-3000:]
        result = orjson.loads(proc.stdout)
        assert result["totals"]["balanced"], result["totals"]
        if proc.returncode == EXIT_OK:
            return dict(result)
    raise AssertionError(f"still parked after {tries} resumes: {result['totals']}")


def _check_end(url: str, expected: frozenset[Any], result: dict[str, Any],
               work: Path) -> None:
    assert_counts_exactly_once(stored_counts(url), expected)
    totals = result["totals"]
    assert totals["parked"] == 0 and totals["sent"] == len(expected), totals
    assert _status(work) == totals


# --- staging's merge rounds killed mid-round, DoneBatches after a kill mid-load --------


def test_kill_in_merge_round_then_resume(project: Project, tmp_path: Path) -> None:
    """Runs of 3 records merged 4 at a time (rounds): killed at the 3rd merged run of a
    round; then killed after the 5th batch; the resume stages the window once (no sort
    runs left in staged/), skips the done batches and delivers each event once."""
    env = {"MP2AMP_REVIEW_ROUNDS": "1", "ROUND_AT": "3"}
    upload = {**FAST, "max_events": 50}
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", str(project.events), work, url)
        _killed(_migrate(cfg, "none", upload, "--quiet", env=env), "round:3")
        left = [p.name for p in (work / "staged").iterdir() if p.name.startswith(".stage-")]
        assert left, "the kill came before any merge round"
        env2 = {"MP2AMP_REVIEW_ROUNDS": "1"}
        _killed(_migrate(cfg, "done:5", upload, "--resume", "--quiet", env=env2), "done:5")
        result = _finish(cfg, work, upload, env=env2, tries=1)
        _check_end(url, project.expected, result, work)
        assert not [p for p in (work / "staged").iterdir() if p.name.startswith(".stage-")]


# --- loaded windows whose copies were deleted: kill between mark_pending and restaging --


def _unstaged_loaded_run(events: Path, expected: frozenset[Any], tmp_path: Path,
                         env: dict[str, str] | None = None) -> None:
    """Loaded windows' copies deleted; resumes (staging with ``env``) killed after the
    first ``mark_pending`` and after the first restaged window; then finished."""
    upload = {**FAST, "max_events": 50}
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", str(events), work, url)
        _killed(_migrate(cfg, "loaded:2", upload, "--quiet"), "loaded:2")
        from mp2amp.ledger import Ledger
        ledger = Ledger(work / "ledger.sqlite")
        try:
            rows = ledger.windows()
        finally:
            ledger.close()
        loaded = [w for w in rows if w.state == "loaded"]
        assert len(loaded) >= 2, [(w.window_id, w.state) for w in rows]
        for path in {w.staged_path for w in rows if w.staged_path}:
            Path(path).unlink(missing_ok=True)  # every staged copy deleted
        _killed(_migrate(cfg, "pending:1", upload, "--resume", "--quiet", env=env),
                "pending:1")
        _killed(_migrate(cfg, "extracted:1", upload, "--resume", "--quiet", env=env),
                "extracted:1")
        result = _finish(cfg, work, upload, tries=1, env=env)
        _check_end(url, expected, result, work)


def test_kill_between_mark_pending_and_restaging_merged(project: Project,
                                                        tmp_path: Path) -> None:
    """The same with days cut into two overlapping files each (merged windows)."""
    from migrate_kit import split_days
    events = split_days(project.events, tmp_path / "events", slice(0, 2))
    _unstaged_loaded_run(events, project.expected, tmp_path)


# --- globs over hour folders: a resume whose glob now matches new folders --------------


def test_kill_while_staging_then_resume_with_new_hour_folders(project: Project,
                                                              tmp_path: Path) -> None:
    """``files = ["events/*"]``; killed in a merge round of the first window's staging
    (windows still pending). New hour folders (a marker alone; a first part file) appear
    before the resume: the run stages and sends only its own windows, each event once."""
    events = tmp_path / "events"
    for i, day in enumerate(sorted(project.events.iterdir())):
        (events / f"h{i:02d}").mkdir(parents=True)
        shutil.copy(day, events / f"h{i:02d}" / day.name)
    (events / "h40").mkdir()
    (events / "h40" / "_SUCCESS").write_bytes(b"")  # an hour without events from the start
    upload = {**FAST, "max_events": 50}
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", f"{events}/*", work, url)
        env = {"MP2AMP_REVIEW_ROUNDS": "1", "ROUND_AT": "2"}
        _killed(_migrate(cfg, "none", upload, "--quiet", env=env), "round:2")
        (events / "h50").mkdir()
        (events / "h50" / "_SUCCESS").write_bytes(b"")
        (events / "h40" / "late.jsonl").write_bytes(orjson.dumps(
            {"event": "Late", "properties": {"time": 1_700_000_000, "distinct_id": "late-u",
                                             "$insert_id": "late-1"}}) + b"\n")
        result = _finish(cfg, work, upload, tries=1)
        _check_end(url, project.expected, result, work)
        assert [Path(p).name for p in result["inputs_not_in_run"]] == ["late.jsonl"]


# --- quota relief and the parked replay (paged via a temporary table), killed ----------


def _chain(project: Project, tmp_path: Path, steps: list[tuple[str, bool]],
           upload: dict[str, Any]) -> None:
    """Each step: (kill point or "none", advance the quota's day first); then finish."""
    clock = Clock()
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", daily_quota=QUOTA, now=clock) as url:
        cfg = _config(tmp_path / "mp2amp.toml", str(project.events), work, url)
        for n, (at, day) in enumerate(steps):
            if day:
                clock.offset += 25 * 3600
            proc = _migrate(cfg, at, upload, *(["--resume"] if n else []), "--quiet")
            if at == "none":
                assert proc.returncode in (EXIT_OK, EXIT_PARKED), proc.stderr[-3000:]
            else:
                _killed(proc, at)
        result = _finish(cfg, work, upload, clock)
        _check_end(url, project.expected, result, work)


def test_chain_relief_same_day_resumes_and_replay_kills(project: Project,
                                                       tmp_path: Path) -> None:
    upload = {**FAST, "park_delay": 3600.0, "park_retries": 2, "max_events": 10,
              "max_pending_events": 40}
    _chain(project, tmp_path, [("relief:1", False), ("relief:1", False), ("done:4", False),
                               ("none", False), ("replayed:3", True)], upload)


def test_kill_mid_replay_past_a_page_with_some_parked_again(project: Project,
                                                            tmp_path: Path) -> None:
    """A quota of 4 parks over a thousand events (more than one page of the replay); a
    resume the same day with the quota raised to 20 replays them (some accepted, some
    parked again) and is killed past the first page; another is killed at once; a day
    later the rest is delivered, each once, balanced."""
    from migrate_kit import post_json
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 0, "max_events": 50}
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", daily_quota=4, now=clock) as url:
        cfg = _config(tmp_path / "mp2amp.toml", str(project.events), work, url)
        first = _migrate(cfg, "none", upload, "--json", "--quiet")
        assert first.returncode == EXIT_PARKED, first.stderr[-3000:]
        assert orjson.loads(first.stdout)["totals"]["parked"] > 1100
        post_json(url + "/_emulator/faults", {"daily_quota": 20})
        _killed(_migrate(cfg, "replayed:24", upload, "--resume", "--quiet"), "replayed:24")
        _killed(_migrate(cfg, "replayed:1", upload, "--resume", "--quiet"), "replayed:1")
        post_json(url + "/_emulator/faults", {"daily_quota": 100_000})
        result = _finish(cfg, work, upload, clock)
        _check_end(url, project.expected, result, work)

