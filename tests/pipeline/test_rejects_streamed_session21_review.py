"""Review of defbfdc (a window's transform rejects go to the ledger chunk by chunk: straight
into ``rejects`` on a window's first attempt, through ``rejects_staged`` when it is
transformed again). Real ``mp2amp migrate`` subprocesses against the Amplitude emulator,
stopped (kill -9, SIGINT, SIGTERM) at chosen moments by test-side hooks."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, TIMEZONE, amplitude, stored_counts

T = 1_700_000_000

# ``mp2amp migrate`` with hooks: argv = config, AT, migrate args. AT is WHAT:N with WHAT
# stage-SIG (after the N-th stage_window_rejects), commit (kill -9 after the first
# commit_window_rejects), done (kill -9 after the N-th batch_done), sub-SIG (SIG sent as
# the N-th event is submitted to the uploader), dl (kill -9 after the N-th Amplitude dead
# letter is recorded), none. Env MAXEV: events per batch.
_HOOK = """
import dataclasses, os, signal, sys
from mp2amp.ledger import Ledger
from mp2amp.ledger.rejects import RejectStore
from mp2amp.load.uploader import Uploader
from mp2amp.pipeline import transform_worker
transform_worker.CHUNK_LINES = 8  # ~8 KB chunks
what, _, n = sys.argv[2].partition(":")
n = int(n or 1)
calls = {"stage": 0, "done": 0, "sub": 0}
SIG = {"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}
stage, commit = RejectStore.stage_window_rejects, RejectStore.commit_window_rejects
done, sub = Ledger.batch_done, Uploader.submit_encoded
def staging(self, rows, **kw):
    stage(self, rows, **kw)
    calls["stage"] += 1
    if what.startswith("stage-") and calls["stage"] == n:
        os.kill(os.getpid(), SIG[what.split("-")[1]])
def committing(self, window_id, **kw):
    commit(self, window_id, **kw)
    if what == "commit":
        os.kill(os.getpid(), signal.SIGKILL)
def batch_done(self, batch_id, **kw):
    out = done(self, batch_id, **kw)
    calls["done"] += 1
    if what == "done" and calls["done"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
async def submit_encoded(self, *a, **k):
    calls["sub"] += 1
    if what.startswith("sub-") and calls["sub"] == n:
        os.kill(os.getpid(), SIG[what.split("-")[1]])
    return await sub(self, *a, **k)
RejectStore.stage_window_rejects, RejectStore.commit_window_rejects = staging, committing
Ledger.batch_done, Uploader.submit_encoded = batch_done, submit_encoded
from mp2amp.pipeline.observer import LedgerObserver
dead_letter = LedgerObserver.on_dead_letter
calls["dl"] = 0
def on_dead_letter(self, *a, **k):
    dead_letter(self, *a, **k)
    calls["dl"] += 1
    if what == "dl" and calls["dl"] == n:
        os.kill(os.getpid(), signal.SIGKILL)  # recorded, its batch not done
LedgerObserver.on_dead_letter = on_dead_letter
if os.environ.get("MAXEV"):
    import mp2amp.pipeline.migrate as m
    settings = m.upload_settings
    m.upload_settings = lambda *a, **k: dataclasses.replace(
        settings(*a, **k), max_events=int(os.environ["MAXEV"]))
from mp2amp.cli import main
sys.argv = ["mp2amp", "migrate", "-c", sys.argv[1]] + sys.argv[3:]
main()
"""


def _day(folder: Path, n: int, blob: int = 2000, short_every: int = 0) -> Path:
    """``n`` pairs of lines: a record with a NaN (a ``non_json_value`` reject, odd lines)
    then a good event (even lines); with ``short_every``, every such good event has a
    2-character user id (Amplitude's 400 with ``min_id_length = 5``: a dead letter)."""
    folder.mkdir()
    with (folder / "day.jsonl").open("wb") as f:
        for i in range(n):
            p: dict[str, Any] = {"time": T + i, "distinct_id": f"user-{i % 7}",
                                 "$insert_id": f"bad-{i}", "blob": "x" * blob, "bad": 1}
            f.write(orjson.dumps({"event": "A", "properties": p}).replace(
                b'"bad":1', b'"bad":NaN') + b"\n")
            short = short_every and i % short_every == 0
            p = {"time": T + i, "distinct_id": f"u{i % 3}" if short else f"user-{i % 7}",
                 "$insert_id": f"good-{i}"}
            f.write(orjson.dumps({"event": "Good", "properties": p}) + b"\n")
    return folder


def _config(path: Path, events: Path, work: Path, url: str, amplitude_extra: str = "",
            concurrency: int = 2) -> Path:
    path.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{events}"]\n'
                    f'[amplitude]\napi_host = "{url}"\n{amplitude_extra}'
                    f'[run]\nworkdir = "{work}"\nconcurrency = {concurrency}\n')
    return path


def _migrate(cfg: Path, at: str, *args: str, maxev: int | None = None
             ) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
    if maxev:
        env["MAXEV"] = str(maxev)
    return subprocess.run([sys.executable, "-c", _HOOK, str(cfg), at, *args], env=env,
                          capture_output=True, timeout=120)


def _status(work: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir", str(work),
                           "--json"], env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(orjson.loads(proc.stdout)["totals"])


def _dead(work: Path) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in (work / "dead-letters.jsonl").read_bytes().splitlines()]


def _count(ledger: Path, sql: str) -> int:
    db = sqlite3.connect(ledger)
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


# --- 1. a stop mid-chunk lists the rejects found before it ------------------------------


@pytest.mark.parametrize(("signal_name", "code"), [("int", 130), ("term", 143)])
def test_a_stop_mid_chunk_lists_every_reject_found_before_it(
        tmp_path: Path, signal_name: str, code: int) -> None:
    events = _day(tmp_path / "events", 60, blob=0)  # ~40 lines per 8 KB chunk
    work = tmp_path / "work"
    stop_at = 10  # the 10th good event (line 20): bad lines 1, 3, ..., 19 were rejected
    with amplitude(tmp_path / "amp", latency_ms=300) as url:  # the uploader makes it wait
        cfg = _config(tmp_path / "mp2amp.toml", events, work, url, concurrency=1)
        proc = _migrate(cfg, f"sub-{signal_name}:{stop_at}", "--quiet", maxev=2)
    assert proc.returncode == code, proc.stderr[-2000:]
    listed = {d["line"] for d in _dead(work) if d["stage"] == "transform"}
    found = set(range(1, 2 * stop_at, 2))  # README: "lists what it rejected so far"
    assert found <= listed, f"{len(found - listed)} of {len(found)} rejects not listed"


# --- 2. a resume keeps Amplitude's dead letters until their events are sent again -------


def test_a_resume_stopped_before_resending_keeps_the_dead_letters_it_has_not_replaced(
        tmp_path: Path) -> None:
    events = _day(tmp_path / "events", 120, short_every=4)  # 30 short IDs: 400s
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", events, work, url, "min_id_length = 5\n")
        # kill -9 with 3 of Amplitude's dead letters recorded, their batch not done
        assert _migrate(cfg, "dl:3", "--quiet", maxev=10).returncode == -9
        db = sqlite3.connect(ledger)
        refused = set(db.execute("SELECT source, line FROM rejects WHERE stage = 'amplitude'"))
        db.close()
        assert len(refused) == 3
        # the resume stopped (Ctrl-C) at its first chunk: nothing was sent again yet
        stopped = _migrate(cfg, "stage-int:1", "--quiet", "--resume", maxev=10)
        assert stopped.returncode == 130, stopped.stderr[-2000:]
    listed = {(d["source"], d["line"]) for d in _dead(work) if d["stage"] == "amplitude"}
    # README: dropped by --resume "if its event, sent again, is accepted or parked"
    assert listed == refused
    assert _status(work)["dead_lettered"] == 3


def test_kept_dead_letters_are_counted_once_while_resent_and_after(tmp_path: Path) -> None:
    """The dead letters a resume keeps (their batch not done) are never counted beside
    their event accepted again, at a kill mid-resend or at the end (status and migrate)."""
    events = _day(tmp_path / "events", 120, short_every=4)  # 30 short IDs: 400s
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", events, work, url, "min_id_length = 5\n")
        assert _migrate(cfg, "dl:3", "--quiet", maxev=10).returncode == -9
        assert _migrate(cfg, "stage-int:1", "--quiet", "--resume", maxev=10).returncode == 130
        assert _migrate(cfg, "done:2", "--quiet", "--resume", maxev=10).returncode == -9
        mid = _status(work)
        assert mid["sent"] + mid["dead_lettered"] <= 120  # each good event once at most
        assert _count(ledger, "SELECT COUNT(*) FROM rejects WHERE stage = 'amplitude'") \
            == mid["dead_lettered"] >= 3
        end = _migrate(cfg, "none", "--resume", "--json", maxev=10)
        assert end.returncode == 0, end.stderr[-2000:]
        assert len(stored_counts(url)) == 90
    _assert_each_once(end, work, rejected=120, dead_lettered=30, sent=90)


def _assert_each_once(end: subprocess.CompletedProcess[bytes], work: Path, *, rejected: int,
                      dead_lettered: int, sent: int) -> None:
    """The final run's totals, balanced and equal to status's, and every rejected record
    (transform and Amplitude) listed once in dead-letters.jsonl."""
    totals = orjson.loads(end.stdout)["totals"]
    assert (totals["rejected"], totals["dead_lettered"], totals["sent"]) == (
        rejected, dead_lettered, sent)
    assert totals["balanced"] and _status(work) == totals
    dead = _dead(work)
    assert len(dead) == rejected + dead_lettered == len(
        {(d["source"], d["line"]) for d in dead})


# --- guards -------------------------------------------------------------------------


def test_kills_in_a_window_mixing_400s_and_rejects_then_resume_list_each_once(
        tmp_path: Path) -> None:
    """kill -9 after some batches (their 400s recorded) on the first attempt, then in the
    re-transform with rejects staged, then with batches done again: each reject and dead
    letter once, and the invariant balances (status and migrate agree)."""
    events = _day(tmp_path / "events", 120, short_every=4)  # 120 rejects, 30 dead letters
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", events, work, url, "min_id_length = 5\n")
        assert _migrate(cfg, "done:5", "--quiet", maxev=10).returncode == -9
        first = _count(ledger, "SELECT COUNT(*) FROM rejects WHERE stage = 'transform'")
        assert 0 < first < 120
        assert _migrate(cfg, "stage-kill:10", "--quiet", "--resume", maxev=10).returncode == -9
        assert _count(ledger, "SELECT COUNT(*) FROM rejects WHERE stage = 'transform'") == first
        assert _migrate(cfg, "done:3", "--quiet", "--resume", maxev=10).returncode == -9
        end = _migrate(cfg, "none", "--resume", "--json", maxev=10)
        assert end.returncode == 0, end.stderr[-2000:]
        assert len(stored_counts(url)) == 90
    _assert_each_once(end, work, rejected=120, dead_lettered=30, sent=90)


def test_import_files_sink_killed_in_both_attempts_then_resumed_lists_each_once(
        tmp_path: Path) -> None:
    events = _day(tmp_path / "events", 120)
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp") as url:
        cfg = _config(tmp_path / "mp2amp.toml", events, work, url,
                      f'output_dir = "{tmp_path / "out"}"\n')
        assert _migrate(cfg, "stage-kill:3", "--quiet").returncode == -9
        first = _count(ledger, "SELECT COUNT(*) FROM rejects")
        assert 0 < first < 120
        assert _migrate(cfg, "stage-kill:5", "--quiet", "--resume").returncode == -9
        assert _count(ledger, "SELECT COUNT(*) FROM rejects") == first
        stopped = _migrate(cfg, "stage-int:7", "--quiet", "--resume")
        assert stopped.returncode == 130, stopped.stderr[-2000:]
        assert len(_dead(work)) == first  # the earlier attempt's, never both
        end = _migrate(cfg, "none", "--resume", "--json")
        assert end.returncode == 0, end.stderr[-2000:]
    _assert_each_once(end, work, rejected=120, dead_lettered=0, sent=120)
