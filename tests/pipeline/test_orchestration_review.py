"""`mp2amp migrate` end to end as orchestration: real subprocesses, real signals, the
S3-import sink killed and resumed, two runs on one work folder, config changes on resume,
zero-event windows, a full output disk and the result a person reads at the end.

Fault injection in subprocesses goes through a small wrapper script (``_SLOW_SINK``) that
makes the sink's uploads slow (a slow S3), so that a signal or kill lands while the import
files are being written; the run itself is the real CLI.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Key,
    Project,
    amplitude,
    assert_exactly_once,
    make_config,
    run_until_crash,
    write_toml,
)

from mp2amp.config import load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.errors import TerminalError
from mp2amp.load.s3sink import CONVERTER_NAME
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.worklock import running_pid

# The sink with small files and slow uploads (0.15 s each), then the real CLI.
_SLOW_SINK = """\
import functools, os, sys, time
import mp2amp.pipeline.migrate as m
from mp2amp.load.s3sink import S3ImportSink

class Slow(S3ImportSink):
    def _upload(self, staged):
        time.sleep(0.15)
        super()._upload(staged)

if os.environ.get("SLOW_WRITE"):  # the write phase too: 0.4 ms an event
    write = S3ImportSink.write_encoded

    def slow_write(self, data, time_ms):
        time.sleep(0.0004)
        write(self, data, time_ms)

    Slow.write_encoded = slow_write
m.S3ImportSink = functools.partial(Slow, target_file_bytes=100_000, min_file_bytes=5_000)
from mp2amp.cli import main
sys.argv = ["mp2amp", *sys.argv[1:]]
main()
"""


def _sink_toml(path: Path, files: str, work: Path, out: Path | str) -> Path:
    path.write_text(
        f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{files}"]\n'
        f'[amplitude]\noutput_dir = "{out}"\n[run]\nworkdir = "{work}"\n'
    )
    return path


def _env() -> dict[str, str]:
    return dict(os.environ, AMPLITUDE_API_KEY=API_KEY)


def _start(*args: str, wrapper: Path | None = None) -> subprocess.Popen[str]:
    head = [sys.executable, str(wrapper)] if wrapper else [sys.executable, "-m", "mp2amp"]
    return subprocess.Popen(
        [*head, *args],
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _run(*args: str, wrapper: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = _start(*args, wrapper=wrapper)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _wait_for(what: Any, proc: subprocess.Popen[str] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the run ended first: {proc.stderr.read()[-2000:]}"
                if proc.stderr
                else "the run ended first"
            )
        time.sleep(0.005)
    raise AssertionError("timed out")


def _import_files(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        p.name: [orjson.loads(line) for line in gzip.decompress(p.read_bytes()).splitlines()]
        for p in sorted(out.glob("*.json.gz"))
    }


def _keys(files: dict[str, list[dict[str, Any]]]) -> list[Key]:
    return [
        (e.get("device_id") or e.get("user_id"), e["insert_id"])
        for rows in files.values()
        for e in rows
    ]


def _assert_import_complete(out: Path, expected: frozenset[Key], prefix: str) -> None:
    """Each expected event once, only the final attempt's files, a converter config whose
    filterPattern picks exactly those files, no leftover .part."""
    files = _import_files(out)
    assert files and all(name.startswith(prefix) for name in files), sorted(files)
    found = _keys(files)
    assert len(found) == len(set(found)), "an event is in the import files twice"
    assert set(found) == expected
    pattern = orjson.loads((out / CONVERTER_NAME).read_bytes())["keyValidatorConfig"][
        "filterPattern"
    ]
    for name in files:
        assert re.search(pattern, f"prefix/{name}"), (pattern, name)
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def _status(cfg: Path) -> dict[str, Any]:
    proc = _run("status", "-c", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    return orjson.loads(proc.stdout)


# --- the result a person reads -----------------------------------------------------------


def test_the_result_has_one_row_per_window_in_json_and_with_status(
    project: Project, tmp_path: Path
) -> None:
    """README: the printed result has the totals; --json one row per window, as
    `status --windows` shows them (the per-window rows were once claimed for the table)."""
    cfg = _sink_toml(
        tmp_path / "mp2amp.toml", str(project.events / "*"), tmp_path / "work", tmp_path / "out"
    )
    proc = _run("migrate", "-c", str(cfg), "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = orjson.loads(proc.stdout)["windows"]
    days = sorted(str(day) for day in project.events.iterdir())
    assert sorted(r["window"] for r in rows) == days
    table = _run("status", "--workdir", str(tmp_path / "work"), "--windows")
    for day in days:
        assert Path(day).name in table.stdout, f"no row for the window {day}"


# --- SIGTERM while one big file is sorted ------------------------------------------------


def test_sigterm_while_one_big_file_is_sorted_frees_the_lock_only_when_nothing_writes(
    project: Project, tmp_path: Path
) -> None:
    big = tmp_path / "in" / "all.jsonl"
    big.parent.mkdir()
    lines = b"".join(gzip.decompress(p.read_bytes()) for p in sorted(project.events.iterdir()))
    with open(big, "wb") as f:
        for _ in range(30):  # ~60 MB, ~76k records: about a second to sort
            f.write(lines)
    work = tmp_path / "work"
    cfg = _sink_toml(tmp_path / "mp2amp.toml", str(big), work, tmp_path / "out")
    proc = _start("migrate", "-c", str(cfg), "--quiet")
    staged = work / "staged"
    _wait_for(
        lambda: staged.is_dir() and any(p.name.startswith(".stage-") for p in staged.iterdir()),
        proc,
    )
    proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: (work / "migrate.lock").exists() and running_pid(work) is None)
    at_release = sorted(p.name for p in staged.iterdir() if not p.name.startswith(".stage-"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    after_exit = sorted(p.name for p in staged.iterdir() if not p.name.startswith(".stage-"))
    assert after_exit == at_release, (
        "the stopping run wrote a staged file after it had released the work folder's lock"
    )


# --- kill -9 and signals while the import files are written ------------------------------


@dataclass
class KilledSink:
    out: Path
    work: Path
    cfg: Path
    before_kill: list[str]
    leftover_scratch: dict[str, int]  # scratch/run-* of the killed run -> bytes it holds
    resumed: subprocess.CompletedProcess[str]


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def killed_sink(project: Project, tmp_path_factory: pytest.TempPathFactory) -> KilledSink:
    """kill -9 once two import files of the first attempt are in the folder, then
    ``--resume`` (the real CLI both times, through the slow-upload wrapper)."""
    tmp = tmp_path_factory.mktemp("killed-sink")
    wrapper = tmp / "slow_sink.py"
    wrapper.write_text(_SLOW_SINK)
    out, work = tmp / "out", tmp / "work"
    cfg = _sink_toml(tmp / "mp2amp.toml", str(project.events / "*"), work, out)
    proc = _start("migrate", "-c", str(cfg), "--quiet", wrapper=wrapper)
    _wait_for(lambda: out.is_dir() and len(list(out.glob("mp2amp-a1-*.json.gz"))) >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    before = sorted(p.name for p in out.iterdir())
    leftover = {p.name: _tree_bytes(p) for p in (work / "scratch").iterdir()}
    resumed = _run("migrate", "-c", str(cfg), "--quiet", "--resume", "--json", wrapper=wrapper)
    return KilledSink(out, work, cfg, before, leftover, resumed)


def test_kill9_while_import_files_are_written_then_resume_writes_each_event_once(
    project: Project, killed_sink: KilledSink
) -> None:
    k = killed_sink
    assert k.resumed.returncode == 0, k.resumed.stderr[-2000:]
    result = orjson.loads(k.resumed.stdout)
    assert result["resumed"] and result["totals"]["balanced"]
    assert result["load"]["attempt"] == 2
    removed = sorted(Path(p).name for p in result["load"]["files_removed_from_earlier_attempts"])
    assert removed == [n for n in k.before_kill if n.startswith("mp2amp-a1-")]
    _assert_import_complete(k.out, project.expected, "mp2amp-a2-")
    assert result["totals"]["sent"] == len(project.expected)
    again = _status(k.cfg)
    assert again["complete"] and again["last_attempt"]["outcome"] == "finished"


def test_the_killed_runs_scratch_is_gone_once_the_resume_has_finished(
    killed_sink: KilledSink,
) -> None:
    k = killed_sink
    assert k.resumed.returncode == 0, k.resumed.stderr[-2000:]
    assert k.leftover_scratch and sum(k.leftover_scratch.values()) > 0
    still = {
        name: _tree_bytes(k.work / "scratch" / name)
        for name in k.leftover_scratch
        if (k.work / "scratch" / name).exists()
    }
    assert not still, f"the killed run's scratch is still in the work folder: {still}"


def _window_states(work: Path) -> dict[str, int]:
    ledger = work / "ledger.sqlite"
    if not ledger.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT state, COUNT(*) FROM windows GROUP BY state").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return {}
    return {str(state): int(n) for state, n in rows}


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("phase", ["write", "files"])
@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [
        (signal.SIGINT, 130, "interrupted"),
        (signal.SIGTERM, 143, "stopped (SIGTERM)"),
    ],
)
def test_a_signal_while_import_files_are_made_then_resume(
    project: Project,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
    code: int,
    said: str,
    phase: str,
) -> None:
    """To the whole group (the transform worker too), while events go into the sorted
    runs (write) or while the files are cut and uploaded (files)."""
    wrapper = tmp_path / "slow_sink.py"
    wrapper.write_text(_SLOW_SINK)
    out, work = tmp_path / "out", tmp_path / "work"
    cfg = _sink_toml(tmp_path / "mp2amp.toml", str(project.events / "*"), work, out)
    if phase == "write":
        monkeypatch.setenv("SLOW_WRITE", "1")
    proc = _start("migrate", "-c", str(cfg), "--quiet", wrapper=wrapper)
    if phase == "write":  # every window through the identity pass, no file yet
        _wait_for(lambda: _window_states(work) == {"identity": 3}, proc)
        time.sleep(0.2)
        assert not out.exists() or not list(out.glob("*.json.gz"))
    else:
        _wait_for(lambda: out.is_dir() and len(list(out.glob("mp2amp-a1-*.json.gz"))) >= 2, proc)
    os.killpg(proc.pid, signum)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert stdout == ""
    assert err.startswith(f"{said}; the ledger in {work} keeps everything done so far")
    assert _group_gone(proc.pid), "a worker outlived the stopped run"
    seen = _status(cfg)
    assert not seen["complete"]
    assert seen["last_attempt"]["outcome"] == "stopped"
    how = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert seen["last_attempt"]["message"] == f"stopped by {how}; resume with --resume"
    assert seen["last_attempt"]["exit_code"] == code
    assert "loaded" not in seen["states"]  # windows count as loaded only once files exist
    monkeypatch.delenv("SLOW_WRITE", raising=False)
    resumed = _run("migrate", "-c", str(cfg), "--quiet", "--resume", "--json", wrapper=wrapper)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert orjson.loads(resumed.stdout)["load"]["attempt"] == 2
    _assert_import_complete(out, project.expected, "mp2amp-a2-")


# --- the output folder ------------------------------------------------------------------


def test_refused_output_folder_then_own_folder_and_resume_as_told(
    project: Project, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    first = _sink_toml(tmp_path / "first.toml", str(project.events / "*"), tmp_path / "w1", shared)
    assert _run("migrate", "-c", str(first), "--quiet").returncode == 0
    second = _sink_toml(
        tmp_path / "second.toml", str(project.events / "*"), tmp_path / "w2", shared
    )
    refused = _run("migrate", "-c", str(second), "--quiet")
    assert refused.returncode == 2
    assert "give each migration its own folder or prefix" in refused.stderr
    assert "run the same `mp2amp migrate` command with --resume" in refused.stderr
    # as told: its own folder, then --resume
    _sink_toml(second, str(project.events / "*"), tmp_path / "w2", tmp_path / "own")
    resumed = _run("migrate", "-c", str(second), "--quiet", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_import_complete(tmp_path / "own", project.expected, "mp2amp-a1-")


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "1M"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_output_disk_is_named_not_the_work_folder(
    project: Project, tmp_path: Path, small_disk: Path
) -> None:
    out = small_disk / "out"
    cfg = _sink_toml(tmp_path / "mp2amp.toml", str(project.events / "*"), tmp_path / "work", out)
    proc = _run("migrate", "-c", str(cfg), "--quiet")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: the disk is full (writing "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"(writing {out}/" in proc.stderr, proc.stderr
    assert "move the work folder" not in proc.stderr


def test_a_full_output_disk_then_space_and_resume_writes_each_event_once(
    project: Project, tmp_path: Path, small_disk: Path
) -> None:
    out = small_disk / "out"
    cfg = _sink_toml(tmp_path / "mp2amp.toml", str(project.events / "*"), tmp_path / "work", out)
    assert _run("migrate", "-c", str(cfg), "--quiet").returncode == 2
    assert _status(cfg)["last_attempt"]["exit_code"] == 2
    subprocess.run(["mount", "-o", "remount,size=50M", str(small_disk)], check=True)
    resumed = _run("migrate", "-c", str(cfg), "--quiet", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_import_complete(out, project.expected, "mp2amp-a2-")


# --- zero-event windows -----------------------------------------------------------------


def test_export_days_without_events_into_import_files(project: Project, tmp_path: Path) -> None:
    """Export API days around the data (none of their events exist) with the S3-import
    sink: every day a window, the empty ones loaded with nothing read; each event once;
    a resume of the finished run writes nothing again."""
    mixpanel = MixpanelEmulator(
        MixpanelConfig(data_dir=project.root, export_per_hour=None, export_per_second=None)
    )
    out = tmp_path / "out"
    with mixpanel.running() as mp_url:
        cfg = load_config(
            None,
            {
                "source.from_date": "2023-12-30",
                "source.to_date": "2024-01-06",
                "mixpanel.api_host": mp_url,
                "mixpanel.timezone": TIMEZONE,
                "amplitude.output_dir": str(out),
                "run.workdir": str(tmp_path / "work"),
            },
            env={"MIXPANEL_SECRET": "emulator-secret"},
        )
        overrides = {"per_hour": 10_000, "per_second": 100}
        result = migrate(cfg, mixpanel_overrides=overrides)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        rows = {w.window: w for w in result.windows}
        first = date(2023, 12, 30)
        assert list(rows) == [f"export:{first + timedelta(days=d)}" for d in range(8)]
        for day in (
            "export:2023-12-30",
            "export:2023-12-31",
            "export:2024-01-05",
            "export:2024-01-06",
        ):
            assert rows[day].state == "loaded" and rows[day].read == 0 and rows[day].balanced
        _assert_import_complete(out, project.expected, "mp2amp-a1-")
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        again = migrate(cfg, resume=True, mixpanel_overrides=overrides)
        assert again.exit_code == EXIT_OK
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_empty_input_files_are_windows_that_add_up(project: Project, tmp_path: Path) -> None:
    events = tmp_path / "events"
    shutil.copytree(project.events, events)
    (events / "2024-01-04.jsonl.gz").write_bytes(gzip.compress(b""))
    (events / "2024-01-05.jsonl").write_bytes(b"")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(str(events / "*"), tmp_path / "work", url)
        result = migrate(cfg, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        empty = [w for w in result.windows if w.read == 0]
        assert len(empty) == 2
        assert all(w.state == "loaded" and w.batches == 0 and w.balanced for w in empty)
        assert_exactly_once(url, project.expected)


# --- two runs on one work folder --------------------------------------------------------


def test_two_migrates_on_one_work_folder(project: Project, tmp_path: Path) -> None:
    """Started together on a new folder: one runs, the other stops at once (exit 2) naming
    it; a third with --resume while the first runs is refused the same way."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=80) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url)
        a = _start("migrate", "-c", str(cfg), "--quiet", "--json")
        b = _start("migrate", "-c", str(cfg), "--quiet", "--json")
        _wait_for(lambda: running_pid(work) is not None or a.poll() is not None)
        c = _run("migrate", "-c", str(cfg), "--quiet", "--resume")
        outs = {p.pid: (p, *p.communicate(timeout=120)) for p in (a, b)}
        codes = sorted(p.returncode for p, _, _ in outs.values())
        assert codes == [0, 2], [err[-1000:] for _, _, err in outs.values()]
        winner = next(p for p, _, _ in outs.values() if p.returncode == 0)
        loser_err = next(err for p, _, err in outs.values() if p.returncode == 2)
        busy = f"another `mp2amp migrate` (pid {winner.pid}) is running in {work}"
        assert busy in loser_err or "already holds a migration" in loser_err, loser_err
        assert "Traceback" not in loser_err
        if c.returncode != 0:  # it came while the winner ran (else it resumed a finished run)
            assert c.returncode == 2 and busy in c.stderr, c.stderr
        assert orjson.loads(outs[winner.pid][1])["totals"]["balanced"]
        assert_exactly_once(url, project.expected)
        seen = _status(cfg)
        assert seen["complete"] and seen["running_pid"] is None


# --- configuration changed between a run and its resume ---------------------------------


def test_resume_refuses_a_changed_concurrency_and_allows_speed_settings(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with amplitude(tmp_path / "amp") as url:
        work = tmp_path / "work"
        cfg = make_config(project.events, work, url, **{"run.concurrency": 4})
        run_until_crash(cfg, monkeypatch, 3)
        changed = make_config(project.events, work, url, **{"run.concurrency": 2})
        with pytest.raises(TerminalError) as refused:
            migrate(changed, resume=True, upload_overrides=FAST)
        message = str(refused.value)
        assert "(concurrency; was " in message and "resume with the original settings" in message
        assert API_KEY not in message
        faster = make_config(
            project.events,
            work,
            url,
            **{"run.concurrency": 4, "run.transform_workers": 0, "run.memory_budget": 5000},
        )
        result = migrate(faster, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, project.expected)


# --- inputs that change between a run and its resume ------------------------------------


def test_an_input_appended_to_after_it_was_staged_is_named_on_resume(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events"
    shutil.copytree(project.events, events)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(str(events), work, url, **{"run.concurrency": 4})
        run_until_crash(cfg, monkeypatch, 3)  # every window is staged by then
        last = sorted(events.iterdir())[-1]
        lines = gzip.decompress(last.read_bytes()).splitlines(keepends=True)
        late = []
        for n, line in enumerate(lines[:5]):
            record = orjson.loads(line)
            record["properties"]["$insert_id"] = f"late-arrival-{n}"
            record["properties"]["time"] = int(record["properties"]["time"]) + 1
            late.append(orjson.dumps(record) + b"\n")
        last.write_bytes(gzip.compress(b"".join(lines + late)))
        toml = write_toml(tmp_path / "mp2amp.toml", events, work, url, concurrency=4)
        proc = _run("migrate", "-c", str(toml), "--quiet", "--resume")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert_exactly_once(url, project.expected)  # the late records were never read
        assert last.name in proc.stderr, (
            f"the resume said nothing of {last.name}, which changed since it was staged: "
            f"{proc.stderr!r}"
        )


# --- sources ------------------------------------------------------------------------------


def test_export_days_and_files_in_one_config_are_refused_before_any_work(
    project: Project, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(
        f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{project.events}"]\n'
        'from_date = "2024-01-01"\nto_date = "2024-01-03"\n'
        f'[amplitude]\noutput_dir = "{tmp_path / "out"}"\n[run]\nworkdir = "{work}"\n'
    )
    proc = _run("migrate", "-c", str(cfg), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "files: give files or from_date/to_date (the Export API), not both" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not work.exists() and not (tmp_path / "out").exists()


# --- the log's last line ------------------------------------------------------------------


def test_the_last_log_line_of_an_import_file_run_has_a_rate(
    project: Project, tmp_path: Path
) -> None:
    cfg = _sink_toml(
        tmp_path / "mp2amp.toml", str(project.events / "*"), tmp_path / "work", tmp_path / "out"
    )
    proc = _run("migrate", "-c", str(cfg))  # stderr is a pipe: the plain log lines
    assert proc.returncode == 0, proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.startswith("mp2amp: t=")][-1]
    assert f" sent={len(project.expected)} " in last, last
    rate = int(re.search(r" rate=(\d+)/s ", last).group(1))  # type: ignore[union-attr]
    assert rate > 0, last
