"""``--json`` when a command stops with an error: exactly one JSON object on stdout (the
exit code and the error: kind, type, message and the error's own fields), the human
message on stderr as without ``--json``, and the exit code unchanged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.cli.output import cli_errors, print_json
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import TerminalError
from shared_kit import amplitude_emulator, cli_workspace

KEY = "json-failures-key"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def one_object(stdout: str) -> dict[str, Any]:
    """stdout as exactly one JSON object (json.loads refuses a second document)."""
    doc = json.loads(stdout)
    assert isinstance(doc, dict), stdout
    return doc


def events(n: int) -> str:
    return "".join(json.dumps({"event": "Page View", "properties": {
        "time": 1709251200 + i * 60, "distinct_id": f"user-{i % 7:03d}",
        "$insert_id": f"ins-{i}"}}) + "\n" for i in range(n))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder: Path = cli_workspace(monkeypatch, tmp_path, KEY, events(30))
    return folder


def write_config(env: Path, url: str = "http://127.0.0.1:9", extra: str = "") -> Path:
    cfg = env / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n'
                   f'[run]\nworkdir = "work"\n{extra}', encoding="utf-8")
    return cfg


# --- configuration ------------------------------------------------------------------------


def test_missing_config_file_through_the_real_entry_point(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.toml"
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(missing),
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    problem = (f"the config file {missing} does not exist; create it (see "
               "docs/examples/mp2amp.toml) or leave --config out")
    message = (f"invalid configuration in {missing} (1 problem(s)); fix them and run again:"
               f"\n  - {problem}")
    assert one_object(proc.stdout) == {"exit_code": 2, "error": {
        "kind": "terminal", "type": "ConfigError", "message": message,
        "problems": [problem], "source": str(missing)}}
    assert proc.stderr == f"error: {message}\n"  # the human message, as without --json


def test_invalid_values_and_unknown_keys_list_every_problem(env: Path) -> None:
    cfg = write_config(env, extra='concurrency = "8"\n[amplitue]\nendpoint = "batch"\n')
    for command in (("migrate",), ("transform", "-o", "out.jsonl")):
        plain = invoke(*command, "-c", str(cfg))
        assert plain.exit_code == 2 and plain.stdout == ""
        result = invoke(*command, "-c", str(cfg), "--json")
        assert result.exit_code == 2
        assert result.stderr == plain.stderr
        error = one_object(result.stdout)["error"]
        assert error["kind"] == "terminal" and error["type"] == "ConfigError"
        assert error["source"] == str(cfg)
        assert error["problems"] == ["amplitue: unknown key; did you mean 'amplitude'?",
                                     "run.concurrency: must be an integer, got a string '8'"]
        assert error["message"] == plain.stderr.removeprefix("error: ").rstrip("\n")
    assert not (env / "work").exists()


def test_a_missing_secret_is_named_in_the_object(env: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMPLITUDE_API_KEY")
    result = invoke("migrate", "-c", str(write_config(env)), "--json")
    assert result.exit_code == 2
    doc = one_object(result.stdout)
    assert doc["exit_code"] == 2 and doc["error"]["kind"] == "terminal"
    assert any("set AMPLITUDE_API_KEY in the environment" in p
               for p in doc["error"]["problems"]), doc


def test_secrets_do_not_reach_the_object(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = env / "mp2amp.toml"
    cfg.write_text('[source]\nfiles = ["events"]\n[amplitude]\napi_key = "in-file-amp-key"\n',
                   encoding="utf-8")
    monkeypatch.setenv("AMPLITUDE_API_KEY", "env-amp-key-hunter4")
    result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 2
    assert one_object(result.stdout)["error"]["type"] == "ConfigError"
    assert "in-file-amp-key" not in result.stdout and "hunter4" not in result.stdout


def test_a_bad_option_value_is_a_usage_error_object(env: Path) -> None:
    result = invoke("migrate", "--concurrency", "many", "--json")
    assert result.exit_code == 2
    assert one_object(result.stdout) == {"exit_code": 2, "error": {
        "kind": "usage", "type": "BadParameter",
        "message": "Invalid value for '--concurrency': Input should be a valid integer, "
                   "unable to parse string as an integer"}}
    assert "Invalid value for '--concurrency'" in result.stderr
    # without --json: nothing on stdout, as before
    plain = invoke("migrate", "--concurrency", "many")
    assert plain.exit_code == 2 and plain.stdout == ""
    unknown = invoke("status", "--json", "--no-such-option")
    assert unknown.exit_code == 2
    assert one_object(unknown.stdout)["error"] == {
        "kind": "usage", "type": "NoSuchOption", "message": "No such option: --no-such-option"}


def test_a_usage_error_of_transform_keeps_its_event_stream_clean(env: Path) -> None:
    """Without --out transform's stdout is the events: its JSON goes to stderr, with
    the summary; with --out stdout is JSON only."""
    to_stdout = invoke("transform", "events", "--json", "--no-such-option")
    assert to_stdout.exit_code == 2 and to_stdout.stdout == ""
    assert '"kind": "usage"' in to_stdout.stderr
    to_file = invoke("transform", "events", "-o", "out.jsonl", "--json", "--no-such-option")
    assert to_file.exit_code == 2
    assert one_object(to_file.stdout)["error"]["type"] == "NoSuchOption"


# --- status, generate, demo ---------------------------------------------------------------


def test_status_on_a_missing_work_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    result = invoke("status", "--workdir", str(missing), "--json")
    assert result.exit_code == 2
    message = (f"no migration in {missing} (no ledger.sqlite); start one with `mp2amp "
               "migrate`, or point --workdir at its work folder")
    assert one_object(result.stdout) == {"exit_code": 2, "error": {
        "kind": "terminal", "type": "TerminalError", "message": message}}
    assert " ".join(result.stderr.split()) == f"error: {message}"
    assert not missing.exists()


def test_generate_with_a_bad_date(tmp_path: Path) -> None:
    result = invoke("generate", "--out", str(tmp_path / "p"), "--start", "soon", "--json")
    assert result.exit_code == 2
    error = one_object(result.stdout)["error"]
    assert error["type"] == "ConfigError" and error["source"] == "mp2amp generate"
    assert error["problems"] == ["--start must be a date as YYYY-MM-DD, got 'soon'"]


def test_demo_with_a_file_as_work_folder(env: Path) -> None:
    (env / "not-a-folder").write_text("x")
    result = invoke("demo", "--workdir", "not-a-folder", "--events", "1000", "--json",
                    "--quiet")
    assert result.exit_code == 2
    error = one_object(result.stdout)["error"]
    assert error["kind"] == "terminal" and "not-a-folder" in error["message"]


# --- migrate against the Amplitude emulator -------------------------------------------------


def test_an_invalid_api_key_stops_with_one_object(env: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = write_config(env, url)
        monkeypatch.setenv("AMPLITUDE_API_KEY", "not-the-key")
        result = invoke("migrate", "-c", str(cfg), "--json")
    assert result.exit_code == 2
    doc = one_object(result.stdout)
    assert doc["exit_code"] == 2 and set(doc) == {"exit_code", "error"}
    assert doc["error"]["kind"] == "terminal"
    assert doc["error"]["type"] == "AuthError"
    assert "invalid api key" in doc["error"]["message"].lower()
    assert f"{url}/batch" in doc["error"]["message"]
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_success_prints_the_result_alone(env: Path, tmp_path: Path) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = write_config(env, url)
        run = invoke("migrate", "-c", str(cfg), "--json")
    assert run.exit_code == 0 and run.stderr == ""
    result = one_object(run.stdout)
    assert "error" not in result and result["exit_code"] == 0
    assert result["totals"]["balanced"] is True and result["totals"]["sent"] == 30
    status = invoke("status", "-c", str(cfg), "--json")
    assert status.exit_code == 0 and "error" not in one_object(status.stdout)


def test_a_result_that_does_not_add_up_is_not_printed_twice(env: Path, tmp_path: Path) -> None:
    """exit 3 (events wait for the daily quota) prints the result object, with its
    exit_code, and no error object beside it."""
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            daily_quota=2))
    with emu.running() as url:
        result = invoke("migrate", "-c", str(write_config(env, url)), "--json")
    assert result.exit_code == 3, result.stderr
    doc = one_object(result.stdout)
    assert doc["exit_code"] == 3 and "error" not in doc and doc["totals"]["parked"] > 0


# --- stops -----------------------------------------------------------------------------------


def test_ctrl_c_prints_the_hint_as_what_next(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mp2amp.pipeline.migrate as pipeline

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "migrate", interrupted)
    result = invoke("migrate", "-c", str(write_config(env)), "--json")
    assert result.exit_code == 130
    hint = "nothing was recorded yet: run the same command again"
    assert result.stderr == f"interrupted; {hint}\n"
    assert one_object(result.stdout) == {"exit_code": 130, "error": {
        "kind": "interrupted", "type": "KeyboardInterrupt", "signal": "SIGINT",
        "message": f"interrupted; {hint}", "what_next": hint}}


def test_sigterm_through_the_real_entry_point(env: Path, tmp_path: Path) -> None:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "slow-amp", api_key=KEY,
                                            latency_ms=300))
    with emu.running() as url:
        (env / "events" / "2024-03-01.jsonl").write_text(events(300))  # ~1 min of batches
        cfg = write_config(env, url, extra="concurrency = 1\n")
        cfg.write_text(cfg.read_text().replace("[run]", "batch_max_bytes = 1024\n[run]"))
        proc = subprocess.Popen([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the load under way: a batch done
            if (env / "work" / "ledger.sqlite").exists():
                status = invoke("status", "-c", str(cfg), "--json")
                if status.exit_code == 0 and one_object(status.stdout)["batches"]["done"]:
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    doc = one_object(out.decode())
    stop = err.decode().splitlines()[-1]
    assert stop.startswith("stopped (SIGTERM); "), err
    hint = stop.removeprefix("stopped (SIGTERM); ")
    assert "--resume" in hint
    assert doc == {"exit_code": 143, "error": {
        "kind": "interrupted", "type": "Terminated", "signal": "SIGTERM",
        "message": f"stopped (SIGTERM); {hint}", "what_next": hint}}


# --- the helper itself ---------------------------------------------------------------------


def test_an_object_printed_before_the_stop_is_the_only_one(capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """transform prints a summary that does not add up, then stops with exit 2: on stdout
    with --out, on stderr (its events on stdout) without."""
    for to_stderr in (False, True):
        with pytest.raises(typer.Exit) as stopped, \
                cli_errors(as_json=True, json_to_stderr=to_stderr):
            print_json({"balanced": False}, to_stderr=to_stderr)
            raise TerminalError("counts do not add up")
        assert stopped.value.exit_code == 2
        got = capsys.readouterr()
        assert (got.out if not to_stderr else got.err.split("error:")[0]) == \
            '{\n  "balanced": false\n}\n'
        assert got.err.endswith("error: counts do not add up\n")
    with pytest.raises(typer.Exit), cli_errors(as_json=True, json_to_stderr=True):
        raise TerminalError("counts do not add up")
    got = capsys.readouterr()
    assert got.out == ""
    assert orjson.loads(got.err.split("\n", 1)[1])["error"]["message"] == "counts do not add up"


def test_a_closed_stdout_keeps_the_exit_code(tmp_path: Path) -> None:
    """``mp2amp status --json | true``: the object cannot be written; the stop still exits
    2 with its message, no traceback (a usage error too)."""
    import os

    for args in (["status", "--workdir", str(tmp_path / "none"), "--json"],
                 ["status", "--json", "--no-such-option"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        try:
            proc = subprocess.run([sys.executable, "-m", "mp2amp", *args], stdout=write,
                                  stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(write)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
