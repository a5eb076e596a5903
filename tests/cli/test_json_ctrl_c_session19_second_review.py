"""Second review of session 19's ``--json`` error objects and Ctrl-C deferral.

Signals are real: sent to the child's PID with ``os.kill`` (the child gets SIGINT's
default disposition back even when this runner was started as a background job, which
ignores SIGINT), or sent by the child to itself at an exact point through a
``sitecustomize`` hook put on its ``PYTHONPATH`` (only the moment is chosen; the signal,
its handlers and the code it lands in are the real ones).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from shared_kit import SECRET_ENV, amplitude_emulator

KEY = "session19-second-review-key"
SRC = Path(__file__).resolve().parents[2] / "src"


def _env(hook_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    paths = [str(SRC)] + ([str(hook_dir)] if hook_dir is not None else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def _sigint_default() -> None:  # a background job's children start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _hook(tmp_path: Path, code: str) -> Path:
    """A folder holding a ``sitecustomize.py`` that runs ``code`` in the child at start."""
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return folder


def _mp2amp(args: list[str], cwd: Path, env: dict[str, str], **kw: Any
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=_sigint_default, **kw)


def _events(n: int, start: int = 1_709_251_200) -> str:
    return "".join(json.dumps({"event": "Page View", "properties": {
        "time": start + i * 60, "distinct_id": f"user-{i % 7:03d}",
        "$insert_id": f"ins-{i}"}}) + "\n" for i in range(n))


# --- Ctrl-C landing on transform's final renames ---------------------------------------------

# SIGINT sent to the process itself right after the rejects file is renamed into place,
# i.e. as the run ends, before the events file is renamed (the "final rename" of --out)
_SIGINT_AFTER_REJECTS_RENAME = """
import os, signal
if os.environ.get("SR19_HOOK") == "1":
    _replace = os.replace
    def replace(src, dst, *a, **k):
        done = _replace(src, dst, *a, **k)
        if str(dst).endswith("rejects.jsonl"):
            os.kill(os.getpid(), signal.SIGINT)
        return done
    os.replace = replace
"""


def test_ctrl_c_between_the_two_final_renames_keeps_outputs_consistent(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(_events(40) + "not json\n", encoding="utf-8")
    old_out, old_rejects = '{"previous": "events"}\n', '{"previous": "rejects"}\n'
    (tmp_path / "out.jsonl").write_text(old_out)
    (tmp_path / "out.jsonl.rejects.jsonl").write_text(old_rejects)
    env = _env(_hook(tmp_path, _SIGINT_AFTER_REJECTS_RENAME), SR19_HOOK="1")
    proc = _mp2amp(["transform", "in.jsonl", "-o", "out.jsonl", "--json"], tmp_path, env)
    assert proc.returncode in (0, 130), proc.stderr
    assert "Traceback" not in proc.stderr
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("hook", "in.jsonl"))
    out = (tmp_path / "out.jsonl").read_text()
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_text()
    if proc.returncode == 130:
        # README: "the previous --out and rejects files are kept and the partial ones
        # removed"; the message says "nothing was written (the partial outputs were removed)"
        assert json.loads(proc.stdout)["exit_code"] == 130
        assert (out, rejects) == (old_out, old_rejects), (out[:80], rejects[:80])
        assert left == ["out.jsonl", "out.jsonl.rejects.jsonl"], left
    else:  # or the run is counted as done: both outputs new, nothing left over
        assert out != old_out and rejects != old_rejects
        assert left == ["out.jsonl", "out.jsonl.rejects.jsonl"], left


# --- generate stopped halfway ---------------------------------------------------------------


def _stop_generate(tmp_path: Path, sig: int) -> tuple[subprocess.Popen[str], str, str]:
    """``mp2amp generate --json`` sent ``sig`` once its second day file is being written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "generate", "--out", "p", "--users", "20000",
         "--days", "7", "--json"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    # generate writes into --out/.partial, whose files are moved into --out at the end
    # (session 19 fix: a stop removes it); the second day file is looked for in either
    second = [tmp_path / "p" / sub / "events" / "2024-01-02.jsonl.gz" for sub in (".partial", "")]
    deadline = time.monotonic() + 60
    while not any(p.exists() for p in second) and proc.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "generate ended before it could be stopped"
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    return proc, out, err


def test_ctrl_c_during_generate_removes_the_partial_project(tmp_path: Path) -> None:
    proc, out, err = _stop_generate(tmp_path, signal.SIGINT)
    assert proc.returncode == 130, err
    assert json.loads(out)["exit_code"] == 130
    assert not (tmp_path / "p" / "project.json").exists()
    # README (transform): "Ctrl-C stops the run between two records (exit 130): the
    # previous --out and rejects files are kept and the partial ones removed. The same
    # holds for `mp2amp generate`"
    again = _mp2amp(["generate", "--out", "p", "--users", "50", "--days", "1", "--json"],
                    tmp_path, _env())
    assert again.returncode == 0, (err, again.stderr)


def test_sigterm_during_generate_stops_with_143_and_one_object(tmp_path: Path) -> None:
    proc, out, err = _stop_generate(tmp_path, signal.SIGTERM)
    assert proc.returncode == 143, (proc.returncode, err)
    doc = json.loads(out)
    assert doc["exit_code"] == 143 and doc["error"]["signal"] == "SIGTERM"


# --- a failure while writing stdout ---------------------------------------------------------


def test_transform_events_to_a_full_stdout_stop_with_an_error_object(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(_events(3000), encoding="utf-8")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "in.jsonl",
                               "--json"], cwd=tmp_path, env=_env(), stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr[-600:]
    assert proc.returncode == 2
    # stdout carries the events: the object goes to stderr, after the error line
    doc = json.loads(proc.stderr[proc.stderr.index("\n{") + 1:])
    assert doc["exit_code"] == 2 and doc["error"]["kind"] == "terminal"
    assert not (tmp_path / "rejects.jsonl").exists()


def _migrate_config(folder: Path, url: str) -> Path:
    (folder / "events").mkdir()
    (folder / "events" / "2024-03-01.jsonl").write_text(_events(30))
    cfg = folder / "mp2amp.toml"
    cfg.write_text(f'[source]\nfiles = ["events"]\n[amplitude]\napi_host = "{url}"\n'
                   '[run]\nworkdir = "work"\n', encoding="utf-8")
    return cfg


def test_migrate_json_to_a_closed_stdout_keeps_the_runs_exit_code(tmp_path: Path) -> None:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = _migrate_config(tmp_path, url)
        read, write = os.pipe()
        os.close(read)  # `mp2amp migrate --json | some-reader-that-died`
        try:
            proc = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                                   "--json"], cwd=tmp_path, env=_env(AMPLITUDE_API_KEY=KEY),
                                  stdout=write, stderr=subprocess.PIPE, text=True,
                                  timeout=120)
        finally:
            os.close(write)
    status = _mp2amp(["status", "-c", str(cfg), "--json"], tmp_path, _env())
    assert json.loads(status.stdout)["totals"]["balanced"] is True  # the run itself was fine
    assert "Traceback" not in proc.stderr
    # 0 (the run's own code) or 141 as transform does for a closed stdout; 1 tells a
    # script that a window does not add up
    assert proc.returncode in (0, 141), (proc.returncode, proc.stderr)


def test_ctrl_c_while_the_result_is_written_prints_one_document(tmp_path: Path) -> None:
    import fcntl

    read, write = os.pipe()
    size = fcntl.fcntl(write, 1032)  # F_GETPIPE_SZ: the pipe is full, the reader is slow
    os.write(write, b"x" * size)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "generate", "--out", "p", "--users", "50", "--days",
         "1", "--json"], cwd=tmp_path, env=_env(), stdout=write, stderr=subprocess.PIPE,
        text=True, preexec_fn=_sigint_default)
    os.close(write)
    try:
        deadline = time.monotonic() + 60
        blocked = False
        while not blocked and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            with open(f"/proc/{proc.pid}/wchan") as wchan:  # waiting to write its result
                blocked = "pipe_write" in wchan.read() and \
                    (tmp_path / "p" / "project.json").exists()
        assert blocked, "generate did not block writing its result"
        os.kill(proc.pid, signal.SIGINT)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
    finally:
        os.close(read)
    proc.wait(timeout=60)
    stdout = b"".join(chunks)[size:].decode()
    assert "Traceback" not in proc.stderr.read()
    doc = json.loads(stdout)  # one document: "Extra data" when a second follows
    assert doc.get("exit_code", 0) == proc.returncode


# --- Ctrl-C before cli_errors is entered ----------------------------------------------------

_SIGINT_IN_IMPORT = """
import os, signal, sys
if os.environ.get("SR19_HOOK"):
    class _Finder:
        def find_spec(self, name, path=None, target=None):
            if name == os.environ["SR19_HOOK"]:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, _Finder())
"""


@pytest.mark.parametrize("command, module", [
    (["demo", "--events", "1000", "--quiet"], "mp2amp.pipeline.demo"),
    (["migrate", "-c", "missing.toml"], "mp2amp.pipeline.migrate"),
])
def test_ctrl_c_as_the_command_starts_prints_one_object(tmp_path: Path, command: list[str],
                                                        module: str) -> None:
    env = _env(_hook(tmp_path, _SIGINT_IN_IMPORT), SR19_HOOK=module)
    proc = _mp2amp([*command, "--json"], tmp_path, env)
    assert proc.returncode == 130, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 130 and doc["error"]["kind"] == "interrupted"


# --- Ctrl-C during demo's read-back ---------------------------------------------------------

# SIGINT 50 ms after the read-back asks the Amplitude emulator's Export API (the answer
# is still being built): a Ctrl-C pressed while the demo reads Amplitude back
_SIGINT_DURING_EXPORT = """
import os, signal, threading, urllib.request
if os.environ.get("SR19_HOOK") == "export":
    _urlopen = urllib.request.urlopen
    def urlopen(req, *a, **k):
        url = req.full_url if hasattr(req, "full_url") else str(req)
        if "/api/2/export" in url:
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        return _urlopen(req, *a, **k)
    urllib.request.urlopen = urlopen
"""


def test_ctrl_c_during_demo_read_back_prints_no_traceback(tmp_path: Path) -> None:
    env = _env(_hook(tmp_path, _SIGINT_DURING_EXPORT), SR19_HOOK="export")
    proc = _mp2amp(["demo", "--events", "1000", "--workdir", "d", "--json", "--quiet"],
                   tmp_path, env)
    assert proc.returncode == 130, proc.stderr[-800:]
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 130 and doc["error"]["kind"] == "interrupted"
    assert "Traceback" not in proc.stderr, proc.stderr[-800:]
    assert proc.stderr.startswith("interrupted; the demo's folder"), proc.stderr[:300]
