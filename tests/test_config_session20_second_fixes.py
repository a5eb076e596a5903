"""Fixes of the second config review (tests/test_config_session20_second_review.py): a
list's later item named by its own index, blank path options refused on every command,
secrets written under their environment variable's name (or in capitals) pointed to the
environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from config_kit import problems
from mp2amp.cli import app

BLANK = ("{}: must be a path, got a blank value {!r} (an unset variable?), which would be "
         "the current folder; give the path (\".\" for the current folder) or leave the "
         "option out")
# required path options: a blank one is not advised to be left out
REQUIRED = {("generate", "--out"), ("emulate mixpanel", "--data")}
LOCATION = "must be a path or URL, got a string {!r}; write \".\" for the config file's own folder"



def test_every_failing_item_is_named_by_its_index_as_written(tmp_path: Path) -> None:
    assert problems(tmp_path, '[source]\nfiles = [1, "", 2, " ", "a"]\n') == [
        "source.files[0]: must be a string, got an integer 1",
        "source.files[2]: must be a string, got an integer 2",
        f"source.files[1]: {LOCATION.format('')}",
        f"source.files[3]: {LOCATION.format(' ')}",
    ]


# --- blank path options ------------------------------------------------------------------


def _path_options() -> list[tuple[list[str], str]]:
    """(command words, option) of every path-typed option of every command: a new one is
    tested without being listed here."""
    found: list[tuple[list[str], str]] = []

    def walk(group: Any, ctx: Any, words: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if hasattr(command, "list_commands"):
                walk(command, command.make_context(name, [], parent=ctx,
                                                   resilient_parsing=True), [*words, name])
                continue
            found.extend(([*words, name], next(o for o in p.opts if o.startswith("--")))
                         for p in command.params
                         if p.type_descriptor.annotation is Path and p.param_type_name == "option")

    root = typer.main.get_command(app)
    walk(root, root.make_context("mp2amp", ["status"], resilient_parsing=True), [])
    return found


def test_the_path_options_are_the_known_ones() -> None:
    assert {(" ".join(words), option) for words, option in _path_options()} == {
        ("migrate", "--config"), ("migrate", "--workdir"), ("status", "--config"),
        ("status", "--workdir"), ("transform", "--config"), ("transform", "--out"),
        ("transform", "--rejects"), ("transform", "--plan"), ("demo", "--workdir"),
        ("generate", "--out"), ("emulate amplitude", "--data"), ("emulate mixpanel", "--data")}


@pytest.mark.parametrize("words,option", _path_options(),
                         ids=lambda v: v if isinstance(v, str) else " ".join(v))
@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_path_option_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, words: list[str], option: str,
        blank: str) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, [*words, option, blank], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    expected = BLANK.format(option, blank)
    if (" ".join(words), option) in REQUIRED:  # not advised to be left out
        expected = expected.removesuffix(" or leave the option out")
    assert res.stderr.splitlines()[1:] == [f"  - {expected}"], res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_the_json_object_is_a_config_errors(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["migrate", "--workdir=", "-c", " ",
                                   "--json", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 2
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2 and doc["error"]["type"] == "ConfigError"
    assert doc["error"]["kind"] == "terminal"
    # both at once, in the command's order of options
    assert doc["error"]["problems"] == [BLANK.format("--config", " "),
                                        BLANK.format("--workdir", "")]


def test_transform_without_out_prints_the_json_object_on_stderr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["transform", "--rejects", "", "--json", "x.json"],
                             catch_exceptions=False)
    assert res.exit_code == 2 and res.stdout == ""  # stdout carries the events
    doc = json.loads(res.stderr[res.stderr.index("{"):])
    assert doc["error"]["problems"] == [BLANK.format("--rejects", "")]


def test_a_dot_and_an_option_value_that_looks_like_json_are_not_blank(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # `-c --json`: the config is a file named "--json" (missing), and no JSON is asked
    res = CliRunner().invoke(app, ["status", "-c", "--json", "--workdir", "."],
                             catch_exceptions=False)
    assert "blank" not in res.output and not res.stdout.lstrip().startswith("{")


# --- secrets under their variable's name ------------------------------------------------

SECRET = ("{}: unknown key; secrets are read only from the environment: set {} there and "
          "remove this key from the file")


@pytest.mark.parametrize("text,expected", [
    ('[amplitude]\nAMPLITUDE_API_KEY = "k"\n',
     SECRET.format("amplitude.AMPLITUDE_API_KEY", "AMPLITUDE_API_KEY")),
    ('[amplitude]\namplitude_secret_key = "k"\n',
     SECRET.format("amplitude.amplitude_secret_key", "AMPLITUDE_SECRET_KEY")),
    ('[amplitude]\nAPI_KEY = "k"\n', SECRET.format("amplitude.API_KEY", "AMPLITUDE_API_KEY")),
    ('[mixpanel]\nMIXPANEL_SECRET = "s"\n',
     SECRET.format("mixpanel.MIXPANEL_SECRET", "MIXPANEL_SECRET")),
    ('[mixpanel]\nMIXPANEL_SERVICE_ACCOUNT = "u:s"\n',
     SECRET.format("mixpanel.MIXPANEL_SERVICE_ACCOUNT", "MIXPANEL_SERVICE_ACCOUNT")),
    # the salt may be in the file, under its key's name
    ('[privacy]\nMP2AMP_HASH_SALT = "s"\n',
     "privacy.MP2AMP_HASH_SALT: unknown key; MP2AMP_HASH_SALT is an environment variable: "
     "set it there, or write the key as 'hash_salt' in this file"),
    ('[privacy]\nHASH_SALT = "s"\n', "privacy.HASH_SALT: unknown key; did you mean 'hash_salt'?"),
    ('[amplitude]\nEndpoint = "batch"\n',
     "amplitude.Endpoint: unknown key; did you mean 'endpoint'?"),
    ('[run]\nWORKDIR = "w"\n', "run.WORKDIR: unknown key; did you mean 'workdir'?"),
])
def test_unknown_keys_are_matched_without_case_and_by_variable_name(
        tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]
