"""Review of the command-line experience and configuration of ``migrate``, ``status``,
``transform`` and ``demo``: what a data engineer running a real migration meets.

Tests marked ``xfail(strict=True, reason="BUG: ...")`` show a defect; the others pin
behaviour no other test checks through the CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.ledger import Ledger
from shared_kit import amplitude_emulator, cli_workspace

KEY = "cli-review-key"


def invoke(*args: str, catch: bool = False) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=catch)


def flat(text: str) -> str:
    return " ".join(text.split())


def error_object(stdout: str, exit_code: int) -> dict[str, Any]:
    """A ``--json`` run that stopped: stdout is one JSON object with its exit code
    (json.loads refuses a second document); returns its ``error``."""
    doc = json.loads(stdout)
    assert isinstance(doc, dict) and doc["exit_code"] == exit_code, stdout
    error: dict[str, Any] = doc["error"]
    return error


def events(n: int, day: str = "2024-03-01") -> str:
    from datetime import UTC, datetime

    base = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
    return "".join(json.dumps({"event": "Page View", "properties": {
        "time": base + i * 60, "distinct_id": f"user-{i % 7:03d}", "$insert_id": f"{day}-{i}"}})
        + "\n" for i in range(n))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return cli_workspace(monkeypatch, tmp_path, KEY, events(30))


@pytest.fixture
def amp_url(tmp_path: Path) -> Iterator[str]:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- config errors through the CLI ------------------------------------------------------


def test_toml_syntax_error_names_file_line_and_column_and_json_stdout_is_the_error(
        env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml", '[source]\nfiles = ["events"]\n[amplitude\n')
    for command in (("migrate",), ("status",), ("transform", "events")):
        result = invoke(*command, "-c", str(cfg), "--json")
        assert result.exit_code == 2, command
        said = (
            f"error: invalid configuration in {cfg} (1 problem(s)); fix them and run again:\n"
            "  - not valid TOML: Expected ']' at the end of a table declaration (at line 3, "
            "column 11)\n")
        if command[0] == "transform":  # stdout carries its events: the object goes to stderr
            assert result.stdout == ""
            assert result.stderr.startswith(said), result.stderr
            error = error_object(result.stderr[len(said):], 2)
        else:
            error = error_object(result.stdout, 2)
            assert result.stderr == said
        assert (error["kind"], error["type"]) == ("terminal", "ConfigError"), command
        assert error["source"] == str(cfg)
    assert not (env / ".mp2amp").exists()


def test_typos_and_wrong_types_are_refused_naming_each_key(env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml", """
[source]
files = "events/2024-03-01.jsonl"
[amplitue]
endpoint = "batch"
[amplitude]
batch_max_byte = 100000
[run]
concurrency = "8"
""")
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 2
    error = error_object(result.stdout, 2)
    assert (error["kind"], error["type"]) == ("terminal", "ConfigError")
    assert len(error["problems"]) == 4
    assert result.stderr.splitlines() == [
        f"error: invalid configuration in {cfg} (4 problem(s)); fix them and run again:",
        "  - amplitue: unknown key; did you mean 'amplitude'?",
        "  - source.files: must be a list, got a string 'events/2024-03-01.jsonl'",
        "  - amplitude.batch_max_byte: unknown key; did you mean 'batch_max_bytes'?",
        "  - run.concurrency: must be an integer, got a string '8'",
    ]
    assert not (env / ".mp2amp").exists()


def test_dates_in_the_wrong_format_are_named(env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml",
                       '[source]\nfrom_date = "03/01/2024"\nto_date = 2024-03-02\n'
                       '[privacy]\ndrop_before = "last year"\n')
    result = invoke("migrate", "-c", str(cfg))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1:] == [
        "  - source.from_date: must be a date like 2024-01-31, got '03/01/2024'",
        "  - privacy.drop_before: must be a date like 2024-01-31, got 'last year'",
    ]


def test_secrets_are_never_printed(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(env / "mp2amp.toml",
                       '[source]\nfrom_date = 2024-03-01\nto_date = 2024-03-01\n'
                       '[mixpanel]\nproject_id = 1\nsecret = "in-file-hunter2"\n'
                       '[amplitude]\napi_key = "in-file-amp-key"\n')
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT", "no-colon-hunter3")
    monkeypatch.setenv("AMPLITUDE_API_KEY", "env-amp-key-hunter4")
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 2
    error = error_object(result.stdout, 2)
    assert (error["kind"], error["type"]) == ("terminal", "ConfigError")
    assert result.stderr.splitlines()[1:] == [
        "  - mixpanel.secret: secrets are read only from the environment (MIXPANEL_SECRET); "
        "remove it from the file",
        "  - amplitude.api_key: secrets are read only from the environment "
        "(AMPLITUDE_API_KEY); remove it from the file",
        "  - mixpanel.service_account: MIXPANEL_SERVICE_ACCOUNT must be 'username:secret'",
    ]
    for secret in ("hunter2", "amp-key", "hunter3", "hunter4"):
        assert secret not in result.stderr
        assert secret not in result.stdout  # nor in the JSON error object


def test_export_run_without_mixpanel_credentials_says_which_variables(env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml",
                       '[source]\nfrom_date = 2024-03-01\nto_date = 2024-03-01\n')
    result = invoke("migrate", "-c", str(cfg))
    assert result.exit_code == 2
    assert flat(result.stderr).endswith(
        "- mixpanel: the Export API (source.from_date/to_date) needs credentials: set "
        "MIXPANEL_SERVICE_ACCOUNT (user:secret) or MIXPANEL_SECRET in the environment")
    assert not (env / ".mp2amp").exists()


def test_a_bad_flag_value_is_named_as_the_flag(env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml", '[source]\nfiles = ["events"]\n')
    result = invoke("migrate", "-c", str(cfg), "--concurrency", "100")
    assert result.exit_code == 2
    assert "--concurrency" in result.stderr


def test_no_source_is_refused_before_the_work_folder_is_made(env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml", '[run]\nworkdir = "work"\n')
    result = invoke("migrate", "-c", str(cfg))
    assert result.exit_code == 2
    assert "source: give from_date and to_date (Export API) or files" in result.stderr
    assert not (env / "work").exists()


# --- --workdir ----------------------------------------------------------------------------


def test_a_relative_workdir_flag_is_relative_to_the_current_directory(env: Path) -> None:
    cfg = write_config(env / "conf" / "mp2amp.toml", '[run]\nworkdir = "elsewhere"\n')
    ledger = Ledger(env / "work" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    result = invoke("status", "-c", str(cfg), "--workdir", "work", "--json")
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["ledger"] == str(env / "work" / "ledger.sqlite")


def test_workdir_flag_beats_the_config_and_status_json_before_any_run(env: Path) -> None:
    ledger = Ledger(env / "work" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    cfg = write_config(env / "mp2amp.toml", '[run]\nworkdir = "not-here"\n')
    result = invoke("status", "-c", str(cfg), "--workdir", str(env / "work"), "--json")
    assert result.exit_code == 0, result.stderr
    got = orjson.loads(result.stdout)
    assert got["last_attempt"] is None and got["complete"] is False
    assert got["states"] == {"pending": 1} and got["problems"] == []
    assert result.stderr == ""


# --- status -------------------------------------------------------------------------------


def test_status_needs_only_the_work_folder(env: Path) -> None:
    cfg = write_config(env / "mp2amp.toml",
                       '[privacy]\nhash_properties = ["$email"]\n[run]\nworkdir = "work"\n')
    ledger = Ledger(env / "work" / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.close()
    result = invoke("status", "-c", str(cfg))
    assert result.exit_code == 0, result.stderr


def test_a_refused_rerun_does_not_replace_the_last_run(env: Path, amp_url: str) -> None:
    cfg = write_config(env / "mp2amp.toml",
                       f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n'
                       '[run]\nworkdir = "work"\n')
    assert invoke("migrate", "-c", str(cfg), "--quiet").exit_code == 0
    again = invoke("migrate", "-c", str(cfg), "--quiet")
    assert again.exit_code == 2 and "already holds a migration" in again.stderr
    status = invoke("status", "-c", str(cfg), "--json")
    got = orjson.loads(status.stdout)
    assert got["complete"] is True
    assert (got["last_attempt"]["outcome"], got["last_attempt"]["exit_code"]) == (
        "finished", 0)


def test_status_text_of_a_finished_run_and_json_is_pure(env: Path, amp_url: str) -> None:
    cfg = write_config(env / "mp2amp.toml",
                       f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{amp_url}"\n'
                       '[run]\nworkdir = "work"\n')
    run = invoke("migrate", "-c", str(cfg), "--json")
    assert run.exit_code == 0
    doc = orjson.loads(run.stdout)  # the whole stdout is one JSON document
    assert doc["totals"]["read"] == 30 and doc["totals"]["sent"] == 30
    assert run.stderr == ""  # --json: no progress lines
    text = invoke("status", "-c", str(cfg), "--windows")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    batches = invoke("status", "-c", str(cfg), "--json")
    done = orjson.loads(batches.stdout)["batches"]["done"]
    assert done >= 1
    assert lines[0] == (f"ledger {env / 'work' / 'ledger.sqlite'}: windows loaded 1; "
                        f"batches done {done}, in flight 0")
    last = [line for line in lines if line.startswith("last run: ")]
    assert len(last) == 1 and last[0].endswith(", finished (exit 0)")
    assert f"{env / 'events' / '2024-03-01.jsonl'}"[-43:] in text.stdout


# --- Mixpanel credentials refused -----------------------------------------------------------


@pytest.fixture
def mixpanel_url(tmp_path: Path) -> Iterator[str]:
    mixpanel = pytest.importorskip("mp2amp.emulators.mixpanel")
    root = tmp_path / "mp"
    (root / "events").mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "project.json").write_text(json.dumps(
        {"project_id": 42, "timezone": "UTC", "legacy_time": False, "group_keys": []}))
    (root / "events" / "2024-03-01.jsonl.gz").write_bytes(gzip.compress(events(20).encode()))
    emu = mixpanel.MixpanelEmulator(mixpanel.MixpanelConfig(
        data_dir=root, port=0, api_secret="right-secret", export_per_hour=1000,
        clock=time.time))
    with emu.running() as url:
        yield url


def test_refused_mixpanel_credentials_say_to_resume(env: Path, amp_url: str,
                                                    mixpanel_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(env / "mp2amp.toml", f"""
[mixpanel]
api_host = "{mixpanel_url}"
export_per_hour = 1000
[source]
from_date = 2024-03-01
to_date = 2024-03-01
[amplitude]
api_host = "{amp_url}"
[run]
workdir = "work"
""")
    monkeypatch.setenv("MIXPANEL_SECRET", "wrong-secret")
    refused = invoke("migrate", "-c", str(cfg), "--quiet")
    assert refused.exit_code == 2
    assert "Mixpanel refused the project API secret credentials" in flat(refused.stderr)
    assert "wrong-secret" not in refused.stderr
    monkeypatch.setenv("MIXPANEL_SECRET", "right-secret")
    again = invoke("migrate", "-c", str(cfg), "--quiet")  # what the message says to do
    assert "--resume" in refused.stderr or again.exit_code == 0


# --- transform ----------------------------------------------------------------------------


def _interrupting(monkeypatch: pytest.MonkeyPatch) -> None:
    import mp2amp.transform.offline as offline

    real = offline.transform_files

    def interrupted(cfg: Any, paths: Any, out: Any, rejects: Any, **kw: Any) -> Any:
        out.write(b'{"partial": true}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "transform_files", interrupted)
    assert real is not interrupted


def test_transform_ctrl_c_leaves_no_output_and_exits_130(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupting(monkeypatch)
    result = invoke("transform", "events", "--out", "out.jsonl", "--json")
    assert result.exit_code == 130
    error = error_object(result.stdout, 130)
    assert (error["kind"], error["signal"]) == ("interrupted", "SIGINT")
    assert not (env / "out.jsonl").exists() and not (env / ".out.jsonl.partial").exists()
    assert not (env / "out.jsonl.rejects.jsonl").exists()


def test_transform_ctrl_c_says_nothing_was_kept(env: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupting(monkeypatch)
    result = invoke("transform", "events", "--out", "out.jsonl")
    assert result.exit_code == 130
    assert "kept" not in result.stderr and "run" in result.stderr


def test_transform_json_with_out_is_pure_json_on_stdout(env: Path) -> None:
    (env / "events" / "2024-03-02.jsonl").write_text(events(5, "2024-03-02") + "not json\n")
    result = invoke("transform", "events", "--out", "out.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    doc = orjson.loads(result.stdout)
    summary = doc["summary"]
    assert (summary["records_read"], summary["events_out"], doc["out"]) == (
        36, 35, "out.jsonl")
    assert summary["rejected"] == {"malformed_json": 1} and summary["balanced"] is True
    assert result.stderr == ""


# --- demo ---------------------------------------------------------------------------------


def test_demo_with_a_file_as_workdir_is_a_clear_error(env: Path) -> None:
    (env / "not-a-folder").write_text("x")
    result = invoke("demo", "--workdir", "not-a-folder", "--events", "1000", "--json",
                    catch=True)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "not-a-folder" in result.stderr


# --- help lists what the README names ---------------------------------------------------------


@pytest.mark.parametrize("command,options", [
    ("migrate", ["--config", "--resume", "--resume-or-start", "--workdir", "--concurrency",
                 "--quiet", "--json", "--new-api-key"]),
    ("status", ["--config", "--workdir", "--windows", "--json"]),
    ("transform", ["--config", "--out", "--rejects", "--plan", "--json"]),
    ("demo", ["--events", "--workdir", "--fail-rate", "--drop-rate", "--seed",
              "--legacy-time", "--quiet", "--json"]),
])
def test_help_and_readme_name_the_same_options(command: str, options: list[str]) -> None:
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    usage = re.search(rf"^mp2amp {command} (.*)$", readme, re.M)
    assert usage is not None
    assert sorted(set(re.findall(r"--[a-z-]+", usage.group(1)))) == sorted(options)
    import typer.main

    click_cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    names = {o for p in click_cmd.params for o in p.opts if o.startswith("--")}
    assert names == set(options)


# --- signals, through the real entry point ------------------------------------------------


def test_sigint_with_json_prints_the_hint_and_its_object_then_status_names_it(
        env: Path, tmp_path: Path) -> None:
    import signal

    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "slow-amp", api_key=KEY,
                                            latency_ms=300))
    with emu.running() as url:
        cfg = write_config(env / "mp2amp.toml",
                           f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n'
                           "batch_max_bytes = 1024\n[run]\nworkdir = \"work\"\n"
                           "concurrency = 1\n")
        proc = subprocess.Popen([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        ledger = env / "work" / "ledger.sqlite"
        while time.monotonic() < deadline:
            if ledger.exists() and "done" in invoke("status", "-c", str(cfg)).stdout:
                got = orjson.loads(invoke("status", "-c", str(cfg), "--json").stdout)
                if got["batches"]["done"] >= 1:
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    hint = (f"the ledger in {env / 'work'} keeps everything done so far: run the "
            "same `mp2amp migrate` command with --resume to go on (batches that were in flight "
            "are sent again with the same insert_ids)")
    assert err.decode() == f"interrupted; {hint}\n"
    error = error_object(out.decode(), 130)
    assert (error["kind"], error["signal"]) == ("interrupted", "SIGINT")
    assert error["what_next"] == hint
    status = orjson.loads(invoke("status", "-c", str(cfg), "--json").stdout)
    assert status["complete"] is False
    assert status["last_attempt"]["outcome"] == "stopped"
    assert status["last_attempt"]["message"] == (
        "stopped by Ctrl-C; resume with --resume")
    assert status["last_attempt"]["exit_code"] == 130
