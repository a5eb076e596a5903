"""Review of the README text added in session 19 (``git diff e43b879..HEAD -- README.md``):
each concrete claim was run against the product (real CLI, subprocesses with real signals,
the in-process Amplitude emulator). Claims the code contradicts are strict xfails naming
the README sentence; a few claims no other test pins are guarded here.

Checked and already pinned elsewhere (not repeated): the JSON error example of
"## Commands" (tests/test_readme_claims_review.py), usage objects, /dev/full and closed
stdouts, generate's ``.partial``, the work folder's leftovers and checksums, identity table
one-hop and ``table_conflicts``, revenue overflow and numeric product ids, the values counts
of duplicates and rejected events, the proxy entries, httpoxy and netrc messages.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import mp2amp.proxyenv as proxyenv
from mp2amp.cli import app
from mp2amp.proxyenv import PROXY_VARIABLES, bypass_proxy_for_loopback, proxy_for
from shared_kit import SECRET_ENV, amplitude_emulator, cli_workspace, stored_by_source_id

KEY = "readme-session19-key"
SRC = Path(__file__).resolve().parents[1] / "src"
PROXY = "http://proxy.corp.example:3128"


def _events(n: int, start: int = 1_709_251_200) -> str:
    return "".join(json.dumps({"event": "Page View", "properties": {
        "time": start + i * 60, "distinct_id": f"user-{i % 7:03d}",
        "$insert_id": f"ins-{i}"}}) + "\n" for i in range(n))


# --- "## Commands": a Ctrl-C as a command starts ---------------------------------------------

_SIGINT_IN_IMPORT = """
import os, signal, sys
class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ.get("RS19_HOOK"):
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, _Finder())
"""


def _sigint_default() -> None:  # a background job's children start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("module", ["typer", "mp2amp.cli.transform"])
def test_ctrl_c_while_the_cli_package_loads_prints_the_interrupted_object(
        tmp_path: Path, module: str) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(_SIGINT_IN_IMPORT), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(hook)])
    env["RS19_HOOK"] = module
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir", "w", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=_sigint_default)
    assert "Traceback" not in proc.stderr, proc.stderr[-400:]
    assert proc.returncode == 130, proc.stderr[-400:]
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 130
    assert (doc["error"]["kind"], doc["error"]["signal"]) == ("interrupted", "SIGINT")


# --- proxies: "the lower-case no_proxy is the list read when it is set" ---------------------


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    monkeypatch.setattr(proxyenv, "_http_proxy_ignored", set())
    monkeypatch.setattr(proxyenv, "_unreadable_netrc", set())


def test_a_host_only_in_upper_case_no_proxy_still_goes_through_the_proxy_in_a_run(
        monkeypatch: pytest.MonkeyPatch, proxy_env: None) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("no_proxy", "corp.example")
    monkeypatch.setenv("NO_PROXY", "api2.amplitude.com")
    assert proxy_for("https://api2.amplitude.com/batch") == PROXY  # before the merge: right
    bypass_proxy_for_loopback()  # what `mp2amp` (cli.main) does before any command
    assert proxy_for("http://127.0.0.1:8040/batch") is None  # loopback bypassed, as promised
    assert proxy_for("https://api2.amplitude.com/batch") == PROXY


# --- the work folder: a new run refused over an old dead-letters.jsonl (no test had it) ------


def test_a_new_run_over_an_old_dead_letters_file_is_refused_before_anything_is_sent(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = cli_workspace(monkeypatch, tmp_path, KEY, _events(5))
    old = env / ".mp2amp" / "dead-letters.jsonl"
    old.parent.mkdir()
    old.write_text('{"reason": "an earlier run"}\n')
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        (env / "mp2amp.toml").write_text(
            f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n')
        run = CliRunner().invoke(app, ["migrate", "--json"], catch_exceptions=False)
        assert stored_by_source_id(url) == {}
    assert run.exit_code == 2, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc["exit_code"] == 2 and doc["error"]["kind"] == "terminal"
    assert str(old) in doc["error"]["message"]
    assert old.read_text() == '{"reason": "an earlier run"}\n'  # never replaced
    assert not (env / ".mp2amp" / "ledger.sqlite").exists()


# --- Data Pipelines part files (ORC, and names with any suffix, were not checked) ------------


def test_an_orc_part_file_in_an_event_tree_stops_the_run_naming_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = cli_workspace(monkeypatch, tmp_path, KEY)
    day = env / "dp" / "mp_master_event" / "2024" / "03" / "01"
    day.mkdir(parents=True)
    (day / "part-0").write_text(_events(3))
    (day / "part-00001-abc.c000").write_bytes(b"ORC\x0a\x03junk-stripe")
    (env / "mp2amp.toml").write_text('[source]\nfiles = ["dp/mp_master_event"]\n'
                                     '[amplitude]\napi_host = "http://127.0.0.1:9"\n')
    run = CliRunner().invoke(app, ["migrate", "--json"], catch_exceptions=False)
    assert run.exit_code == 2, run.stderr
    message = orjson.loads(run.stdout)["error"]["message"]
    assert message.startswith(f"{day / 'part-00001-abc.c000'} is an ORC file"), message


def test_part_files_of_any_name_are_read_gzip_by_content_markers_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README transform inputs: 'every part file whatever its name (part-0,
    part-00001-abc.c000, part-2.json.gzip; gzip is told by content) except completion
    markers and hidden files (Spark's .crc)'."""
    monkeypatch.chdir(tmp_path)
    day = tmp_path / "mp_master_event" / "2024" / "03" / "01"
    day.mkdir(parents=True)
    lines = _events(9).splitlines(keepends=True)
    (day / "part-0").write_text("".join(lines[:3]))
    (day / "part-00001-abc.c000").write_text("".join(lines[3:6]))
    (day / "part-2.json.gzip").write_bytes(gzip.compress("".join(lines[6:]).encode()))
    (day / ".part-0.crc").write_bytes(b"crc\x00junk")
    (day / "_SUCCESS").write_text("")
    run = CliRunner().invoke(app, ["transform", "mp_master_event", "-o", "out.jsonl", "--json"],
                             catch_exceptions=False)
    assert run.exit_code == 0, run.stderr
    summary: dict[str, Any] = orjson.loads(run.stdout)["summary"]
    assert (summary["records_read"], summary["events_out"], summary["files"]) == (9, 9, 3)
