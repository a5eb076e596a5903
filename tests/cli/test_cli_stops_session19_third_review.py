"""Third review of the CLI's stops and output handling (session 19): the result printed with
signals held, a full stdout, generate's ``.partial`` folder, SIGTERM in ``transform``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from mp2amp.generate import GenerateConfig, generate_project
from mp2amp.ledger import Ledger
from shared_kit import SECRET_ENV

SRC = Path(__file__).resolve().parents[2] / "src"


def _env(*extra: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *map(str, extra), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _sigint_default() -> None:  # a background job's children start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _mp2amp(args: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], cwd=cwd, env=_env(),
                          text=True, timeout=120, **kw)  # type: ignore[call-overload]


def _events(n: int) -> str:
    return "".join(json.dumps({"event": "Page View", "properties": {
        "time": 1_709_251_200 + i * 60, "distinct_id": f"user-{i % 7}",
        "$insert_id": f"ins-{i}"}}) + "\n" for i in range(n))


def _ledger(workdir: Path, windows: int) -> None:
    workdir.mkdir()
    ledger = Ledger(workdir / "ledger.sqlite")
    ledger.add_windows([(f"2024-01-01T{i:05d}", "day", {}) for i in range(windows)])
    ledger.close()


# --- a stop while the result is printed to a slow reader -----------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_a_big_result_prints_to_a_slow_reader_prints_it_whole(
        tmp_path: Path, signum: int) -> None:
    _ledger(tmp_path / "w", 3000)  # status --json: ~1 MB, far more than a pipe holds
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "mp2amp", "status", "--workdir", "w",
                             "--json"], cwd=tmp_path, env=_env(), stdout=write,
                            stderr=subprocess.PIPE, preexec_fn=_sigint_default)
    os.close(write)
    try:
        deadline = time.monotonic() + 30
        while "pipe_write" not in Path(f"/proc/{proc.pid}/wchan").read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)  # blocked writing the document: the reader is slow
        proc.send_signal(signum)
        time.sleep(0.3)
        data = b""
        while chunk := os.read(read, 1 << 20):  # the slow reader reads now, to the end
            data += chunk
        code = proc.wait(30)
    finally:
        os.close(read)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode()
    # README: the object is printed whole and the command exits with its result's code
    assert code == 0, stderr
    assert len(json.loads(data)["windows"]) == 3000, len(data)


# --- a result that is not JSON, to a full stdout ---------------------------------------------


@pytest.mark.parametrize("command", ["generate", "status", "transform"])
def test_a_table_to_a_full_stdout_is_a_clear_error(tmp_path: Path, command: str) -> None:
    args = {"generate": ["generate", "--out", "p", "--users", "20", "--days", "1"],
            "status": ["status", "--workdir", "w"],
            "transform": ["transform", "in.jsonl", "-o", "out.jsonl"]}[command]
    _ledger(tmp_path / "w", 2)
    (tmp_path / "in.jsonl").write_text(_events(3), encoding="utf-8")
    with open("/dev/full", "w") as full:
        proc = _mp2amp(args, tmp_path, stdout=full, stderr=subprocess.PIPE)
    assert "Traceback" not in proc.stderr, proc.stderr[-400:]
    assert proc.stderr.startswith("error: cannot write the result to stdout: No space left "
                                  "on device"), proc.stderr
    assert proc.returncode == 2


# --- generate's .partial folder ----------------------------------------------------------------


def test_generate_never_deletes_a_users_file_in_a_partial_folder(tmp_path: Path) -> None:
    mine = tmp_path / "p" / ".partial" / "events" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine", encoding="utf-8")
    proc = _mp2amp(["generate", "--out", "p", "--users", "20", "--days", "1"], tmp_path,
                   capture_output=True)
    # README: "a .partial holding anything else is never touched (--out is refused)"
    assert mine.is_file(), f"deleted; exit {proc.returncode}"
    assert proc.returncode == 2


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_into_the_current_folder_writes_the_same_bytes(tmp_path: Path) -> None:
    """Guard: moved out of .partial, the project is byte for byte the one generated in
    place, with the documented layout and nothing else."""
    generate_project(GenerateConfig(out=tmp_path / "direct", users=30, days=2,
                                    start=date(2024, 1, 1), seed=5))
    (tmp_path / "here").mkdir()
    proc = _mp2amp(["generate", "--out", ".", "--users", "30", "--days", "2", "--seed", "5",
                    "--json"], tmp_path / "here", capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out"] == "."
    assert _tree(tmp_path / "here") == _tree(tmp_path / "direct")
    assert sorted(_tree(tmp_path / "here")) == [
        "events/2024-01-01.jsonl.gz", "events/2024-01-02.jsonl.gz",
        "identity/mappings.jsonl.gz", "profiles/groups/company_id.jsonl.gz",
        "profiles/users.jsonl.gz", "project.json", "schema.json", "truth/daily_counts.json",
        "truth/event_person.tsv.gz", "truth/metrics.json", "truth/summary.json"]


# --- SIGTERM in transform ---------------------------------------------------------------------

_SIGTERM_AT_OPEN = """
import builtins, os, signal
_open = builtins.open
def open(file, *a, **k):
    handle = _open(file, *a, **k)
    if str(file).endswith(".out.jsonl.rejects.jsonl.partial"):
        builtins.open = _open
        os.kill(os.getpid(), signal.SIGTERM)  # docker stop as the run starts writing
    return handle
builtins.open = open
"""


_SIGTERM_AT_RENAME = """
import os, signal
_replace = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith("out.jsonl"):
        os.replace = _replace
        os.kill(os.getpid(), signal.SIGTERM)  # between the two renames
    return _replace(src, dst, *a, **k)
os.replace = replace
"""


def _transform_with_hook(tmp_path: Path, hook: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(hook, encoding="utf-8")
    (tmp_path / "in.jsonl").write_text(_events(50), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "mp2amp", "transform", "in.jsonl", "-o",
                           "out.jsonl", "--json"], cwd=tmp_path, env=_env(tmp_path / "hook"),
                          capture_output=True, text=True, timeout=120)


def test_sigterm_during_transform_is_a_stop_that_removes_the_partial_files(
        tmp_path: Path) -> None:
    proc = _transform_with_hook(tmp_path, _SIGTERM_AT_OPEN)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial"))
    assert leftovers == [], f"exit {proc.returncode}: {leftovers}"
    assert proc.returncode == 143, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["error"]["kind"], doc["error"]["signal"]) == ("interrupted", "SIGTERM")


def test_sigterm_between_transforms_renames_ends_complete(tmp_path: Path) -> None:
    """Guard: README, both files are renamed with SIGTERM held, the run ends complete."""
    proc = _transform_with_hook(tmp_path, _SIGTERM_AT_RENAME)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["events_out"] == 50
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 50
    assert (tmp_path / "out.jsonl.rejects.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


_SIGTERM_IN_TRANSFORM = """
import os, signal, tempfile
_init = tempfile.TemporaryDirectory.__init__
def init(self, *a, **k):
    _init(self, *a, **k)
    if k.get("prefix") == "transform-":  # transform_files starts: its scratch folder
        tempfile.TemporaryDirectory.__init__ = _init
        os.kill(os.getpid(), signal.SIGTERM)
tempfile.TemporaryDirectory.__init__ = init
"""


def test_sigterm_during_transform_to_stdout_is_a_stop(tmp_path: Path) -> None:
    """Without -o the events go to stdout: SIGTERM inside transform_files stops the run
    with 143, the interrupted object on stderr (after the message) and no rejects file."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_SIGTERM_IN_TRANSFORM,
                                                         encoding="utf-8")
    (tmp_path / "in.jsonl").write_text(_events(50), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "in.jsonl", "--json"],
                          cwd=tmp_path, env=_env(tmp_path / "hook"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    message, _, doc = proc.stderr.partition("\n")
    assert message == ("stopped (SIGTERM); the events written to stdout so far are "
                       "incomplete, do not load them; the rejects file was removed: run the "
                       "same command again")
    assert json.loads(doc)["error"]["signal"] == "SIGTERM"
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mp2amp", "hook", "in.jsonl"]
    assert not [p for p in (tmp_path / ".mp2amp").rglob("*") if "transform-" in str(p)]


_TRANSFORM_FILES = """
import io, sys
from pathlib import Path
from mp2amp.config import load_config
from mp2amp.pipeline.stopping import Terminated
from mp2amp.transform.offline import transform_files
try:
    transform_files(load_config(), [sys.argv[1]], io.BytesIO(), io.BytesIO())
except Terminated:
    print("Terminated")
"""


def test_sigterm_in_transform_files_raises_terminated(tmp_path: Path) -> None:
    """The library call, not only the CLI: SIGTERM becomes ``Terminated`` (between
    records), which its caller cleans up after, not a silent death (-15)."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_SIGTERM_IN_TRANSFORM,
                                                         encoding="utf-8")
    (tmp_path / "in.jsonl").write_text(_events(50), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", _TRANSFORM_FILES, "in.jsonl"], cwd=tmp_path,
                          env=_env(tmp_path / "hook"), capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "Terminated\n"), proc.stderr


def test_generate_refuses_a_partial_that_is_a_symlink(tmp_path: Path) -> None:
    """A ``.partial`` symlink is refused, never followed: what it points at is kept (a
    tree that looks generated), and the refusal is a message, not a traceback."""
    elsewhere = tmp_path / "elsewhere" / "events" / "2024-01-01.jsonl.gz"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"mine")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ".partial").symlink_to(tmp_path / "elsewhere")
    proc = _mp2amp(["generate", "--out", "p", "--users", "20", "--days", "1"], tmp_path,
                   capture_output=True)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--out p exists and is not an empty directory" in proc.stderr
    assert elsewhere.read_bytes() == b"mine"
    assert (tmp_path / "p" / ".partial").is_symlink()


def test_generate_refuses_a_partial_holding_a_symlink(tmp_path: Path) -> None:
    """A symlink named as a generated file is not one: the ``.partial`` is kept."""
    (tmp_path / "mine.json").write_text("{}", encoding="utf-8")
    (tmp_path / "p" / ".partial").mkdir(parents=True)
    (tmp_path / "p" / ".partial" / "project.json").symlink_to(tmp_path / "mine.json")
    proc = _mp2amp(["generate", "--out", "p", "--users", "20", "--days", "1"], tmp_path,
                   capture_output=True)
    assert proc.returncode == 2, proc.stderr
    assert (tmp_path / "p" / ".partial" / "project.json").is_symlink()


def test_generate_clears_a_killed_generations_whole_tree(tmp_path: Path) -> None:
    """Guard: a .partial holding only what a generation writes, at every depth, is still
    removed and the run goes on."""
    partial = tmp_path / "p" / ".partial"
    for name in ("events/2024-01-01.jsonl", "profiles/groups/company_id.jsonl.gz",
                 "truth/event_person.tsv.gz", "schema.json"):
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        (partial / name).write_bytes(b"cut")
    (partial / "identity").mkdir()
    proc = _mp2amp(["generate", "--out", "p", "--users", "20", "--days", "1"], tmp_path,
                   capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert not partial.exists()
    assert (tmp_path / "p" / "project.json").is_file()
