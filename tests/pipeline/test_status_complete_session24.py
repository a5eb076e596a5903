"""``status`` says ``complete`` only once the run is over (session 24).

Found by a soak polling ``mp2amp status --json`` every 15 ms: ``complete: true`` came with
``running_pid`` set and ``last_attempt.outcome == "running"`` for 15-40 ms. The last
window is marked loaded before the run writes its dead-letter file and records its end,
and ``complete`` was only "every window loaded, nothing parked": a script polling for it
went on before ``dead-letters.jsonl`` existed, and before the run's own end (which can
still be a stop, exit 2: a full disk while writing the dead letters). Now ``complete``
also needs no run holding the folder and a last run that was not killed before its end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import FAST, amplitude, make_config, small_events
from typer.testing import CliRunner

import mp2amp.pipeline.migrate as migrate_mod
from mp2amp.cli import app
from mp2amp.ledger import Ledger
from mp2amp.pipeline.attempts import LAST_ATTEMPT
from mp2amp.pipeline.status import status


def test_not_complete_while_the_run_still_writes_its_dead_letters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = small_events(tmp_path)
    work = tmp_path / "work"
    seen: list[dict[str, Any]] = []
    real = migrate_mod.write_dead_letters

    def spy(ledger: Any, workdir: Any) -> Any:  # the run's last step before its end
        seen.append(status(work).as_dict())  # what a concurrent `status --json` reads
        return real(ledger, workdir)

    monkeypatch.setattr(migrate_mod, "write_dead_letters", spy)
    with amplitude(tmp_path / "amp") as url:
        result = migrate_mod.migrate(make_config(events, work, url), upload_overrides=dict(FAST))
    assert result.exit_code == 0 and seen
    mid = seen[-1]
    assert mid["states"] == {"loaded": 2}  # every window loaded...
    assert mid["running_pid"] is not None and mid["last_attempt"]["outcome"] == "running"
    assert mid["complete"] is False  # ...but the run is not over
    after = status(work).as_dict()
    assert after["complete"] is True and after["running_pid"] is None
    assert after["last_attempt"]["outcome"] == "finished"


def test_a_run_killed_after_its_last_window_is_not_complete_until_resumed(
        tmp_path: Path) -> None:
    events = small_events(tmp_path)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        assert migrate_mod.migrate(config, upload_overrides=dict(FAST)).exit_code == 0
        # as kill -9 leaves it between the last window and the run's end: its start only
        ledger = Ledger(work / "ledger.sqlite")
        ledger.set_meta(LAST_ATTEMPT, orjson.dumps(
            {"started": 1.0, "ended": None, "outcome": "running", "exit_code": None,
             "message": None}).decode())
        ledger.close()
        killed = status(work)
        assert killed.loaded and killed.running_pid is None
        assert killed.complete is False  # --resume writes what the run left
        # the title says so, not "parked events wait" (second review: no event is parked)
        shown = CliRunner().invoke(app, ["status", "--workdir", str(work)])
        assert shown.exit_code == 0
        title = " ".join(shown.stdout.split())
        assert "loaded; the last run was killed before its end: run `mp2amp migrate " \
               "--resume` to finish it" in title and "daily quota" not in title
        assert migrate_mod.migrate(config, resume=True,
                                   upload_overrides=dict(FAST)).exit_code == 0
        assert status(work).complete is True
        shown = CliRunner().invoke(app, ["status", "--workdir", str(work)])
        assert "complete" in shown.stdout and "killed before" not in shown.stdout
