"""Review of the blank path option check (commit 2d0fdd4, mp2amp.cli._refuse_blank_paths),
driving the real CLI in a subprocess: it re-parses every command line before the command
runs, so it must not get in the way of valid invocations (--help) or of the JSON object a
--json run promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BLANK = ("{}: must be a path, got a blank value {!r} (an unset variable?), which would be "
         "the current folder; give the path (\".\" for the current folder) or leave the "
         "option out")


def mp2amp(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)


# --- defects ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["migrate", "--workdir", "", "--help"],
                                  ["status", "-c", "", "--help"],
                                  ["emulate", "amplitude", "--data", "", "--help"]],
                         ids=" ".join)
def test_help_is_printed_even_with_a_blank_path_option(tmp_path: Path, args: list[str]) -> None:
    # an invalid value of another kind does not stop --help: `--concurrency abc --help` -> 0
    assert mp2amp(tmp_path, "migrate", "--concurrency", "abc", "--help").returncode == 0
    res = mp2amp(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    assert "Usage:" in res.stdout
    assert list(tmp_path.iterdir()) == []


def test_json_is_honoured_after_an_unknown_option(tmp_path: Path) -> None:
    # without the blank value the same line prints the usage error as JSON on stdout
    plain = mp2amp(tmp_path, "migrate", "--bogus", "--json")
    assert plain.returncode == 2 and json.loads(plain.stdout)["error"]["kind"] == "usage"
    res = mp2amp(tmp_path, "migrate", "--workdir", "", "--bogus", "--json")
    assert res.returncode == 2
    assert res.stdout.strip(), f"no JSON object on stdout; stderr: {res.stderr}"
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2
    # the resilient re-parse stopped at --bogus; the usual usage error should say so
    assert "--bogus" in doc["error"]["message"]


# --- guards of behaviour checked correct ---------------------------------------------------


def test_valid_spellings_are_read_as_click_reads_them(tmp_path: Path) -> None:
    # options after positional arguments, short option: refused, naming the long name
    res = mp2amp(tmp_path, "transform", "a.jsonl", "b.jsonl", "-o", "")
    assert res.returncode == 2 and f"  - {BLANK.format('--out', '')}" in res.stderr
    # a repeated option: the last value wins, so a later real value is not refused
    res = mp2amp(tmp_path, "migrate", "--workdir", "", "--workdir", "w", "-c", "nothere.toml")
    assert res.returncode == 2 and "blank" not in res.stderr and "nothere.toml" in res.stderr
    # "." and blank non-path options are not refused
    res = mp2amp(tmp_path, "emulate", "amplitude", "--data", ".", "--host", "", "--timezone",
                 " ", "--help")
    assert res.returncode == 0 and "Usage:" in res.stdout


def test_the_json_object_of_a_blank_path(tmp_path: Path) -> None:
    res = mp2amp(tmp_path, "status", "-c", " ", "--json")
    assert res.returncode == 2
    assert json.loads(res.stdout) == {"exit_code": 2, "error": {
        "kind": "terminal", "type": "ConfigError",
        "message": "invalid configuration (1 problem(s)); fix them and run again:\n  - "
                   + BLANK.format("--config", " "),
        "problems": [BLANK.format("--config", " ")]}}
