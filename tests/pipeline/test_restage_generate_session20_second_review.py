"""Second review of session 20: a merged copy restored after a resume staged its group's
head again (restage._restored_merges, changed_copy.as_staged/forget_was), and the
cleanup of a move into --out cut short by kill -9 (cli/generate._clear_leftover)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
from migrate_kit import FAST, Crash, Project, amplitude, assert_exactly_once, crash_on_call

from mp2amp.cli.generate import MOVING, PARTIAL
from mp2amp.errors import InputError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from shared_kit import SECRET_ENV

sys.path.insert(0, str(Path(__file__).parent))
from test_restage_session20 import _head_staged_again, _was_rows


def test_kill_after_the_restored_merge_is_recorded_before_the_own_copy_goes(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 after the ledger points the group at the restored copy, before the head's
    copy staged again is removed: the next resume completes, every event once."""
    with amplitude(tmp_path / "amp") as url:
        cfg, merged, backup = _head_staged_again(project, tmp_path, monkeypatch, url)
        merged.write_bytes(backup)
        real = pathlib.Path.unlink

        def unlink(self: Path, missing_ok: bool = False) -> None:
            if self.parent.name == "staged" and self.name.endswith(".jsonl") \
                    and ".merged" not in self.name:
                raise Crash("kill -9 before the own copy is removed")
            real(self, missing_ok=missing_ok)

        monkeypatch.setattr(pathlib.Path, "unlink", unlink)
        with pytest.raises(Crash):
            migrate(cfg, resume=True, upload_overrides=FAST)
        monkeypatch.undo()
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
        assert _was_rows(tmp_path / "work") == {}


def test_restored_copy_used_then_gone_again_and_restored_again(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The restored copy used, the resume killed in its load; the copy deleted again and
    restored again: checked against the right record, used, every event once."""
    with amplitude(tmp_path / "amp") as url:
        cfg, merged, backup = _head_staged_again(project, tmp_path, monkeypatch, url)
        merged.write_bytes(backup)
        crash_on_call(monkeypatch, Ledger, "batch_done", 1)
        with pytest.raises(Crash):
            migrate(cfg, resume=True, upload_overrides=FAST)
        monkeypatch.undo()
        merged.unlink()
        with pytest.raises(InputError, match="restore the file"):
            migrate(cfg, resume=True, upload_overrides=FAST)  # the part file is gone
        merged.write_bytes(backup)
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
        assert _was_rows(tmp_path / "work") == {}


SRC = Path(__file__).resolve().parents[2] / "src"
ARGS = ["--users", "20", "--days", "2", "--seed", "3"]

_KILL_AT = """
import os, shutil, signal, pathlib
_n = [0]
def _tick():
    _n[0] += 1
    if _n[0] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
_rmtree, _unlink, _rename = shutil.rmtree, pathlib.Path.unlink, os.rename
def rmtree(*a, **k):
    _tick(); return _rmtree(*a, **k)
def unlink(self, *a, **k):
    _tick(); return _unlink(self, *a, **k)
def rename(src, dst, *a, **k):
    _rename(src, dst, *a, **k)
    if os.path.basename(os.fspath(dst)) == "project.json" and os.environ.get("KILL_MOVE"):
        os.kill(os.getpid(), signal.SIGKILL)
shutil.rmtree, pathlib.Path.unlink, os.rename = rmtree, unlink, rename
"""


def _env(hook: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *([str(hook)] if hook else []), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _gen(cwd: Path, hook: Path | None = None, *more: str,
         **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", "p", *ARGS,
                           *more], cwd=cwd, env=_env(hook, **extra), capture_output=True,
                          text=True, timeout=120)


def _tree(root: Path) -> dict[str, str]:
    tree = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        tree[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def _hook(tmp_path: Path) -> Path:
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_KILL_AT, encoding="utf-8")
    return tmp_path / "hook"


def _half_moved(tmp_path: Path) -> Path:
    """``p`` as a kill after three of six renames leaves it."""
    proc = _gen(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "p"
    (out / PARTIAL).mkdir()
    for name in ["schema.json", "truth", "project.json"]:
        (out / name).rename(out / PARTIAL / name)
    (out / MOVING).touch()
    return out


@pytest.mark.parametrize("kill_at", [1, 3, 5])
def test_a_kill_during_the_cleanup_is_cleared_by_the_run_after(
        tmp_path: Path, kill_at: int) -> None:
    whole_dir = tmp_path / "whole"
    whole_dir.mkdir()
    assert _gen(whole_dir).returncode == 0
    whole = _tree(whole_dir / "p")
    run = tmp_path / "run"
    run.mkdir()
    out = _half_moved(run)
    proc = _gen(run, _hook(tmp_path), KILL_AT=str(kill_at))
    assert proc.returncode == -9, proc.stderr
    proc = _gen(run)
    assert proc.returncode == 0, proc.stderr
    assert _tree(out) == whole


def test_kill_after_the_remerge_renamed_its_file_before_the_ledger_knew(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merged copy deleted; the resume stages the group again and is killed once the
    merge's file is renamed into place, before the ledger records it: the next resume
    (nothing restored by the user) completes, every event once, nothing kept aside."""
    from migrate_kit import make_config, run_until_crash, split_days
    events = split_days(project.events, tmp_path / "events", slice(2, 3))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        run_until_crash(cfg, monkeypatch, 2)
        ledger = Ledger(work / "ledger.sqlite")
        try:
            heads = set(ledger.merged_into().values())
            (head,) = [w for w in ledger.windows() if w.window_id in heads]
        finally:
            ledger.close()
        Path(str(head.staged_path)).unlink()
        crash_on_call(monkeypatch, Ledger, "restage", 1,
                      when=lambda self, updates, *a, **k: bool(a) or bool(k))
        with pytest.raises(Crash):
            migrate(cfg, resume=True, upload_overrides=FAST)
        monkeypatch.undo()
        assert Path(str(head.staged_path)).is_file()  # the merge's file, unrecorded
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert not list((work / "staged").glob("*.changed*"))
        assert_exactly_once(url, project.expected)


def test_a_work_folder_copied_elsewhere_keeps_the_old_folders_files(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The work folder copied to a bigger disk after the stop, the merged copy restored
    there: the resume from the copy must not delete files of the old folder (the ledger
    still names the head's copy staged again there)."""
    import shutil

    from migrate_kit import make_config
    with amplitude(tmp_path / "amp") as url:
        _, merged, backup = _head_staged_again(project, tmp_path, monkeypatch, url)
        old = tmp_path / "work"
        before = {p.name: p.read_bytes() for p in (old / "staged").iterdir()}
        new = tmp_path / "bigger" / "work"
        shutil.copytree(old, new)
        (new / "staged" / merged.name).write_bytes(backup)  # restored in the copy
        cfg2 = make_config(tmp_path / "events", new, url)
        result = migrate(cfg2, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
        assert {p.name: p.read_bytes() for p in (old / "staged").iterdir()} == before
