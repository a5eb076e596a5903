"""A result blocked on its reader stays stoppable (session 24, review of e468a44).

When stdout and stderr go where nobody reads (a terminal paused with Ctrl-S, ``cmd 2>&1 |
stalled-reader``), the first Ctrl-C while the result prints is held and the second stops.
After e468a44 wrapped every human result in ``printing_result``, that second stop set
SIGINT and SIGTERM to be ignored although the result was not printed, and the stop's own
message then blocked on the same stream for good: only kill -9 ended it (``status
--json`` hung so before that too). Now the signals are ignored only after a result
printed whole, and a stream that cannot take a byte is pointed at /dev/null before the
stop is reported.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def _full_pipe() -> tuple[int, int]:
    """A pipe already full: every write to it blocks."""
    r, w = os.pipe()
    flags = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    fcntl.fcntl(w, fcntl.F_SETFL, flags)
    return r, w


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished migration's work folder to ask `status` about."""
    root = tmp_path_factory.mktemp("blocked")
    work = root / "work"
    work.mkdir()
    from mp2amp.ledger import Ledger

    Ledger(work / "ledger.sqlite").close()
    return work


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["generate", "status", "status --json"])
def test_a_second_ctrl_c_stops_a_result_blocked_on_its_reader(
        tmp_path: Path, project: Path, command: str) -> None:
    args = {"generate": ["generate", "--out", str(tmp_path / "p"), "--users", "20",
                         "--days", "1"],
            "status": ["status", "--workdir", str(project), "--windows"],
            "status --json": ["status", "--workdir", str(project), "--json"]}[command]
    r, w = _full_pipe()
    proc = subprocess.Popen([sys.executable, "-m", "mp2amp", *args], stdout=w, stderr=w,
                            stdin=subprocess.DEVNULL)
    os.close(w)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and "pipe" not in _wchan(proc.pid):
            assert time.monotonic() < deadline, "never blocked on the pipe"
            time.sleep(0.05)
        assert proc.poll() is None
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # held: the result is being printed
        time.sleep(1.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)  # "a second one stops at once"
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after a second Ctrl-C, blocked in {_wchan(proc.pid)!r}")
        assert proc.returncode == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(r)
