"""What the fixes of the second session 18 review of ``mp2amp demo`` check beyond its pinned
tests: SIGTERM anywhere in the demo (and migrate's handler giving the demo's back), a
second stop while a folder is removed, and how the demo rewrites migrate's and the
read-back's hints (401/403, a full disk, an unwritable folder, segmentation's budget)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import mp2amp.pipeline.demo as demo
from mp2amp.errors import InputError
from mp2amp.pipeline import stopping
from mp2amp.pipeline.diskspace import storage_error

# --- SIGTERM --------------------------------------------------------------------------------


def _ours(signum: int, frame: Any) -> None:
    raise AssertionError("not expected to run")


def test_migrates_sigterm_handler_gives_the_callers_back() -> None:
    """asyncio leaves SIG_DFL after its handler: the demo's read-back then died silently."""
    before = signal.signal(signal.SIGTERM, _ours)
    try:
        async def nothing() -> int:
            return 1

        assert stopping.run(nothing()) == 1
        assert signal.getsignal(signal.SIGTERM) is _ours
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_during_the_read_back_stops_the_demo_with_143(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = demo.export_counts

    def terminated_then_read(*args: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # as `timeout` does, once migrate is done
        return real(*args)

    monkeypatch.setattr(demo, "export_counts", terminated_then_read)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(demo.DemoInterrupted) as stop:
        demo.run_demo(1_000, tmp_path / "d", fail_rate=0.0, drop_rate=0.0)
    assert stop.value.exit_code == 143
    assert f"mp2amp demo --workdir {tmp_path / 'd'}" in stop.value.hint
    assert signal.getsignal(signal.SIGTERM) is before  # the demo's handler is gone again


# --- stopped again while a folder is removed ---------------------------------------------


def _cut_rmtree(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.rmtree

    def cut(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name.startswith("mp2amp-demo-"):
            next(Path(path).iterdir()).unlink()  # one file gone, then Ctrl-C
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", cut)


def test_ctrl_c_while_a_passing_demo_removes_its_folder_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def passed(root: Path, *args: Any) -> Any:
        (root / "a").write_text("a")
        (root / "b").write_text("b")
        return SimpleNamespace(ok=True, kept=True)

    monkeypatch.setattr(demo, "_run_demo", passed)
    _cut_rmtree(monkeypatch)
    with pytest.raises(demo.DemoInterrupted) as stop:
        demo.run_demo(1_000)
    [left] = list(tmp_path.iterdir())
    assert f"removing its temporary folder {left} was cut short: delete it" in stop.value.hint
    assert "demo OK" in stop.value.hint and stop.value.exit_code == 130


def test_ctrl_c_again_while_a_stopped_demo_removes_its_folder_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def stopped(root: Path, *args: Any) -> Any:
        (root / "a").write_text("a")
        (root / "b").write_text("b")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_run_demo", stopped)
    _cut_rmtree(monkeypatch)
    with pytest.raises(demo.DemoInterrupted) as stop:
        demo.run_demo(1_000)
    [left] = list(tmp_path.iterdir())
    assert stop.value.hint == (f"the demo's temporary folder {left} could not be removed "
                               "entirely: delete it")


def test_no_temporary_folder_to_be_had_is_an_input_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    with pytest.raises(InputError, match="give --workdir a folder"):
        demo.run_demo(1_000)


# --- errors outside migrate ----------------------------------------------------------------


def test_a_system_error_while_generating_in_a_workdir_keeps_it_and_says_how_to_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error", str(config.out / "events"))

    monkeypatch.setattr(demo, "generate_project", broken)
    with pytest.raises(demo.DemoStopped) as stop:
        demo.run_demo(1_000, tmp_path / "d")
    assert str(stop.value) == (
        f"the demo stopped on a system error ({tmp_path}/d/mixpanel-project.partial/events: "
        "Input/output error); once that is fixed, run `mp2amp demo --workdir "
        f"{tmp_path / 'd'}` again, with the same options, to resume")
    assert (tmp_path / "d").is_dir()


# --- migrate's and the read-back's hints, as the demo's ------------------------------------


def _said(message: str, root: Path, kept: str = demo.KEPT) -> str:
    return demo._demo_message(message, root, False, kept)


def test_a_refused_key_names_no_resume_option(tmp_path: Path) -> None:
    from mp2amp.errors import classify_http

    said = _said(str(classify_http(401, service="Amplitude Batch API", body="bad key")),
                 tmp_path)
    assert "--resume" not in said and "mp2amp migrate" not in said, said
    assert f"run `mp2amp demo --workdir {tmp_path}` again, with the same options" in said


def test_a_full_disk_in_migrate_names_the_demos_workdir_option(tmp_path: Path) -> None:
    stop = storage_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "work")
    said = _said(str(stop), tmp_path)
    assert "[run] workdir" not in said and "--resume" not in said, said
    assert (f"free some space, then run `mp2amp demo --workdir {tmp_path}` again, with the "
            f"same options, to resume (or move {tmp_path} to a bigger disk") in said


def test_an_unwritable_work_folder_names_the_demo(tmp_path: Path) -> None:
    ledger = tmp_path / "work" / "ledger.sqlite"
    stop = storage_error(PermissionError(errno.EACCES, "Permission denied", str(ledger)),
                         tmp_path / "work")
    said = _said(str(stop), tmp_path)
    assert "[run] workdir" not in said and "--resume" not in said, said
    assert said.endswith(f"then run `mp2amp demo --workdir {tmp_path}` again, with the same "
                         "options, to resume")


def test_segmentation_over_its_budget_says_when_to_run_the_demo_again(tmp_path: Path) -> None:
    said = _said("the segmentation query over its cost budget (429, 6 attempts); the "
                 "migration itself is done: run the comparison again in about 12 minutes",
                 tmp_path)
    assert said.endswith(f"run `mp2amp demo --workdir {tmp_path}` again in about 12 minutes, "
                         "with the same options, to compare (the migration is not repeated)")


def test_migrates_run_off_the_main_thread_touches_no_handler() -> None:
    """Off the main thread no handler is installed, so none is put back (which would
    raise there)."""
    import threading

    out: list[int] = []

    async def one() -> int:
        return 1

    thread = threading.Thread(target=lambda: out.append(stopping.run(one())))
    thread.start()
    thread.join()
    assert out == [1]
