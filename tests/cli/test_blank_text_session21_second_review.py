"""Second review of the session-21 fix refusing blank text flags and config keys
(commit d425466), with the fixes of what it found: generate lists a blank option with its
other problems in one report; the mixpanel emulator reads a blank $MIXPANEL_SECRET or
$MIXPANEL_SERVICE_ACCOUNT as unset, as migrate does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from config_kit import MP2AMP, run
from shared_kit import SECRET_ENV

TZ_BLANK = ("--timezone: must be an IANA timezone such as UTC or America/Los_Angeles, got a "
            "blank value '' (an unset variable?); give one, or leave the option out for the "
            "default, America/Los_Angeles")
USERS = "--users must be between 1 and 10,000,000, got 0"
OUT_BLANK = ("--out: must be a path, got a blank value '' (an unset variable?), which would "
             "be the current folder; give the path (\".\" for the current folder)")
HEADER = "invalid configuration{} ({} problem(s)); fix them and run again:"


def report(problems: list[str], source: str = " in mp2amp generate") -> str:
    return "error: " + "\n".join([HEADER.format(source, len(problems)),
                                   *(f"  - {p}" for p in problems)]) + "\n"


def test_generate_lists_a_blank_text_flag_with_its_other_problems(tmp_path: Path) -> None:
    res = run(["generate", "--out", "p", "--timezone", "", "--users", "0",
               "--start", "2024-13-01"], tmp_path)
    # it was reported alone, as if fixing the timezone were all there was to do
    assert (res.returncode, res.stdout) == (2, ""), res.stderr
    assert res.stderr == report([TZ_BLANK, "--start must be a date as YYYY-MM-DD, got "
                                 "'2024-13-01'", USERS])
    assert list(tmp_path.iterdir()) == []


def test_generate_lists_a_blank_out_not_also_as_the_current_folder(tmp_path: Path) -> None:
    # a blank --out is listed once, not also as "--out . exists and is not an empty
    # directory"; a generation's leftover in the current folder is not cleared as --out's
    partial = tmp_path / ".partial"
    partial.mkdir()
    (partial / "schema.json").write_text("{}")
    res = run(["generate", "--out", "", "--timezone", "", "--users", "0"], tmp_path)
    assert (res.returncode, res.stdout) == (2, ""), res.stderr
    assert res.stderr == report([OUT_BLANK, TZ_BLANK, USERS])
    assert [p.name for p in tmp_path.iterdir()] == [".partial"]
    assert [p.name for p in partial.iterdir()] == ["schema.json"]


def test_generate_blank_option_with_a_usage_error_is_refused_alone(tmp_path: Path) -> None:
    # guard: a value click refuses (--users abc) stops generate before it can list anything:
    # the blank option is refused first, as before
    res = run(["generate", "--out", "p", "--timezone", "", "--users", "abc"], tmp_path)
    assert (res.returncode, res.stdout) == (2, ""), res.stderr
    assert res.stderr == report([TZ_BLANK], "")
    assert list(tmp_path.iterdir()) == []


def test_generate_json_lists_every_problem_with_a_blank_text_flag(tmp_path: Path) -> None:
    res = run(["generate", "--out", "p", "--timezone", "", "--users", "0", "--json"], tmp_path)
    assert res.returncode == 2, res.stderr
    error = json.loads(res.stdout)["error"]
    assert error["type"] == "ConfigError" and error["source"] == "mp2amp generate"
    assert error["problems"] == [TZ_BLANK, USERS]
    assert list(tmp_path.iterdir()) == []


def test_the_last_of_repeated_text_flags_wins(tmp_path: Path) -> None:
    # guard: `--timezone "" --timezone UTC` is UTC (the blank is overridden, not refused) ...
    res = run(["generate", "--out", "p", "--users", "2", "--days", "1", "--timezone", "",
               "--timezone", "UTC", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["days"] == 1
    # ... and `--timezone UTC --timezone=` is refused
    res = run(["generate", "--out", "q", "--timezone", "UTC", "--timezone="], tmp_path)
    assert res.returncode == 2 and TZ_BLANK in res.stderr, res.stderr
    assert not (tmp_path / "q").exists()


def _banner(env: dict[str, str], tmp_path: Path) -> tuple[int | None, str]:
    """The mixpanel emulator's exit code (None: it ran, then was stopped) and stderr."""
    (tmp_path / "d").mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    err = tmp_path / "stderr.txt"
    with err.open("w") as sink:
        proc = subprocess.Popen([MP2AMP, "emulate", "mixpanel", "--data", "d", "--port", "0"],
                                cwd=tmp_path, env={**clean, **env}, stdout=subprocess.DEVNULL,
                                stderr=sink, text=True)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None \
                    and "mixpanel emulator:" not in err.read_text():
                time.sleep(0.05)
            code = proc.poll()
            if code is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return code, err.read_text()


def test_mixpanel_emulator_does_not_take_a_blank_env_secret_as_the_secret(
        tmp_path: Path) -> None:
    code, stderr = _banner({"MIXPANEL_SECRET": "  "}, tmp_path)
    # migrate strips environment secrets (a secret of blanks is none): the emulator, whose
    # default is that variable, must not then accept only a secret of two spaces
    assert code is None, stderr
    assert "accepting any Basic credentials" in stderr, stderr


def test_mixpanel_emulator_does_not_take_a_blank_env_service_account(tmp_path: Path) -> None:
    code, stderr = _banner({"MIXPANEL_SERVICE_ACCOUNT": " \t"}, tmp_path)
    assert code is None and "accepting any Basic credentials" in stderr, stderr


def test_mixpanel_emulator_strips_env_secrets_as_migrate_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a secret pasted with its newline: migrate sends it stripped, the emulator accepts that
    from mp2amp.cli.emulate_mixpanel import _env_secret
    monkeypatch.setenv("MIXPANEL_SECRET", "s3cret\n")
    monkeypatch.delenv("MIXPANEL_SERVICE_ACCOUNT", raising=False)
    assert (_env_secret("MIXPANEL_SECRET"), _env_secret("MIXPANEL_SERVICE_ACCOUNT")) == \
        ("s3cret", None)


def test_mixpanel_emulator_empty_env_secret_is_unset(tmp_path: Path) -> None:
    # guard: an empty variable is no secret
    code, stderr = _banner({"MIXPANEL_SECRET": ""}, tmp_path)
    assert code is None and "accepting any Basic credentials" in stderr, stderr
