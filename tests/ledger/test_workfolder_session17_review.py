"""Session 17 review: the ledger and the work folder over time (older work folders, a
damaged ledger, locks, concurrent commands, a work folder moved or copied).

The tests under "defects" pinned defects the review found (each asserts the behaviour
README promises; fixed since). Migrations run ``mp2amp migrate`` through the CLI over real
loopback sockets against the in-process Amplitude emulator.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import amplitude_emulator, cli_workspace

KEY = "workfolder-session17-review-key"


def day_lines(n: int, day: int = 1, start: int = 0) -> str:
    base = 1709251200 + (day - 1) * 86400  # 2024-03-01T00:00:00Z
    rows = [{"event": "Page View",
             "properties": {"time": base + i * 60, "distinct_id": f"user-{i % 5:03d}",
                            "$device_id": f"dev-{i % 5:03d}",
                            "$insert_id": f"d{day}-{i:05d}"}} for i in range(start, start + n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def project(root: Path, monkeypatch: pytest.MonkeyPatch, url: str, days: int = 3,
            n: int = 20) -> Path:
    """A project folder: ``in/`` with ``days`` day files of ``n`` events, a config."""
    root.mkdir(parents=True, exist_ok=True)
    cli_workspace(monkeypatch, root, KEY)
    (root / "in").mkdir()
    for d in range(1, days + 1):
        (root / "in" / f"2024-03-0{d}.jsonl").write_text(day_lines(n, d))
    (root / "mp2amp.toml").write_text(
        f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["in"]\n'
        f'[amplitude]\napi_host = "{url}"\n')
    return root


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=30) as resp:
        return dict(orjson.loads(resp.read()))


def stopped_before_any_batch(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run stopped after every window was staged, before any batch was accepted (the
    key Amplitude refuses at its first answer: exit 2, the run unbound, correctable);
    the right key is set again. Returns the work folder."""
    monkeypatch.setenv("AMPLITUDE_API_KEY", "not-the-project-key")
    run = invoke("migrate", "--quiet")
    assert run.exit_code == 2 and "refused the API key" in run.stderr, run.stderr
    monkeypatch.setenv("AMPLITUDE_API_KEY", KEY)
    return root / ".mp2amp"


def no_traceback(run: Any) -> None:
    assert run.exception is None or isinstance(run.exception, SystemExit), repr(run.exception)


# --- a work folder moved to another disk, a path with spaces and non-ASCII ----------------


def test_a_partial_run_moved_to_a_path_with_spaces_and_accents_resumes_from_there_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: "A work folder moved elsewhere (to a bigger disk) resumes from its own
    staged files once [run] workdir (or --workdir) points at it." The ledger records
    absolute staged paths: after the move none of them may point at the old place."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        work = stopped_before_any_batch(root, monkeypatch)
        moved = tmp_path / "bigger disk" / "migración #2"
        moved.parent.mkdir()
        shutil.move(str(work), str(moved))
        run = invoke("migrate", "--quiet", "--json", "--resume", "--workdir", str(moved))
        no_traceback(run)
        assert run.exit_code == 0, run.stderr
        got = stats(url)
        assert got["events_stored"] == 60 and got["duplicates_ignored"] == 0, got
        with sqlite3.connect(moved / "ledger.sqlite") as db:
            paths = [r[0] for r in db.execute("SELECT staged_path FROM windows")]
        assert paths and all(p.startswith(str(moved)) for p in paths), paths
        status = invoke("status", "--json", "--workdir", str(moved))
        assert status.exit_code == 0 and orjson.loads(status.stdout)["complete"] is True


# --- defects ------------------------------------------------------------------------------


def test_resume_on_an_empty_ledger_file_is_refused_not_restarted_from_zero(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        first = invoke("migrate", "--quiet")
        assert first.exit_code == 0, first.stderr
        before = stats(url)["requests"]
        (root / ".mp2amp" / "ledger.sqlite").write_bytes(b"")
        run = invoke("migrate", "--quiet", "--resume")
        no_traceback(run)
        after = stats(url)["requests"]
        assert after == before, f"the resume sent the migration again: {before} -> {after}"
        assert run.exit_code == 2, run.stdout[-400:]
        assert "ledger" in run.stderr


def test_a_staged_copy_cut_mid_line_is_named_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README (check): "a staged copy that lost records after staging (a work folder copied
    by a copy that stopped short, say) fails the run with both numbers". A copy that stops
    short cuts a line in two; cut at a line end, the run says so (exit 1, both numbers)."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        work = stopped_before_any_batch(root, monkeypatch)
        copy = tmp_path / "copy"
        shutil.copytree(work, copy)
        staged = sorted((copy / "staged").iterdir())[1]
        data = staged.read_bytes()
        staged.write_bytes(data[:-40])  # the last line cut in two
        run = invoke("migrate", "--quiet", "--resume", "--workdir", str(copy))
        no_traceback(run)
        assert run.exit_code in (1, 2)
        assert staged.name in run.stderr.replace("\n", "")


@pytest.mark.parametrize("command", ["status", "resume"])
def test_a_truncated_ledger_is_named_damaged_as_readme_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """README (status): exit 2 when "its ledger is damaged (`the ledger ... is damaged
    (database disk image is malformed): ...`, also from `migrate --resume`, never a
    traceback)". A ledger cut to half its size (a copy that stopped short) is damaged."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        stopped_before_any_batch(root, monkeypatch)
        ledger = root / ".mp2amp" / "ledger.sqlite"
        with open(ledger, "r+b") as f:
            f.truncate(ledger.stat().st_size // 2)
        run = invoke("status") if command == "status" else invoke("migrate", "--quiet",
                                                                   "--resume")
        no_traceback(run)
        assert run.exit_code == 2
        message = " ".join(run.stderr.split())
        assert "is damaged (database disk image is malformed)" in message, message
        assert stats(url)["events_stored"] == 0


def test_a_ledger_locked_by_another_process_does_not_advise_moving_it_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        stopped_before_any_batch(root, monkeypatch)
        ledger = root / ".mp2amp" / "ledger.sqlite"
        connect = sqlite3.connect

        def quick(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
            if str(database).endswith("ledger.sqlite"):  # SQLite's busy wait: 0.2 s, not 5
                kwargs["timeout"] = 0.2
            return connect(database, *args, **kwargs)

        monkeypatch.setattr(sqlite3, "connect", quick)
        other = connect(ledger, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # e.g. `sqlite3 ledger.sqlite` with a write open
        try:
            run = invoke("migrate", "--quiet", "--resume")
        finally:
            other.execute("ROLLBACK")
            other.close()
        no_traceback(run)
        assert run.exit_code == 2
        message = " ".join(run.stderr.split())
        assert "locked" in message, message
        assert "move it away" not in message and "start a new run" not in message, message
        assert "--resume" in message, message


def stale_index_page(ledger: Path, index: str) -> None:
    """Write ``index``'s root page back as it was before its first row (an empty leaf of an
    index b-tree): the page is well formed but misses the table's rows, as a page left
    from an earlier moment (a torn copy of a running work folder) does."""
    db = sqlite3.connect(ledger)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                          (index,)).fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    empty = bytes([0x0A, 0, 0, 0, 0]) + (size % 65536).to_bytes(2, "big") + b"\x00"
    with open(ledger, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(empty + b"\x00" * (size - len(empty)))


def test_a_damaged_index_in_the_ledger_is_named_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README (status): a damaged ledger gives `the ledger ... is damaged (database disk
    image is malformed): ...`, "also from `migrate --resume`, never a traceback"."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        work = stopped_before_any_batch(root, monkeypatch)  # its batches stay in flight
        stale_index_page(work / "ledger.sqlite", "batches_by_window")
        run = invoke("migrate", "--quiet", "--resume")
        no_traceback(run)
        assert run.exit_code == 2
        message = " ".join(run.stderr.split())
        assert "is damaged (database disk image is malformed)" in message, message


def test_a_project_id_fixed_after_a_403_resumes_as_the_message_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    data = tmp_path / "mixpanel"
    (data / "events").mkdir(parents=True)
    (data / "events" / "2024-03-01.jsonl").write_text(day_lines(20, 1))
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, project_id=1234,
                                          service_account="svc:secret",
                                          export_per_hour=None, export_per_second=None))
    root = tmp_path / "p"
    root.mkdir()
    cli_workspace(monkeypatch, root, KEY)
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT", "svc:secret")
    with emu.running() as mp_url, amplitude_emulator(tmp_path / "amp", KEY) as url:
        def config(project_id: int) -> None:
            (root / "mp2amp.toml").write_text(
                f'[mixpanel]\nproject_id = {project_id}\napi_host = "{mp_url}"\n'
                'timezone = "UTC"\n[source]\nfrom_date = "2024-03-01"\n'
                f'to_date = "2024-03-01"\n[amplitude]\napi_host = "{url}"\n')

        config(999)  # another project's id: Mixpanel answers 403
        first = invoke("migrate", "--quiet")
        said = " ".join(first.stderr.split())
        assert first.exit_code == 2 and "403" in said, said
        assert "check that mixpanel.project_id is the project" in said
        assert "then run the same command with --resume" in said
        config(1234)  # fixed, as the message says
        run = invoke("migrate", "--quiet", "--resume")
        no_traceback(run)
        assert run.exit_code == 0, run.stderr
        assert stats(url)["events_stored"] == 20


# --- around the fixes ---------------------------------------------------------------------


def test_resume_on_a_ledger_with_staged_windows_but_no_fingerprint_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run records its windows and its fingerprint in one step: a ledger that lists
    a window staged without one is damaged (a copy made without its -wal file, say), and
    a resume says so rather than start the run from zero. (Windows alone, nothing staged:
    what an older mp2amp left when killed between its two commits; that run resumes, see
    test_resume_session17_third_review.)"""
    from mp2amp.ledger import Ledger

    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        (root / ".mp2amp").mkdir()
        ledger = Ledger(root / ".mp2amp" / "ledger.sqlite")
        ledger.add_windows([("in/2024-03-01.jsonl", "file", {})])
        ledger.mark_extracted("in/2024-03-01.jsonl", str(root / ".mp2amp" / "staged" / "x"), 5)
        ledger.close()
        run = invoke("migrate", "--quiet", "--resume")
        no_traceback(run)
        message = " ".join(run.stderr.split())
        assert run.exit_code == 2, message
        assert "is damaged (it lists windows the run staged or sent, but not the run's " \
            "settings" in message
        assert stats(url)["requests"] == {}


@pytest.mark.parametrize("workers", [0, 1])
def test_a_staged_copy_cut_mid_line_then_deleted_resumes_exactly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """A staged copy cut after the identity pass read it: the next identity pass finds its
    checksum changed (session 19: before the load would find the cut line), moves it
    aside and says to --resume: the window is staged again from its source (in this
    process or in a transform worker)."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        with open(root / "mp2amp.toml", "a") as f:
            f.write(f"[run]\ntransform_workers = {workers}\n")
        work = stopped_before_any_batch(root, monkeypatch)
        staged = sorted((work / "staged").iterdir())[1]
        staged.write_bytes(staged.read_bytes()[:-40])
        run = invoke("migrate", "--quiet", "--resume")
        no_traceback(run)
        message = " ".join(run.stderr.split())
        assert run.exit_code == 2 and f"the staged copy {staged} of " in message
        assert "(its checksum differs)" in message and "with --resume" in message
        assert staged.with_name(staged.name + ".changed").is_file() and not staged.exists()
        again = invoke("migrate", "--quiet", "--resume")
        assert again.exit_code == 0, again.stderr
        got = stats(url)
        # each of the 60 events stored once; batches in flight when the damage stopped the
        # first resume (a worker reads ahead) are sent again and dropped as duplicates
        assert got["events_stored"] == 60, got


def test_a_staged_copy_cut_in_its_identity_view_is_named_by_the_identity_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy cut in the first field of a line (its identity view): the identity pass,
    which reads every staged window first, names the file and the line."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = project(tmp_path / "p", monkeypatch, url)
        work = stopped_before_any_batch(root, monkeypatch)
        staged = sorted((work / "staged").iterdir())[0]
        data = staged.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        staged.write_bytes(data[:last + 5])
        run = invoke("migrate", "--quiet", "--resume")
        no_traceback(run)
        message = " ".join(run.stderr.split())
        assert run.exit_code == 2, message
        assert f"the staged copy {staged} is damaged: line 20 cannot be read" in message
        assert stats(url)["events_stored"] == 0


def test_the_ledger_locked_during_a_step_names_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer holding the ledger as a step is recorded: the lock is named, with what
    to do, not a sqlite3 traceback."""
    from mp2amp.errors import TerminalError
    from mp2amp.ledger import Ledger

    connect = sqlite3.connect

    def quick(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs["timeout"] = 0.1
        conn: sqlite3.Connection = connect(database, *args, **kwargs)
        return conn

    monkeypatch.setattr(sqlite3, "connect", quick)
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    other = connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TerminalError, match=r"is locked .*close that program, then run "
                           r"the same command again"):
            ledger.set_meta("x", "1")
    finally:
        other.execute("ROLLBACK")
        other.close()
        ledger.close()


def test_an_extended_corrupt_code_is_named_damaged(tmp_path: Path) -> None:
    """Python reports SQLite's extended codes (SQLITE_CORRUPT_INDEX: 779): its primary code
    (the low byte) is what names the damage."""
    from mp2amp.errors import TerminalError
    from mp2amp.ledger.sqlite_io import naming_damage

    class Store:
        path = tmp_path / "ledger.sqlite"

        @naming_damage
        def read(self) -> None:
            exc = sqlite3.DatabaseError("database disk image is malformed")
            exc.sqlite_errorcode = 779
            raise exc

        @naming_damage
        def other(self) -> None:
            exc = sqlite3.DatabaseError("something else")
            exc.sqlite_errorcode = 1
            raise exc

    with pytest.raises(TerminalError, match="is damaged \\(database disk image"):
        Store().read()
    with pytest.raises(sqlite3.DatabaseError, match="something else"):
        Store().other()
