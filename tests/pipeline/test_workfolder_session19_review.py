"""Session 19 review of the work folder's safety and the staged copies: the staged/ marker
(stagedfolder.py), the changed-copy guard (restage.stop_on_changed_copy), the work folder
and its lock. Each xfail pins a defect found by running the real migrate against the
local Amplitude emulator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Crash,
    Project,
    amplitude,
    arrival_order,
    assert_exactly_once,
    copy_events,
    crash_at_batch,
    make_config,
    mp2amp,
    run_until_crash,
    write_toml,
)

from mp2amp.config import Config
from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate

ENV = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}


def _last_window_copy(work: Path) -> Path:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        last = ledger.windows()[-1]
        assert last.state != "loaded"
        return Path(str(last.staged_path))
    finally:
        ledger.close()


def _resume_until_crash(cfg: Config, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    crash_at_batch(monkeypatch, n)
    with pytest.raises(Crash):
        migrate(cfg, resume=True, upload_overrides=FAST)
    monkeypatch.undo()


@pytest.mark.parametrize("layout", ["workdir-dot-exports-subfolder", "workdir-is-input-folder"])
def test_inputs_inside_the_work_folder_are_migrated_or_refused(
        project: Project, tmp_path: Path, layout: str) -> None:
    proj = tmp_path / "proj"
    if layout == "workdir-dot-exports-subfolder":
        copy_events(project, proj / "exports")
        files, workdir = "exports", "."
    else:
        copy_events(project, proj)
        files, workdir = ".", "."
    with amplitude(tmp_path / "amp") as url:
        (proj / "mp2amp.toml").write_text(
            f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{files}"]\n'
            f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{workdir}"\n')
        run = mp2amp("migrate", "--json", cwd=proj, env=ENV, check=False)
        if run.returncode == 0:  # it says done: then every event must be there, once
            assert_exactly_once(url, project.expected)
        else:  # or it refuses up front, naming the problem, with nothing sent
            assert run.returncode == 2, run.stderr
            assert not list(arrival_order(tmp_path / "amp"))


def test_a_resume_leaves_files_in_staged_that_no_window_could_have_left(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        run_until_crash(cfg, monkeypatch, 2)
        staged = work / "staged"
        (staged / ".stage-backup").mkdir()  # not mkdtemp's shape: stagedfolder calls it foreign
        (staged / ".stage-backup" / "keep.txt").write_text("mine")
        (staged / "dump.json.part").write_text("mine")  # the module's own example
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
    # README: "other files there are left alone"
    assert (staged / ".stage-backup" / "keep.txt").read_text() == "mine"
    assert (staged / "dump.json.part").read_text() == "mine"


def test_a_new_run_in_a_home_like_workdir_keeps_the_users_scratch_folder(
        project: Project, tmp_path: Path) -> None:
    home = tmp_path / "home"
    mine = home / "scratch" / "run-2023-benchmarks" / "results.csv"
    mine.parent.mkdir(parents=True)
    mine.write_text("a,b\n1,2\n")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, home, url)
        try:
            result = migrate(cfg, upload_overrides=FAST)
        except TerminalError as stop:  # refusing, naming the folder, would be fine too
            assert "scratch" in str(stop)
        else:
            assert result.exit_code == EXIT_OK
            assert_exactly_once(url, project.expected)
    assert mine.read_text() == "a,b\n1,2\n"


def test_a_new_run_in_a_home_like_workdir_keeps_the_users_dead_letters_file(
        project: Project, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    mine = home / "dead-letters.jsonl"
    mine.write_text('{"from": "my other pipeline"}\n')
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, home, url)
        try:
            migrate(cfg, upload_overrides=FAST)
        except TerminalError as stop:  # refusing, naming the file, would be fine too
            assert "dead-letters.jsonl" in str(stop)
    assert mine.read_text() == '{"from": "my other pipeline"}\n'


def test_a_copy_with_one_line_edited_in_place_is_not_sent_edited(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        run_until_crash(cfg, monkeypatch, 2)
        copy = _last_window_copy(work)
        lines = copy.read_bytes().splitlines(keepends=True)
        i = next(n for n, line in enumerate(lines) if b'"$city":"' in line.split(b"\t", 1)[1])
        prefix, record = lines[i].split(b"\t", 1)
        lines[i] = prefix + b"\t" + record.replace(b'"$city":"', b'"$city":"EDITED-', 1)
        copy.write_bytes(b"".join(lines))  # as many lines as were staged
        try:
            migrate(cfg, resume=True, upload_overrides=FAST)
        except TerminalError:  # found before sending (moved aside): the next resume restages
            assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == EXIT_OK
        edited = [e for e in arrival_order(tmp_path / "amp") if "EDITED-" in str(e)]
        assert edited == [], f"sent with content the source never had: {edited[:1]}"
        assert_exactly_once(url, project.expected)


def test_a_copy_changed_twice_keeps_both_changed_files(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        toml = write_toml(tmp_path / "mp2amp.toml", events, work, url,
                          concurrency=cfg.run.concurrency)  # as the run started
        run_until_crash(cfg, monkeypatch, 2)
        copy = _last_window_copy(work)
        whole = copy.read_bytes()
        lines = whole.splitlines(keepends=True)
        first = b"".join(lines[:-3])
        copy.write_bytes(first)  # cut short by a copy tool
        stop = mp2amp("migrate", "-c", str(toml), "--resume", env=ENV, check=False)
        assert stop.returncode == 2, stop.stderr
        assert "lines, but" in stop.stderr and ".changed beside it" in stop.stderr
        aside = copy.with_name(copy.name + ".changed")
        assert aside.read_bytes() == first
        status = mp2amp("status", "--workdir", str(work), env=ENV, check=False)
        assert "stopped (exit 2)" in status.stdout and ".changed" in status.stdout
        _resume_until_crash(cfg, monkeypatch, 1)  # staged again, then stopped again
        assert copy.read_bytes() == whole
        copy.write_bytes(whole + lines[0])  # changed again: a line gained
        stop = mp2amp("migrate", "-c", str(toml), "--resume", env=ENV, check=False)
        assert stop.returncode == 2, stop.stderr
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
    kept = [p.read_bytes() for p in copy.parent.iterdir() if p.is_file()]
    assert first in kept, "the first changed copy was overwritten"
    assert whole + lines[0] in kept


def test_a_second_migrate_while_one_holds_the_work_folder_is_refused_and_nothing_doubles(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard: the lock refuses a second migrate (exit 2) while another holds the folder."""
    from mp2amp.pipeline.worklock import WorkLock

    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        toml = write_toml(tmp_path / "mp2amp.toml", project.events, work, url,
                          concurrency=cfg.run.concurrency)
        run_until_crash(cfg, monkeypatch, 2)
        held = WorkLock(work)  # another migrate, running
        try:
            second = mp2amp("migrate", "-c", str(toml), "--resume", env=ENV, check=False)
            assert second.returncode == 2
            assert f"another `mp2amp migrate` (pid {os.getpid()}) is running" in second.stderr
            shown = mp2amp("status", "--workdir", str(work), env=ENV, check=False)
            assert shown.returncode == 0
        finally:
            held.release()
        assert migrate(cfg, resume=True, upload_overrides=FAST).exit_code == EXIT_OK
        assert_exactly_once(url, project.expected)
