"""A staged copy changed after staging whose source is gone too: nothing is deleted, the
resume names the missing source, and restoring it finishes the run with each event once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from migrate_kit import (
    Project,
    amplitude,
    assert_exactly_once,
    copy_events,
    make_config,
    run_until_crash,
)

from mp2amp.errors import Mp2AmpError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, migrate


def test_a_changed_copy_with_its_source_gone_loses_nothing(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = copy_events(project, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, work, url)
        run_until_crash(cfg, monkeypatch, 2)
        ledger = Ledger(work / "ledger.sqlite")
        last = ledger.windows()[-1]
        ledger.close()
        staged = Path(str(last.staged_path))
        whole = staged.read_bytes()
        staged.write_bytes(b"".join(whole.splitlines(keepends=True)[:-3]))
        source = Path(last.window_id)
        shutil.move(source, tmp_path / "kept-aside")  # the source is gone too
        with pytest.raises(TerminalError, match=r"moved to .*\.changed beside it"):
            migrate(cfg, resume=True)
        assert (staged.parent / (staged.name + ".changed")).is_file()
        with pytest.raises(Mp2AmpError, match=source.name):  # names what to restore
            migrate(cfg, resume=True)
        shutil.move(tmp_path / "kept-aside", source)
        result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, project.expected)
