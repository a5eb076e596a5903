"""Session 14 review of the configuration and of the ``migrate``/``status`` command line:
values a data engineer may well write into ``mp2amp.toml`` and what the CLI then says.

Tests marked ``xfail(strict=True, reason=...)`` show a defect; the others pin edge cases no
other test covers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config import load_config
from mp2amp.errors import ConfigError
from shared_kit import amplitude_emulator, cli_workspace

KEY = "s14-review-key"


def invoke(*args: str) -> Any:
    """The CLI in-process; an exception that escapes it is caught (exit 1, no message)."""
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def flat(text: str) -> str:
    return " ".join(text.split())


def events(n: int) -> str:
    base = 1709251200  # 2024-03-01 UTC
    return "".join(
        json.dumps(
            {
                "event": "Page View",
                "properties": {
                    "time": base + i * 60,
                    "distinct_id": f"user-{i % 7:03d}",
                    "$insert_id": f"ins-{i}",
                },
            }
        )
        + "\n"
        for i in range(n)
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return cli_workspace(monkeypatch, tmp_path, KEY, events(20))


@pytest.fixture
def amp_url(tmp_path: Path) -> Iterator[str]:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_object(stdout: str, exit_code: int) -> dict[str, Any]:
    """stdout of a ``--json`` run that stopped: one JSON object (json.loads refuses a
    second document) with the run's exit code; returns its ``error``."""
    doc = json.loads(stdout)
    assert isinstance(doc, dict) and doc["exit_code"] == exit_code, stdout
    error: dict[str, Any] = doc["error"]
    return error


def refused_cleanly(result: Any, cfg: Path, key: str) -> None:
    """Exit 2, no traceback, the file named, the key named, and (``--json``) the config
    error as one JSON object on stdout."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    error = error_object(result.stdout, 2)
    assert (error["kind"], error["type"], error["source"]) == ("terminal", "ConfigError",
                                                                str(cfg))
    assert any(p.startswith(f"{key}: ") for p in error["problems"]), error
    assert result.stderr.startswith(f"error: invalid configuration in {cfg} "), result.stderr
    assert f"  - {key}: " in result.stderr, result.stderr


# --- defects --------------------------------------------------------------------------------


def test_a_timezone_that_names_a_tz_folder_is_a_config_problem(env: Path) -> None:
    cfg = write(
        env / "mp2amp.toml", '[source]\nfiles = ["events"]\n[mixpanel]\ntimezone = "America"\n'
    )
    refused_cleanly(invoke("migrate", "-c", str(cfg), "--json"), cfg, "mixpanel.timezone")
    # status reads only the work folder of a config migrate would refuse (README): no
    # traceback, and the folder it names is the default beside the config file
    result = invoke("status", "-c", str(cfg), "--json")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    error = error_object(result.stdout, 2)
    assert (error["kind"], error["type"]) == ("terminal", "TerminalError")
    assert result.stderr.startswith(f"error: no migration in {env / '.mp2amp'} "), result.stderr
    assert not (env / ".mp2amp").exists()


def test_a_timezone_change_to_a_tz_folder_is_a_config_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mp2amp.toml",
        "[mixpanel]\nlegacy_time = true\n"
        'timezone_changes = [{since = 2021-06-01, timezone = "Europe"}]\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems[0].startswith("mixpanel.timezone_changes[0].timezone: ")


@pytest.mark.parametrize("section", ["amplitude", "mixpanel"])
@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:99999", "http://127.0.0.1:80a", "http://[::1:8040"]
)
def test_an_api_host_no_request_can_be_made_to_is_refused(
    tmp_path: Path, section: str, host: str
) -> None:
    path = write(tmp_path / "mp2amp.toml", f'[{section}]\napi_host = "{host}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [
        p for p in info.value.problems if p.startswith(f"{section}.api_host: ")
    ]
    assert len(info.value.problems) == 1


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[source]\nfiles = ["~nosuchuser-s14/exports/*.jsonl"]\n', "source.files[0]"),
        ('[source]\nfiles = ["events"]\n[run]\nworkdir = "~nosuchuser-s14/mig"\n', "run.workdir"),
    ],
)
def test_a_home_folder_of_an_unknown_user_is_a_config_problem(
    env: Path, text: str, key: str
) -> None:
    cfg = write(env / "mp2amp.toml", text)
    refused_cleanly(invoke("migrate", "-c", str(cfg), "--json"), cfg, key)


def test_a_user_id_pattern_the_regex_engine_cannot_compile_is_a_config_problem(env: Path) -> None:
    cfg = write(
        env / "mp2amp.toml",
        '[source]\nfiles = ["events"]\n[transform]\nuser_id_pattern = "^[0-9]{9999999999}$"\n',
    )
    refused_cleanly(invoke("migrate", "-c", str(cfg), "--json"), cfg, "transform.user_id_pattern")


def test_a_batch_cap_past_the_httpapi_limit_names_the_config_file_and_key(env: Path) -> None:
    text = (
        '[source]\nfiles = ["events"]\n'
        '[amplitude]\nendpoint = "httpapi"\nbatch_max_bytes = 2000000\n'
    )
    cfg = write(env / "mp2amp.toml", text)
    refused_cleanly(invoke("migrate", "-c", str(cfg), "--json"), cfg, "amplitude.batch_max_bytes")
    write(cfg, text + "[run]\nconcurrency = 0\n")
    result = invoke("migrate", "-c", str(cfg), "--json")
    refused_cleanly(result, cfg, "amplitude.batch_max_bytes")
    assert "  - run.concurrency: must be 1..64, got 0" in result.stderr
    assert not (env / ".mp2amp").exists()


def test_the_default_workdir_is_where_the_documented_default_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    implicit = write(conf / "implicit.toml", '[source]\nfiles = ["events"]\n')
    explicit = write(
        conf / "explicit.toml", '[source]\nfiles = ["events"]\n[run]\nworkdir = ".mp2amp"\n'
    )
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    a = load_config(implicit, env={}).run.workdir
    b = load_config(explicit, env={}).run.workdir
    assert Path(a).resolve() == Path(b).resolve()


def test_a_plan_or_excluded_users_file_that_is_a_folder_is_named_as_a_folder(
    tmp_path: Path,
) -> None:
    (tmp_path / "plans").mkdir()
    path = write(
        tmp_path / "mp2amp.toml",
        '[transform]\nplan = "plans"\n[privacy]\nexclude_users = "plans"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [p.partition(":")[0] for p in info.value.problems] == [
        "transform.plan",
        "privacy.exclude_users",
    ]
    for problem in info.value.problems:
        assert "does not exist" not in problem, problem
        assert "folder" in problem or "directory" in problem, problem


# --- edge cases pinned (passing) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "allowed"), [("mixpanel", "us, eu, in"), ("amplitude", "us, eu")]
)
def test_a_residency_in_capitals_is_named_with_the_values_allowed(
    env: Path, section: str, allowed: str
) -> None:
    cfg = write(env / "mp2amp.toml", f'[source]\nfiles = ["events"]\n[{section}]\nregion = "EU"\n')
    result = invoke("migrate", "-c", str(cfg), "--json")
    refused_cleanly(result, cfg, f"{section}.region")
    assert f"  - {section}.region: 'EU' is not one of {allowed}" in result.stderr
    assert not (env / ".mp2amp").exists()


def test_a_config_path_that_is_a_folder_is_refused_without_a_traceback(env: Path) -> None:
    folder = env / "conf"
    folder.mkdir()
    for command in ("migrate", "status"):
        result = invoke(command, "-c", str(folder), "--json")
        assert result.exit_code == 2, (command, result.stderr)
        error = error_object(result.stdout, 2)
        assert (error["kind"], error["type"]) == ("terminal", "ConfigError"), command
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert flat(result.stderr) == (
            f"error: invalid configuration in {folder} (1 problem(s)); fix them and run "
            "again: - cannot read the config file: Is a directory"
        )


def test_an_empty_config_file_is_every_default_and_asks_for_a_source(env: Path) -> None:
    cfg = write(env / "mp2amp.toml", "")
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 2
    error = error_object(result.stdout, 2)
    assert (error["kind"], error["type"]) == ("terminal", "ConfigError")
    assert "source: give from_date and to_date (Export API) or files" in flat(result.stderr)
    assert not (env / ".mp2amp").exists()


def test_a_refused_api_key_is_never_printed_though_amplitude_echoes_it(
    env: Path, amp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Amplitude's 400 says 'Invalid API key: <the key>' (the emulator echoes it too): the
    key must not reach stderr, the ledger's last run, or status."""
    wrong = "wrong-key-hunter7-s14"
    monkeypatch.setenv("AMPLITUDE_API_KEY", wrong)
    cfg = write(
        env / "mp2amp.toml",
        f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n'
        '[run]\nworkdir = "work"\n',
    )
    refused = invoke("migrate", "-c", str(cfg), "--json", "--quiet")
    assert refused.exit_code == 2
    error = error_object(refused.stdout, 2)
    assert (error["kind"], error["type"]) == ("terminal", "AuthError")
    assert "api key" in refused.stderr.lower()
    status_json = invoke("status", "-c", str(cfg), "--json")
    status_text = invoke("status", "-c", str(cfg))
    assert status_json.exit_code == 0 and status_text.exit_code == 0
    doc = orjson.loads(status_json.stdout)
    assert doc["last_attempt"]["exit_code"] == 2
    assert doc["last_attempt"]["outcome"] == "stopped"
    for text in (
        refused.stdout,
        refused.stderr,
        status_json.stdout,
        status_text.stdout,
        status_text.stderr,
    ):
        assert "hunter7" not in text
    for file in (env / "work").rglob("*"):
        if file.is_file():
            assert b"hunter7" not in file.read_bytes(), file


def test_a_flag_problem_keeps_the_file_problems_and_names_both(env: Path) -> None:
    """--concurrency 0 and a typo in the file: both reported at once, the flag's as the
    flag, the file's as its key."""
    cfg = write(env / "mp2amp.toml", '[source]\nfiles = ["events"]\n[run]\nworkdri = "w"\n')
    result = invoke("migrate", "-c", str(cfg), "--concurrency", "0", "--json")
    assert result.exit_code == 2
    error = error_object(result.stdout, 2)
    assert (error["kind"], error["type"]) == ("terminal", "ConfigError")
    assert error["problems"] == [
        "run.workdri: unknown key; did you mean 'workdir'?",
        "--concurrency (run.concurrency: must be 1..64, got 0)",
    ]
    assert result.stderr.splitlines()[1:] == [
        "  - run.workdri: unknown key; did you mean 'workdir'?",
        "  - --concurrency (run.concurrency: must be 1..64, got 0)",
    ]


@pytest.mark.parametrize("salt", ["   ", "\r", " \n"])
def test_a_blank_salt_from_the_environment_is_no_salt(tmp_path: Path, salt: str) -> None:
    path = write(tmp_path / "mp2amp.toml", '[privacy]\nhash_properties = ["email"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"MP2AMP_HASH_SALT": salt})
    assert [p.partition(":")[0] for p in info.value.problems] == ["privacy.hash_salt"]
