"""A Ctrl-C while a table result prints to a slow reader does not cut it short (session 25,
review of 09080a8).

JSON results were written with ``os.write`` to their last byte, but the tables people read
went through ``sys.stdout``'s buffered writer: a held Ctrl-C while that writer waited on a
full pipe made it return as if done, the rest dropped. ``status --windows`` with 3000
windows showed 471 rows and exited 0. Now a rendered result is written whole as well.
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

WINDOWS = 3000


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def many_windows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder whose ledger plans ``WINDOWS`` day windows."""
    from mp2amp.ledger import Ledger

    work = tmp_path_factory.mktemp("many") / "work"
    work.mkdir()
    ledger = Ledger(work / "ledger.sqlite")
    ledger.add_windows([(f"w{i:05d}", "day", {}) for i in range(WINDOWS)])
    ledger.close()
    return work


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux /proc")
def test_a_held_ctrl_c_does_not_cut_a_table_result_short(many_windows: Path) -> None:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)  # the table fills it: the writer blocks
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "status", "--workdir", str(many_windows),
         "--windows"], stdout=w, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"})
    os.close(w)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and "pipe" not in _wchan(proc.pid):
            assert time.monotonic() < deadline, "never blocked on the pipe"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # held: the result is being printed
        time.sleep(0.5)
        while chunk := os.read(r, 65536):  # the reader comes back and reads to the end
            chunks.append(chunk)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(r)
    text = b"".join(chunks).decode()
    shown = [i for i in range(WINDOWS) if f"w{i:05d}" in text]
    assert len(shown) == WINDOWS, f"{len(shown)} of {WINDOWS} windows shown"
