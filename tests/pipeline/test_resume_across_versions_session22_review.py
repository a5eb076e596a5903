"""A migration started by the previous release (f4c548d), killed, and resumed by this one:
every insert_id exactly once, balanced counts, the same batches, never a traceback.

A review (session 22) ran 14 such scenarios and found no defect; these four are kept
(killed mid-load; parked by the quota; parked, copies deleted and killed restaging, so the
old one-list ``unstaged_loaded`` is converted; a glob over a Data Pipelines tree). Skipped
only where the clone holds no earlier release (a shallow clone)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    Clock,
    Key,
    Project,
    amplitude,
    assert_exactly_once,
    post_json,
    write_toml,
)

REPO = Path(__file__).resolve().parents[2]
OLD = "f4c548d"

# the old release's CLI, with the uploader's quota wait cut short (park_delay is no config
# key: an hour by default) so that a run parks what the quota refuses and ends (exit 3)
_PRELUDE = """
import sys
from mp2amp.load import settings as _s
_init = _s.UploadSettings.__init__
def _fast(self, *a, **k):
    k.setdefault("park_delay", 0.05)
    k.setdefault("park_retries", 0)
    k.setdefault("backoff_base", 0.01)
    k.setdefault("backoff_cap", 0.05)
    _init(self, *a, **k)
_s.UploadSettings.__init__ = _fast
{extra}
sys.argv[0] = "mp2amp"
from mp2amp.entry import main
main()
"""


@pytest.fixture(scope="session")
def old_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("old_mp2amp")
    got = subprocess.run(["git", "-C", str(REPO), "archive", OLD], capture_output=True)
    if got.returncode != 0:  # a shallow clone holds no earlier release: nothing to resume
        pytest.skip(f"the previous release {OLD} is not in this clone ({got.stderr!r})")
    archive = got.stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root / "src"


def _env(src: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["AMPLITUDE_API_KEY"] = API_KEY
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def old_cmd(old: Path, *args: str, extra: str = "") -> list[str]:
    return [sys.executable, "-c", _PRELUDE.format(extra=extra), *args]


def run_old(old: Path, *args: str, extra: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(old_cmd(old, *args, extra=extra), cwd=cwd, env=_env(old),
                          capture_output=True, text=True, timeout=180)


def run_new(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], cwd=cwd, env=_env(None),
                          capture_output=True, text=True, timeout=180)


STATUS_SEEN: list[dict[str, Any]] = []


def kill_old_when(old: Path, args: list[str], cwd: Path, ready: Callable[[], bool],
                  extra: str = "") -> int:
    """Start the old migrate; kill -9 it once ``ready()``; returns its exit code (or -9)."""
    proc = subprocess.Popen(old_cmd(old, *args, extra=extra), cwd=cwd, env=_env(old),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(30)
        # the current version's status reads the old ledger as the kill left it
        if (cwd / "work" / "ledger.sqlite").exists():
            STATUS_SEEN.append(result_of(run_new("status", "--workdir", str(cwd / "work"),
                                                 "--windows", "--json", cwd=cwd)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def ledger_rows(work: Path, sql: str) -> list[tuple[Any, ...]]:
    path = work / "ledger.sqlite"
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def done_batches(work: Path) -> int:
    rows = ledger_rows(work, "SELECT COUNT(*) FROM batches WHERE state = 'done'")
    return int(rows[0][0]) if rows else 0


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    try:
        return orjson.loads(proc.stdout)
    except orjson.JSONDecodeError:
        raise AssertionError(f"exit {proc.returncode}: {proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-3000:]}") from None


def check_finished(expected: frozenset[Key], url: str, cfg: Path, tmp: Path) -> dict[str, Any]:
    """The current version's status: complete, balanced; the emulator: each id once, the
    ids of the run's own scheme (3: the old release started it)."""
    status = result_of(run_new("status", "-c", str(cfg), "--json", cwd=tmp))
    assert status["complete"], status
    assert status["totals"]["balanced"], status["totals"]
    assert status["totals"]["parked"] == 0, status["totals"]
    assert not status.get("problems"), status["problems"]
    assert status["totals"]["sent"] == len(expected), status["totals"]
    assert status["batches"]["in_flight"] == 0, status["batches"]
    assert_exactly_once(url, expected)
    return status


def test_old_killed_mid_load_resumed_by_new(project: Project, old_src: Path,
                                            scheme_3_expected: frozenset[Key],
                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=150) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=2)
        kill_old_when(old_src, ["migrate", "-c", str(cfg), "--json"], tmp_path,
                      lambda: done_batches(work) >= 3)
        assert done_batches(work) >= 3
        before = dict(ledger_rows(work, "SELECT batch_id, events FROM batches "
                                        "WHERE state = 'done'"))
        post_json(url + "/_emulator/faults", {"latency_ms": 0})
        res = result_of(run_new("migrate", "-c", str(cfg), "--resume", "--json", cwd=tmp_path))
        assert res["exit_code"] == 0, res
        after = dict(ledger_rows(work, "SELECT batch_id, events FROM batches"))
        # the batches the old version cut keep their ids and sizes
        assert {b: after.get(b) for b in before} == before
        check_finished(scheme_3_expected, url, cfg, tmp_path)


def resume_new_until_delivered(cfg: Path, clock: Clock, tmp: Path) -> dict[str, Any]:
    for _ in range(6):
        clock.offset += 25 * 3600  # the quota's 24 hours have passed
        res = result_of(run_new("migrate", "-c", str(cfg), "--resume", "--json", cwd=tmp))
        assert res["exit_code"] in (0, 3), res
        assert res["totals"]["balanced"], res
        if res["exit_code"] == 0:
            return res
    raise AssertionError("parked events never delivered")


def old_run_parking(project: Project, old_src: Path, tmp_path: Path, work: Path,
                    url: str) -> tuple[Path, dict[str, Any]]:
    """The old release's whole run against a quota that parks some events (exit 3)."""
    cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url, concurrency=4)
    first = result_of(run_old(old_src, "migrate", "-c", str(cfg), "--json", cwd=tmp_path))
    assert first["exit_code"] == 3, first
    return cfg, first


def test_old_parked_by_quota_resumed_by_new(project: Project, old_src: Path,
                                            scheme_3_expected: frozenset[Key],
                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    clock = Clock()
    with amplitude(tmp_path / "amp", daily_quota=40, now=clock) as url:
        cfg, first = old_run_parking(project, old_src, tmp_path, work, url)
        assert first["totals"]["parked"] > 0
        old_batches = dict(ledger_rows(work, "SELECT batch_id, events FROM batches"))
        resume_new_until_delivered(cfg, clock, tmp_path)
        assert {b: n for b, n in ledger_rows(work, "SELECT batch_id, events FROM batches")
                if b in old_batches} == old_batches
        check_finished(scheme_3_expected, url, cfg, tmp_path)


# the old release dies (as kill -9 would) right after its n-th ``Ledger.<name>`` call
def _die_after(name: str, n: int) -> str:
    return f"""
import os
from mp2amp.ledger import store as _st
_orig = _st.Ledger.{name}
_calls = []
def _wrapped(self, *a, **k):
    r = _orig(self, *a, **k)
    _calls.append(1)
    if len(_calls) >= {n}:
        os._exit(137)
    return r
_st.Ledger.{name} = _wrapped
"""


def _pipeline_tree(project: Project, root: Path) -> Path:
    """The project's days as a Data Pipelines tree: two part files of alternate lines a day
    (they overlap in time: merged into one staged file), a ``complete`` marker each."""
    from migrate_kit import split_days

    flat = split_days(project.events, root / "flat")
    tree = root / "tree" / "mp_master_event"
    for f in sorted(flat.iterdir()):
        stem = f.name.split(".")[0]  # 2024-01-01-a
        y, m, d, part = stem.split("-")
        day = tree / y / m / d
        day.mkdir(parents=True, exist_ok=True)
        (day / f"part-0000{'ab'.index(part)}.json.gz").write_bytes(f.read_bytes())
        (day / "complete").write_bytes(b"")
    return tree


@pytest.mark.parametrize("glob", ["*/*/*"])
def test_old_glob_over_pipeline_tree_killed_resumed_by_new(
        project: Project, old_src: Path, scheme_3_expected: frozenset[Key], tmp_path: Path,
        glob: str) -> None:
    work = tmp_path / "work"
    tree = _pipeline_tree(project, tmp_path)
    with amplitude(tmp_path / "amp", latency_ms=150) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", f"{tree}/{glob}", work, url, concurrency=2)
        kill_old_when(old_src, ["migrate", "-c", str(cfg), "--json"], tmp_path,
                      lambda: done_batches(work) >= 2)
        assert done_batches(work) >= 2
        windows = ledger_rows(work, "SELECT window_id FROM windows ORDER BY window_id")
        post_json(url + "/_emulator/faults", {"latency_ms": 0})
        # the pipeline goes on writing: the next day's folder, its marker alone so far
        (tree / "2024" / "01" / "09").mkdir(parents=True)
        (tree / "2024" / "01" / "09" / "complete").write_bytes(b"")
        proc = run_new("migrate", "-c", str(cfg), "--resume", "--json", cwd=tmp_path)
        res = result_of(proc)
        assert res["exit_code"] == 0, res
        assert not res.get("inputs_not_in_run"), res.get("inputs_not_in_run")
        assert ledger_rows(work, "SELECT window_id FROM windows ORDER BY window_id") == windows
        check_finished(scheme_3_expected, url, cfg, tmp_path)


def test_old_parked_then_staged_deleted_old_killed_restaging_new_resumes(
        project: Project, old_src: Path, scheme_3_expected: frozenset[Key],
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    clock = Clock()
    with amplitude(tmp_path / "amp", daily_quota=40, now=clock) as url:
        cfg, _ = old_run_parking(project, old_src, tmp_path, work, url)
        for f in (work / "staged").iterdir():
            if f.is_file() and not f.name.startswith("."):
                f.unlink()
        clock.offset += 25 * 3600
        proc = run_old(old_src, "migrate", "-c", str(cfg), "--resume", "--json", cwd=tmp_path,
                       extra=_die_after("mark_extracted", 1))
        assert proc.returncode == 137, proc.stderr[-2000:]
        assert ledger_rows(work, "SELECT value FROM meta WHERE key = 'unstaged_loaded'")
        status = result_of(run_new("status", "-c", str(cfg), "--json", cwd=tmp_path))
        assert not status["complete"]
        resume_new_until_delivered(cfg, clock, tmp_path)
        check_finished(scheme_3_expected, url, cfg, tmp_path)
