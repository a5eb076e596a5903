"""``mp2amp migrate --resume-or-start``: one command a supervisor (a Kubernetes Job, a
systemd unit, a cron loop) can run again and again. It starts the run when the work folder
holds none, and continues it when it does. Plain ``--resume`` refuses a folder without a
run (a mistyped folder), and a run without ``--resume`` refuses a folder that holds one,
so a first try stopped before its ledger existed (the first ~0.6 s) left a supervisor with
no command that always goes on (session 28, helper-323)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
from migrate_kit import API_KEY, Project, amplitude, assert_exactly_once, write_toml
from test_stop_signals import LATENCY_MS, _when_batches_done


def _run(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), *extra],
                          env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY), capture_output=True,
                          text=True, timeout=300)


def test_the_same_command_starts_then_goes_on(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url)
        refused = _run(cfg, "--resume", "--quiet")
        assert refused.returncode == 2 and "nothing to resume" in refused.stderr
        first = _run(cfg, "--resume-or-start", "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        started = orjson.loads(first.stdout)
        assert started["resumed"] is False
        assert started["totals"]["sent"] == len(project.expected)
        again = _run(cfg, "--resume-or-start", "--json")  # a finished run: nothing is sent
        assert again.returncode == 0, again.stderr[-2000:]
        resumed = orjson.loads(again.stdout)
        assert resumed["resumed"] is True
        assert resumed["totals"]["sent"] == len(project.expected)
        assert_exactly_once(url, project.expected)


def test_a_stopped_run_goes_on_with_the_same_command(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=4)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet",
             "--resume-or-start"], env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        _when_batches_done(proc, work / "ledger.sqlite", 2)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out) == (143, "")
        assert err == (f"stopped (SIGTERM); the ledger in {work} keeps everything done so far: "
                       "run the same `mp2amp migrate` command again to go on (batches that "
                       "were in flight are sent again with the same insert_ids)\n")
        plain = _run(cfg, "--quiet")  # as before: a run without --resume refuses the folder
        assert plain.returncode == 2 and "already holds a migration" in plain.stderr
        resumed = _run(cfg, "--resume-or-start", "--json")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        result = orjson.loads(resumed.stdout)
        assert result["resumed"] is True and result["totals"]["balanced"]
        assert_exactly_once(url, project.expected)
