"""``status`` reads ``[run] workdir`` even from a config with other problems, but a
``workdir`` that is itself wrong is reported, not replaced by the default (session 24).

Found by a soak: ``[run] workdir = 5`` beside a problem in another section made ``status``
read the default ``.mp2amp`` beside the config ("no migration in ..."), and a default
folder holding another migration would have been shown instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app

OTHER_PROBLEM = '[privacy]\nhash_properties = ["email"]\n'  # needs a salt: migrate's concern


def _status(cfg: Path) -> tuple[int, dict[str, object]]:
    res = CliRunner().invoke(app, ["status", "-c", str(cfg), "--json"], catch_exceptions=False)
    return res.exit_code, json.loads(res.stdout)


@pytest.mark.parametrize(("value", "said"), [
    ("5", "run.workdir: must be a path (a string), got an integer 5"),
    ('""', "run.workdir: must be a path (a string), got a string ''"),
    ("[]", "run.workdir: must be a path (a string), got a list"),
])
def test_a_wrong_workdir_is_reported_though_other_sections_have_problems(
        tmp_path: Path, value: str, said: str) -> None:
    (tmp_path / ".mp2amp").mkdir()  # a default folder that must not be read instead
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[run]\nworkdir = {value}\n{OTHER_PROBLEM}")
    code, doc = _status(cfg)
    assert code == 2
    error = doc["error"]
    assert isinstance(error, dict) and any(said in p for p in error["problems"])


@pytest.mark.parametrize(("text", "said"), [
    ('run = "/x"\n', "run: must be a table ([run] or {...}), got a string '/x'"),
    ('[[run]]\nworkdir = "/x"\n', "run: must be a table ([run] or {...}), got a list"),
    ('[run]\nwork_dir = "/x"\n', "run.work_dir: unknown key; did you mean 'workdir'?"),
    # third pass: a misspelt section, or the key at the top
    ('[runs]\nworkdir = "/x"\n', "runs: unknown key; did you mean 'run'?"),
    ('[Run]\nworkdir = "/x"\n', "Run: unknown key; did you mean 'run'?"),
    ('workdir = "/x"\n', "workdir: unknown key (known: amplitude, mixpanel, privacy, run, "
     "source, transform)"),
])
def test_a_wrong_run_section_is_reported_not_replaced_by_the_default(
        tmp_path: Path, text: str, said: str) -> None:
    """Second review: these read the default folder, exit 0, as if no workdir were set."""
    (tmp_path / ".mp2amp").mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + OTHER_PROBLEM)
    code, doc = _status(cfg)
    assert code == 2
    error = doc["error"]
    assert isinstance(error, dict) and any(said in p for p in error["problems"])


def test_another_problem_in_run_keeps_the_default_workdir(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\nconcurrency = "x"\n')  # migrate's concern; no workdir given
    code, doc = _status(cfg)
    assert code == 2
    assert f"no migration in {tmp_path / '.mp2amp'} (no ledger.sqlite)" in \
        str(doc["error"]["message"])  # type: ignore[index]


def test_a_right_workdir_is_still_read_past_other_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nworkdir = "w"\n{OTHER_PROBLEM}')
    code, doc = _status(cfg)
    assert code == 2  # no migration there yet: the message names the folder read
    error = doc["error"]
    assert isinstance(error, dict)
    assert f"no migration in {tmp_path / 'w'} (no ledger.sqlite)" in str(error["message"])


def test_no_workdir_is_the_default_beside_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(OTHER_PROBLEM)
    code, doc = _status(cfg)
    assert code == 2
    assert f"no migration in {tmp_path / '.mp2amp'} (no ledger.sqlite)" in \
        str(doc["error"]["message"])  # type: ignore[index]
