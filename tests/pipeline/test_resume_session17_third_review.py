"""Session 17, third review of the ledger and resume fixes (b623724): work folders left by
older mp2amp versions, the new damaged-ledger refusals, staged copies cut mid-line, the
replan of a run that did nothing yet, and the removal of leftover staged files.

The first four tests pinned defects found by this review (fixed): each asserts what the
README promises; the rest cover the fixes' edges. Migrations run against the in-process Amplitude emulator over loopback.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config import load_config
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate
from mp2amp.pipeline.preflight import planned_windows
from shared_kit import amplitude_emulator, cli_workspace, stored_by_source_id

KEY = "resume-session17-third-review-key"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}


def day_lines(n: int, day: int) -> str:
    base = 1709251200 + (day - 1) * 86400  # 2024-03-01T00:00:00Z
    rows = [{"event": "Page View",
             "properties": {"time": base + i * 60, "distinct_id": f"user-{i % 4}",
                            "$device_id": f"dev-{i % 4}", "$insert_id": f"d{day}-{i:04d}"}}
            for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def inputs(root: Path, days: int = 2, n: int = 10) -> Path:
    folder = root / "in"
    folder.mkdir(parents=True)
    for d in range(1, days + 1):
        (folder / f"2024-03-0{d}.jsonl").write_text(day_lines(n, d))
    return folder


def config(events: Path, work: Path, url: str) -> Any:
    return load_config(None, {"source.files": [str(events)], "amplitude.api_host": url,
                              "run.workdir": str(work), "mixpanel.timezone": "UTC"},
                       env={"AMPLITUDE_API_KEY": KEY})


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=30) as resp:
        return dict(orjson.loads(resp.read()))


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def cli_project(root: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> Path:
    root.mkdir(parents=True)
    cli_workspace(monkeypatch, root, KEY)
    inputs(root)
    (root / "mp2amp.toml").write_text(
        f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["in"]\n'
        f'[amplitude]\napi_host = "{url}"\n')
    return root


# --- a work folder an older mp2amp left --------------------------------------------------


def test_a_run_an_older_mp2amp_left_with_windows_but_no_fingerprint_resumes(
        tmp_path: Path) -> None:
    events = inputs(tmp_path)
    work = tmp_path / "work"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = config(events, work, url)
        # what b623724^ (and every mp2amp before it) did for a new run, killed right
        # after its first step: ledger.add_windows(...) committed, then (never reached)
        # record_fingerprint(...)
        work.mkdir()
        ledger = Ledger(work / "ledger.sqlite")
        ledger.add_windows(planned_windows(cfg, None))
        ledger.close()
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == 0
        got = stored_by_source_id(url)
        assert len(got) == 20 and set(got.values()) == {1}, got


# --- a staged copy cut mid-line ----------------------------------------------------------


def test_a_staged_copy_cut_at_the_tab_of_its_last_line_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = cli_project(tmp_path / "p", monkeypatch, url)
        monkeypatch.setenv("AMPLITUDE_API_KEY", "not-the-project-key")
        first = invoke("migrate", "--quiet")  # every window staged, nothing accepted
        assert first.exit_code == 2 and "refused the API key" in first.stderr, first.stderr
        monkeypatch.setenv("AMPLITUDE_API_KEY", KEY)
        staged = sorted((root / ".mp2amp" / "staged").iterdir())[1]
        data = staged.read_bytes()
        last = data[:-1].rfind(b"\n") + 1
        staged.write_bytes(data[:data.index(b"\t", last)])  # cut where the view ends
        run = invoke("migrate", "--quiet", "--resume")
        assert run.exception is None or isinstance(run.exception, SystemExit), \
            repr(run.exception)
        assert run.exit_code == 2
        assert staged.name in run.stderr.replace("\n", "")
        assert stats(url)["events_stored"] == 0


# --- a run without --resume on a damaged ledger -------------------------------------------


def test_a_run_without_resume_on_an_emptied_ledger_is_refused_not_sent_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = cli_project(tmp_path / "p", monkeypatch, url)
        first = invoke("migrate", "--quiet")
        assert first.exit_code == 0, first.stderr
        before = stats(url)["requests"]
        work = root / ".mp2amp"
        assert any((work / "staged").iterdir())
        (work / "ledger.sqlite").write_bytes(b"")
        for extra in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
            (work / extra).unlink(missing_ok=True)
        run = invoke("migrate", "--quiet")
        assert stats(url)["requests"] == before, "the whole migration was sent again"
        assert run.exit_code == 2, run.stdout[-300:]
        assert "ledger" in run.stderr


# --- the replan of a run that did nothing yet ----------------------------------------------


class Crash(Exception):
    """Stands for kill -9 at the chosen instant."""


def test_a_kill_between_the_replan_and_its_fingerprint_keeps_windows_and_settings_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.pipeline import fingerprint

    first = inputs(tmp_path / "a", days=1)
    second = inputs(tmp_path / "b", days=2)
    (second / "2024-03-01.jsonl").unlink()  # b holds only day 2
    work = tmp_path / "work"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        with monkeypatch.context() as m:  # nothing staged: killed as the first is recorded
            m.setattr(Ledger, "mark_extracted",
                      lambda *a, **k: (_ for _ in ()).throw(Crash("mark_extracted")))
            with pytest.raises(Crash):
                migrate(config(first, work, url), upload_overrides=FAST)
        original = fingerprint.record_fingerprint

        def killed_when_anew(*args: Any, anew: bool = False, **kwargs: Any) -> None:
            if anew:
                raise Crash("record_fingerprint after the replan")
            original(*args, **kwargs)

        with monkeypatch.context() as m:  # resumed under another config, killed mid-replan
            m.setattr(fingerprint, "record_fingerprint", killed_when_anew)
            with pytest.raises(Crash):
                migrate(config(second, work, url), resume=True, upload_overrides=FAST)
        # resumed with the settings the ledger records: it migrates what they name
        result = migrate(config(first, work, url), resume=True, upload_overrides=FAST)
        assert result.exit_code == 0
        got = stored_by_source_id(url)
        assert sorted(got) == [f"d1-{i:04d}" for i in range(10)], sorted(got)


# --- around the fixes ---------------------------------------------------------------------


def test_a_staged_row_cut_at_its_tab_is_unreadable_in_the_transform_too(
        tmp_path: Path) -> None:
    """The transform's reader (a worker's, or this process's) checks a row's shape before
    taking it apart: a whole view where a row was due names the staged file."""
    from types import SimpleNamespace

    from mp2amp.errors import TerminalError
    from mp2amp.pipeline.transform_worker import transform_range

    staged = tmp_path / "w-0123456789.jsonl"
    staged.write_bytes(b'{"a":1,"b":2,"c":3,"d":4,"e":5}\n')  # 5 keys: would unpack
    state: Any = (SimpleNamespace(resolve=lambda p: p),
                  SimpleNamespace(event=lambda r, i: r, raw_ms=0))
    with pytest.raises(TerminalError, match=staged.name):
        transform_range(str(staged), 0, staged.stat().st_size, state)


def test_a_run_without_resume_on_a_ledger_with_no_settings_beside_staged_copies_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger with its tables but no run recorded, in a work folder holding staged
    copies: refused (nothing removed), not started from zero."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = cli_project(tmp_path / "p", monkeypatch, url)
        work = root / ".mp2amp"
        (work / "staged").mkdir(parents=True)
        kept = work / "staged" / "in-2024-03-01.jsonl-0123456789.jsonl"
        kept.write_text("")
        Ledger(work / "ledger.sqlite").close()
        run = invoke("migrate", "--quiet")
        assert run.exit_code == 2, run.stdout[-300:]
        assert "records no run" in " ".join(run.stderr.split())
        assert kept.exists() and stats(url)["requests"] == {}


def test_a_run_without_resume_on_an_emptied_ledger_in_an_unused_folder_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty ledger.sqlite with nothing of a run beside it (killed as it was created)
    is a new run."""
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        root = cli_project(tmp_path / "p", monkeypatch, url)
        (root / ".mp2amp").mkdir()
        (root / ".mp2amp" / "ledger.sqlite").write_bytes(b"")
        run = invoke("migrate", "--quiet")
        assert run.exit_code == 0, run.stderr
        assert stats(url)["events_stored"] == 20


def test_a_replan_removes_the_downloads_of_days_no_window_plans(tmp_path: Path) -> None:
    from mp2amp.ledger.store import WindowRow
    from mp2amp.pipeline.run_start import drop_unplanned_downloads

    downloads = tmp_path / "export" / "export"
    downloads.mkdir(parents=True)
    names = ["2024-03-01.jsonl", "2024-03-01.meta.json", "2024-03-02.jsonl.part",
             "2024-03-03..2024-03-04.jsonl", "2024-03-05.jsonl", "notes.txt"]
    for name in names:
        (downloads / name).write_text("x")
    rows = [WindowRow("export:2024-03-03..2024-03-04", 0, "export",
                      {"day": "2024-03-03", "last": "2024-03-04"}, "pending", None, 0, {}),
            WindowRow("export:2024-03-05", 1, "export", {"day": "2024-03-05"}, "pending",
                      None, 0, {})]
    drop_unplanned_downloads(downloads, rows)
    assert sorted(p.name for p in downloads.iterdir()) == [
        "2024-03-03..2024-03-04.jsonl", "2024-03-05.jsonl", "notes.txt"]
