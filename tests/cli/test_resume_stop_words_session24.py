"""A Ctrl-C as ``migrate --resume`` starts says the earlier runs' progress is kept
(session 24). Found by a soak: it said "nothing was done yet" / "nothing was recorded yet"
over a ledger holding a run's progress (the advice, run the same command again, was right;
the words read as if that progress were gone)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

import mp2amp.cli.migrate as cli_migrate
from mp2amp import entry
from mp2amp.cli import app

RESUME_NEXT = ("this resume had not started yet (the ledger keeps what earlier runs did): "
               "run the same command again")


def test_a_stop_while_a_resume_reads_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_migrate, "load_cli_config", stopped)
    result = CliRunner().invoke(app, ["migrate", "--resume", "--json"])
    assert result.exit_code == 130
    assert result.stderr == f"interrupted; {RESUME_NEXT}\n"
    assert json.loads(result.stdout)["error"]["what_next"] == RESUME_NEXT
    first = CliRunner().invoke(app, ["migrate", "--json"])  # a first run: nothing recorded
    assert first.stderr == "interrupted; nothing was recorded yet: run the same command again\n"


@pytest.mark.parametrize(("args", "said"), [
    (["migrate", "--resume", "--json"], RESUME_NEXT),
    (["migrate", "--json"], "nothing was done yet: run the same command again"),
])
def test_a_stop_while_the_command_loads(capsys: pytest.CaptureFixture[str],
                                        args: list[str], said: str) -> None:
    with pytest.raises(SystemExit) as stop:
        entry._stopped_while_loading(args)
    assert stop.value.code == 130
    out, err = capsys.readouterr()
    assert err == f"interrupted; {said}\n"
    assert json.loads(out)["error"]["what_next"] == said
