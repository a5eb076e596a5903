"""Session 17 review: what a run shows (``mp2amp status``, ``--json``, progress lines, exit
codes), end to end through the CLI (``CliRunner``) against the in-process Amplitude
emulator or a scripted Mixpanel over loopback.

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.ledger import Ledger
from mp2amp.pipeline.attempts import record_start
from mp2amp.pipeline.worklock import WorkLock
from shared_kit import amplitude_emulator, cli_workspace, page_view, stored_by_source_id

KEY = "review17-status-key"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def lines_of(records: list[dict[str, Any]]) -> str:
    return "\n".join(orjson.dumps(r).decode() for r in records) + "\n"


def files_toml(folder: Path, api_host: str, files: str = "events/*.jsonl") -> None:
    (folder / "mp2amp.toml").write_text(
        f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{files}"]\n'
        f'[amplitude]\napi_host = "{api_host}"\n')


def last_attempt(folder: Path) -> dict[str, Any]:
    got = invoke("status", "-c", str(folder / "mp2amp.toml"), "--json")
    assert got.exit_code == 0, got.stderr
    attempt = orjson.loads(got.stdout)["last_attempt"]
    assert isinstance(attempt, dict)
    return attempt


@contextmanager
def mixpanel_answering_503() -> Iterator[str]:
    """A Mixpanel whose Export API answers every request 503 (an outage)."""

    class Down(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": "service unavailable"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Down)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def fail_staging_with(monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    """Writing the staged copy of a window fails with ``OSError(code)`` naming that file
    (a quota reached, a staged/ folder another user owns, ...)."""
    from mp2amp.pipeline import windows as windows_module

    async def refused(records: Any, dest: Path, local: Any, **kwargs: Any) -> int:
        raise OSError(code, words, str(dest))

    monkeypatch.setattr(windows_module, "staged_in_thread", refused)


# --- exit codes -----------------------------------------------------------------------


def test_a_mixpanel_outage_that_spends_a_days_attempts_exits_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.pipeline import migrate as migrate_module

    cli_workspace(monkeypatch, tmp_path, KEY)
    monkeypatch.setenv("MIXPANEL_SECRET", "review17-secret")
    original = migrate_module._mixpanel_settings
    monkeypatch.setattr(migrate_module, "_mixpanel_settings", lambda config, overrides: original(
        config, {"max_attempts": 2, "backoff_base": 0.01, "backoff_cap": 0.02}))
    with mixpanel_answering_503() as mixpanel:
        (tmp_path / "mp2amp.toml").write_text(
            f'[mixpanel]\napi_host = "{mixpanel}"\nproject_id = 1\n'
            '[source]\nfrom_date = 2024-03-01\nto_date = 2024-03-01\n'
            '[amplitude]\napi_host = "http://127.0.0.1:9"\n')
        result = invoke("migrate", "--json")
    message = flat(result.stderr)
    assert "failed 2 times, giving up for now" in message and "--resume" in message
    # a run that stops prints one JSON object: the error, with the exit code ...
    doc = orjson.loads(result.stdout)
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "RetriesSpent")
    # ... and exits 2 (README: 1 is "a window does not add up"; a stop says --resume)
    assert result.exit_code == 2
    assert last_attempt(tmp_path)["exit_code"] == 2


# --- status's last_attempt says what the run said ------------------------------------


def test_status_reports_an_unwritable_work_folder_as_the_run_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY, events=lines_of([page_view(i) for i in range(5)]))
    files_toml(tmp_path, "http://127.0.0.1:9")
    fail_staging_with(monkeypatch, errno.EACCES, "Permission denied")
    run = invoke("migrate", "--quiet")
    assert run.exit_code == 2
    said = flat(run.stderr)
    assert said.startswith("error: cannot write ") and "Permission denied" in said
    attempt = last_attempt(tmp_path)
    assert (attempt["outcome"], attempt["exit_code"]) == ("stopped", 2)
    assert said == "error: " + flat(attempt["message"])


def test_status_keeps_the_words_of_a_quota_that_stopped_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY, events=lines_of([page_view(i) for i in range(5)]))
    files_toml(tmp_path, "http://127.0.0.1:9")
    fail_staging_with(monkeypatch, errno.EDQUOT, "Disk quota exceeded")
    run = invoke("migrate", "--quiet")
    assert run.exit_code == 2
    assert "Disk quota exceeded" in run.stderr
    attempt = last_attempt(tmp_path)
    assert (attempt["outcome"], attempt["exit_code"]) == ("stopped", 2)
    assert "Disk quota exceeded" in attempt["message"]  # README: "as its own message said it"


# --- --json is valid JSON --------------------------------------------------------------

# A property name with a lone surrogate (JSON escape \ud800, which real exports hold) and a
# value past Amplitude's 1024 characters: the event is rejected (non_json_value), but the
# transform's `values` report still names the property it cut.
SURROGATE_RECORD = ('{"event": "Page View", "properties": {"time": 1709251300, "distinct_id": '
                    '"user-surrogate", "$insert_id": "ins-surrogate", "$device_id": '
                    '"device-surrogate", "note\\ud800": "' + "x" * 1500 + '"}}')


def test_migrate_json_survives_a_lone_surrogate_in_a_property_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = lines_of([page_view(i) for i in range(3)]) + SURROGATE_RECORD + "\n"
    cli_workspace(monkeypatch, tmp_path, KEY, events=events)
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        files_toml(tmp_path, url)
        result = CliRunner().invoke(app, ["migrate", "--json"])
        assert len(stored_by_source_id(url)) == 3
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.stderr
    doc = orjson.loads(result.stdout)
    assert doc["totals"]["sent"] == 3 and doc["totals"]["rejected"] == 1
    assert last_attempt(tmp_path)["exit_code"] == result.exit_code


def test_transform_json_survives_a_lone_surrogate_in_a_property_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)
    (tmp_path / "in.jsonl").write_text(lines_of([page_view(1)]) + SURROGATE_RECORD + "\n")
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "-o", "out.jsonl", "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.stderr
    orjson.loads(result.stdout)


def test_transform_to_stdout_writes_its_json_report_to_stderr_despite_a_lone_surrogate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events on stdout, the report on stderr: that path printed with orjson directly.
    The surrogate's event is rejected (non_json_value), so since session 19 its cut
    property is not counted (counts cover only events that are sent): the report stays
    one JSON document without it."""
    cli_workspace(monkeypatch, tmp_path, KEY)
    (tmp_path / "in.jsonl").write_text(lines_of([page_view(1)]) + SURROGATE_RECORD + "\n")
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stderr)
    assert report["values"]["truncated"] == {}, report["values"]
    assert "\\ud800" not in result.stderr


# --- status text ----------------------------------------------------------------------


def test_status_windows_shows_file_names_with_brackets_as_they_are(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("ev/[final].jsonl", "file", {}), ("ev/b [old].jsonl", "file", {})])
    ledger.close()
    result = invoke("status", "--workdir", str(tmp_path), "--windows")
    assert result.exit_code == 0, result.stderr
    assert "ev/[final].jsonl" in result.stdout
    assert "ev/b [old].jsonl" in result.stdout


def test_status_does_not_say_resume_while_the_run_is_alive(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    record_start(ledger, time.time())
    ledger.close()
    lock = WorkLock(tmp_path)  # a migrate running in the folder now
    try:
        result = invoke("status", "--workdir", str(tmp_path))
    finally:
        lock.release()
    assert result.exit_code == 0, result.stderr
    assert "running now: mp2amp migrate, pid" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("last run:"))
    assert "--resume" not in line and "killed" not in line


def test_status_json_last_attempt_has_every_key_for_an_older_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    # as mp2amp recorded a finished run before last_attempt always had a message
    ledger.set_meta("last_attempt", orjson.dumps({
        "started": 1_790_000_000.0, "ended": 1_790_000_100.0, "outcome": "finished",
        "exit_code": 0}).decode())
    ledger.close()
    got = invoke("status", "--workdir", str(tmp_path), "--json")
    assert got.exit_code == 0, got.stderr
    attempt = orjson.loads(got.stdout)["last_attempt"]
    assert set(attempt) == {"started", "ended", "outcome", "exit_code", "message"}
    assert attempt["message"] is None


# --- regression guard (passes) ----------------------------------------------------------


def test_last_log_line_json_status_and_amplitude_agree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain progress line at the end, the printed result, ``status --json`` and what
    Amplitude holds give the same numbers (a duplicate and a malformed line included)."""
    records = [page_view(i) for i in range(12)]
    events = lines_of(records) + "not json\n" + orjson.dumps(records[4]).decode() + "\n"
    cli_workspace(monkeypatch, tmp_path, KEY, events=events)
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        files_toml(tmp_path, url)
        run = invoke("migrate")
        held = stored_by_source_id(url)
    assert run.exit_code == 0, run.stderr
    last = [x for x in run.stderr.splitlines() if x.startswith("mp2amp: t=")][-1]
    assert " phase=load done=14/14 sent=12 " in last and " eta=0s" in last
    status = orjson.loads(invoke("status", "--json").stdout)
    assert status["complete"] is True and status["running_pid"] is None
    totals = status["totals"]
    assert (totals["read"], totals["sent"], totals["duplicate"], totals["rejected"]) == \
        (14, 12, 1, 1)
    assert totals["sent"] == len(held) == sum(held.values())
    assert status["last_attempt"]["outcome"] == "finished"
    assert status["last_attempt"]["exit_code"] == 0


# --- fixes' own edges -------------------------------------------------------------------


def test_a_throttle_that_never_lifts_also_stops_with_exit_2() -> None:
    """Both ways a retry budget runs out stop the run (TerminalError, exit 2) and say how
    to continue; the last throttle's Retry-After is kept."""
    from mp2amp.errors import RateLimited, ServerError, TerminalError
    from mp2amp.extract.ratelimit import RetriesSpent, RetryBudget

    then = "run the same mp2amp migrate command with --resume"
    throttled = RetryBudget("export of 2024-03-01", 8, 2, 0.01, 0.02, then=then)
    throttled.delay(RateLimited("429; waiting and retrying", retry_after=1.0))
    with pytest.raises(RetriesSpent) as info:
        throttled.delay(RateLimited("429; waiting and retrying", retry_after=3.0))
    assert isinstance(info.value, TerminalError) and info.value.exit_code == 2
    assert info.value.retry_after == 3.0 and "--resume" in str(info.value)
    failing = RetryBudget("engage page 0", 1, 50, 0.01, 0.02)
    with pytest.raises(RetriesSpent, match="engage page 0 failed 1 times") as info:
        failing.delay(ServerError("503; retrying with backoff", status=503))
    assert info.value.exit_code == 2


def test_status_says_resume_when_the_recorded_run_is_not_running(tmp_path: Path) -> None:
    """No migrate holds the lock: the run that recorded only its start was killed."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    record_start(ledger, time.time())
    ledger.close()
    result = invoke("status", "--workdir", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert "running now" not in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("last run:"))
    assert "it was killed" in line and "mp2amp migrate --resume" in line


def test_status_json_last_attempt_keeps_only_the_documented_keys(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([("2024-03-01", "day", {})])
    ledger.set_meta("last_attempt", orjson.dumps({
        "started": 1.0, "ended": 2.0, "outcome": "stopped", "exit_code": 2,
        "message": "m", "extra": 1}).decode())
    ledger.close()
    attempt = orjson.loads(invoke("status", "--workdir", str(tmp_path), "--json").stdout)[
        "last_attempt"]
    assert attempt == {"started": 1.0, "ended": 2.0, "outcome": "stopped", "exit_code": 2,
                       "message": "m"}


def test_json_text_escapes_surrogates_in_keys_values_and_nested_lists() -> None:
    from mp2amp.cli.output import json_text

    doc = orjson.loads(json_text({"a\ud800": ["x\udfff", {"k": ("y\ud83d",)}], "n": 1}))
    assert doc == {"a\\ud800": ["x\\udfff", {"k": ["y\\ud83d"]}], "n": 1}
    assert orjson.loads(json_text({"plain": "é"})) == {"plain": "é"}


def test_generate_prints_an_output_folder_with_brackets_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "p [final]" / "[/x]"
    result = invoke("generate", "--out", str(out), "--users", "5", "--days", "1",
                    "--no-gzip")
    assert result.exit_code == 0, result.stderr
    assert str(out) in flat(result.stdout)


def test_demo_mismatch_lines_show_event_names_with_brackets(
        capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from mp2amp.cli import demo

    check = SimpleNamespace(ok=False, matched=1, expected=2, unchecked=0,
                            lines=lambda: ["event 'Buy [promo]': 1 missing"],
                            examples=["[/x] example"])
    demo._render_events(SimpleNamespace(events=check))  # type: ignore[arg-type]
    said = capsys.readouterr().err
    assert "event 'Buy [promo]': 1 missing" in said and "[/x] example" in said

