"""Ctrl-C during compiled (mypyc) code stops the run cleanly, never with SIGABRT.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the interpreter
checks for signals, big-integer arithmetic included, inside primitives that mypyc assumes
cannot fail: the process then died with "fatal: out of memory" (SIGABRT, a core dump)
instead of exit 130 with the previous output kept. ``stopping.signals_deferred`` notes the
signal and raises it at a safe point.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.pipeline.stopping import Terminated, signals_deferred
from mp2amp.transform.offline import transform_files

ENV_VARS = ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "MIXPANEL_SERVICE_ACCOUNT",
            "MIXPANEL_SECRET", "MP2AMP_HASH_SALT")
INTERRUPTED = ("interrupted; nothing was written (the partial outputs were removed): run "
               "the same command again")


def _slow_product() -> tuple[int, int]:
    # about a second of C with signal checks inside (CPython's x_mul), where a compiled
    # caller cannot take an exception
    return 7 ** 1_500_000, 3 ** 2_400_000


def test_a_ctrl_c_during_a_c_primitive_is_raised_after_it_not_inside() -> None:
    """The exact hazard: SIGINT lands while a multiplication checks for signals. Python's
    handler raised out of the multiplication (mypyc aborts there); now the multiplication
    finishes and the stop is raised at the next Python-level call."""
    a, b = _slow_product()
    finished = False
    started = time.monotonic()
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.2; kill -INT {os.getpid()}"])
    with pytest.raises(KeyboardInterrupt) as caught, signals_deferred():
        product = a * b
        finished = True  # an assignment, no call: nothing can raise before it
        time.sleep(5)  # the stop is raised here, at the next call
    elapsed = time.monotonic() - started
    killer.wait()
    assert finished, "KeyboardInterrupt was raised inside the multiplication"
    assert type(caught.value) is KeyboardInterrupt
    assert 0.5 < elapsed < 4, f"{elapsed:.2f} s: the signal did not come during the product"
    assert product % 7 == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_only_notes_and_the_next_check_raises() -> None:
    """With a profiler in use (the hook is not installed) only ``check()`` stops: the
    signal is noted, nothing is raised until the loop checks."""
    steps: list[int] = []
    sys.setprofile(lambda *args: None)
    try:
        with pytest.raises(KeyboardInterrupt) as caught, signals_deferred() as stop:
            for step in range(5):
                stop.check()
                steps.append(step)
                if step == 1:
                    signal.raise_signal(signal.SIGINT)  # its handler runs in here
                    steps.append(-1)  # the handler returned: noted, not raised
    finally:
        sys.setprofile(None)
    assert steps == [0, 1, -1], "the loop did not stop at the next check"
    assert type(caught.value) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_when_asked_is_noted_and_raised_as_terminated_then_ignored() -> None:
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        sys.setprofile(lambda *args: None)
        try:
            with pytest.raises(Terminated), signals_deferred(sigterm=True) as stop:
                signal.raise_signal(signal.SIGTERM)
                noted = stop.seen
                stop.check()
        finally:
            sys.setprofile(None)
        assert noted is Terminated
        # the stop is under way: a second SIGTERM must not cut its cleanup short
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_ctrl_c_after_the_last_check_still_stops_as_the_block_ends() -> None:
    sys.setprofile(lambda *args: None)
    try:
        with pytest.raises(KeyboardInterrupt), signals_deferred():
            signal.raise_signal(signal.SIGINT)
    finally:
        sys.setprofile(None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _SignalOnWrite(io.BytesIO):
    """An events sink that sends SIGINT to this process on its ``at``-th write."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.writes, self.returned = at, 0, False

    def write(self, data: Any) -> int:
        self.writes += 1
        written = super().write(data)
        if self.writes == self.at:
            signal.raise_signal(signal.SIGINT)
            self.returned = True
        return written


def test_transform_files_stops_at_the_next_record_with_keyboard_interrupt(
    tmp_path: Path,
) -> None:
    lines = [orjson.dumps({"event": "Page View", "properties": {
        "time": 1_700_000_000 + i, "distinct_id": f"u{i % 7}", "$insert_id": f"iid-{i}"}})
        for i in range(50)]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = load_config(None, {"run.workdir": str(tmp_path / "work"),
                                "mixpanel.timezone": "UTC"}, env={})
    out = _SignalOnWrite(at=3)
    sys.setprofile(lambda *args: None)  # only the loop's own check() can stop it
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            transform_files(config, [str(tmp_path / "in.jsonl")], out, io.BytesIO())
    finally:
        sys.setprofile(None)
    assert type(caught.value) is KeyboardInterrupt
    assert out.returned, "the SIGINT was raised inside the write, not at the next check"
    assert out.writes == 3, "the loop went on past the next record"
    assert not (tmp_path / "work").exists(), "the scratch folder was left behind"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- a real process -----------------------------------------------------------------------

RUNS = 20
BUDGET_S = 36.0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mp2amp.generate import GenerateConfig, generate_project

    root = tmp_path_factory.mktemp("ctrl-c")
    generate_project(GenerateConfig(out=root / "p", users=2500, days=7, seed=3, dirty=0.0,
                                    gzip=False))
    return root


def _in_pass_two(root: Path, out: str = "out.jsonl") -> subprocess.Popen[bytes]:
    """``mp2amp transform`` started, once its pass 2 is writing."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "transform", "p/events", "--out", out],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = root / f".{out}.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size > 0:  # pass 2 is writing
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    return proc


def _pass_two_seconds(root: Path) -> float:
    """How long pass 2 runs here, uninterrupted (into another output): the SIGINTs are
    spread over it, so a fast machine never finishes before the signal comes."""
    proc = _in_pass_two(root, "timing.jsonl")
    started = time.monotonic()
    proc.communicate(timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode == 0
    for made in root.glob("timing.jsonl*"):  # the outputs the test looks for are others
        made.unlink()
    return seconds


def _interrupt_in_pass_two(root: Path, delay: float) -> tuple[int, str]:
    proc = _in_pass_two(root)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def test_real_ctrl_c_at_many_points_of_pass_two_always_exits_130(project: Path) -> None:
    """SIGINT at varied moments of pass 2 (seeded): every run exits 130 with the message,
    the previous output kept and nothing left; never SIGABRT ("fatal: out of memory")."""
    previous = b'{"previous": "run"}\n'
    (project / "out.jsonl").write_bytes(previous)
    (project / "out.jsonl.rejects.jsonl").write_bytes(b"")
    # 0 .. 0.86 s, within the first half of pass 2 wherever that is shorter (a quiet, fast
    # machine finished pass 2 before a SIGINT 0.855 s in: exit 0)
    step = min(0.045, 0.5 * _pass_two_seconds(project) / RUNS)
    delays = random.Random(19).sample([i * step for i in range(RUNS)], RUNS)
    started = time.monotonic()
    for ran, delay in enumerate(delays):
        if ran >= 8 and time.monotonic() - started > BUDGET_S:
            break  # a loaded machine: at least 8 runs, within the budget
        code, err = _interrupt_in_pass_two(project, delay)
        where = f"SIGINT {delay:.3f} s into pass 2: exit {code}\n{err}"
        assert code != -signal.SIGABRT and "fatal" not in err, where
        assert code == 130, where
        assert INTERRUPTED in " ".join(err.split()), where
        assert "Traceback" not in err, where
        assert (project / "out.jsonl").read_bytes() == previous, where
        assert sorted(p.name for p in project.iterdir()) == [
            "out.jsonl", "out.jsonl.rejects.jsonl", "p"], where
