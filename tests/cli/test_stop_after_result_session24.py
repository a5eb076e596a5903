"""A stop that comes after a finished run printed its result changes nothing (session 24).

Found by a soak: a SIGTERM (or Ctrl-C) sent once ``migrate --json`` had printed its whole
result, but before the process had exited (it lives ~0.1-0.4 s more: unwinding, pools,
interpreter clean-up), killed it by that signal (-15 / -2; a shell or a supervisor reads
143 / 130, "stopped") although the run had finished and the ledger said so. README
(Commands): a stop while the result is printed "comes too late to stop the run: ... the
command exits with its result's code". Now the ``mp2amp`` process ignores both signals
once its result is printed (``cli.output.printing_result``), in the table output too;
in-process callers keep their handlers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mp2amp.pipeline.stopping import signals_held

KEY = "stop-after-result-key"


def _mp2amp(*args: str) -> list[str]:
    return [sys.executable, "-m", "mp2amp", *args]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A migration run to its end: each ``--resume`` of it finishes at once, exit 0."""
    root = tmp_path_factory.mktemp("after-result")
    gen = root / "gen"
    subprocess.run(_mp2amp("generate", "--out", str(gen), "--users", "30", "--days", "1",
                           "--seed", "3", "--timezone", "UTC"), check=True, capture_output=True)
    emu = subprocess.Popen(_mp2amp("emulate", "amplitude", "--port", "0", "--data",
                                   str(root / "amp"), "--api-key", KEY),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert emu.stdout is not None
        url = emu.stdout.readline().decode().strip().split()[-1]
        cfg = root / "mp2amp.toml"
        cfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{gen}/events"]\n'
                       f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{root}/work"\n')
        first = subprocess.run(_mp2amp("migrate", "-c", str(cfg), "--json", "--quiet"),
                               env=dict(os.environ, AMPLITUDE_API_KEY=KEY),
                               capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        yield cfg
    finally:
        emu.terminate()
        emu.wait(30)



def _signal_once_whole(args: list[str], signum: int, *, json_on: str = "stdout",
                       table: bool = False, last_line: bytes | None = None) -> tuple[int, bytes]:
    """Run ``mp2amp ARGS``; signal its process group the moment its result is whole (the
    JSON object on ``json_on`` parses; with ``table`` migrate's last line is out; with
    ``last_line`` the line holding it has ended on stdout)."""
    # events on stdout (transform without --out) are not read here: not a pipe that fills
    p = subprocess.Popen(_mp2amp(*args), env=dict(os.environ, AMPLITUDE_API_KEY=KEY),
                         stdout=subprocess.PIPE if json_on == "stdout" else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    stream = p.stdout if json_on == "stdout" else p.stderr
    assert stream is not None
    out = b""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, f"no whole result printed: {out[-500:]!r}"
        out += chunk
        if table or last_line is not None:
            mark = b"invariant:" if table else last_line
            if mark and mark in out and b"\n" in out[out.rfind(mark):]:
                break
            continue
        try:  # stderr may hold log lines before the object
            json.loads(out[out.find(b"{"):] if b"{" in out else out)
            break
        except ValueError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signum)  # the run is over: too late to stop it
    _, err = p.communicate(timeout=60)
    return p.returncode, err if json_on == "stdout" else out + err


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_after_the_result_is_printed_keeps_the_result_exit_code(
        finished_run: Path, signum: int, as_json: bool) -> None:
    # before the fix each of these died by the signal (-15 / -2): the process lives
    # ~0.1-0.4 s after its result is out, so one signal is enough; three to be sure
    args = ["migrate", "-c", str(finished_run), "--resume"] + (["--json"] if as_json else [])
    for _ in range(3):
        code, err = _signal_once_whole(args, signum, table=not as_json)
        assert code == 0, err.decode()[-2000:]
        assert b"interrupted" not in err


@pytest.mark.parametrize("out", [True, False], ids=["out-file", "events-on-stdout"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_transform_keeps_its_exit_code_after_a_stop_once_its_summary_is_printed(
        finished_run: Path, tmp_path: Path, signum: int, out: bool) -> None:
    """Second review: transform prints its summary inside its deferred-stop block, whose
    end put the default handlers back (exit -15 / -2, three times in three)."""
    events = finished_run.parent / "gen" / "events"
    args = ["transform", str(events), "--json", "--rejects", str(tmp_path / "r.jsonl")]
    args += ["-o", str(tmp_path / "t.jsonl")] if out else []
    for _ in range(3):
        code, err = _signal_once_whole(args, signum, json_on="stdout" if out else "stderr")
        assert code == 0, err.decode()[-2000:]
        assert b"Traceback" not in err and b"interrupted" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_status_keeps_its_exit_code_after_a_stop_once_printed(
        finished_run: Path, signum: int) -> None:
    for _ in range(3):
        code, err = _signal_once_whole(["status", "-c", str(finished_run), "--json"], signum)
        assert code == 0, err.decode()[-2000:]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["transform", "status", "generate"])
def test_a_table_result_is_the_last_word_too(finished_run: Path, tmp_path: Path,
                                             signum: int, command: str) -> None:
    """Third pass: transform's table (-15 three times in three) and status's were not held,
    nor generate's lines."""
    events = finished_run.parent / "gen" / "events"
    for n in range(3):
        args, last = {
            "transform": (["transform", str(events), "-o", str(tmp_path / "t.jsonl"),
                           "--rejects", str(tmp_path / "r.jsonl")], b"rejects: "),
            "status": (["status", "-c", str(finished_run)], b"last run: "),
            "generate": (["generate", "--out", str(tmp_path / f"g{n}"), "--users", "5",
                          "--days", "1", "--seed", "1"], b"dirt: "),
        }[command]
        code, err = _signal_once_whole(args, signum, last_line=last)
        assert code == 0, err.decode()[-2000:]
        assert b"Traceback" not in err and b"interrupted" not in err


def test_in_process_the_handlers_come_back_unless_the_result_was_the_last_word() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with signals_held(second_stops=True):
        pass
    assert {s: signal.getsignal(s) for s in before} == before  # tests and embedding
    try:
        with signals_held(second_stops=True, ignore_after=True):
            pass
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
