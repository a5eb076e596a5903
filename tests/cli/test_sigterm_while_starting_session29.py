"""SIGTERM in a command's first moments stops it as Ctrl-C does: exit 143 and a message.

Before: from the moment ``entry.main`` began loading the CLI (~0.4 s) until a run's
event loop installed its own handler, SIGTERM (``docker stop``, a supervisor) killed the
process silently (-15 to its parent, nothing on stderr), and a Ctrl-C or SIGTERM between
the CLI's load and the command's own stop handling exited 130 with nothing said (typer
turns a ``KeyboardInterrupt`` into a silent 130).

Each case runs ``entry.main`` in a subprocess whose SIGTERM is sent to itself at the
moment under test, so the timing is exact rather than raced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Sent at the moment the CLI package starts loading (a meta-path finder sees it first)
WHILE_LOADING = """
import importlib.abc
class Kill(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mp2amp.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), SIGNAL)
        return None
sys.meta_path.insert(0, Kill())
"""

# Sent inside the command, before its own stop handling (its ``cli_errors`` block)
BEFORE_COMMAND_HANDLING = """
import contextlib
import mp2amp.cli.migrate as cli_migrate
@contextlib.contextmanager
def killed(*args, **kwargs):
    os.kill(os.getpid(), SIGNAL)
    yield
cli_migrate.cli_errors = killed
"""


def _run(tmp: Path, setup: str, args: list[str], signal_name: str = "SIGTERM",
         ) -> subprocess.CompletedProcess[str]:
    # SIGTERM at its default, as a shell starts a command (a test before this one in the
    # same worker may have left it ignored, and a child inherits that)
    script = (f"import os, signal, sys\nSIGNAL = signal.{signal_name}\n"
              f"signal.signal(signal.SIGTERM, signal.SIG_DFL)\n{setup}\n"
              f"sys.argv = ['mp2amp', *{args!r}]\nfrom mp2amp import entry\nentry.main()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXPANEL_", "AMPLITUDE_"))}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)


def _stop_object(stdout: str) -> dict[str, object]:
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("setup", [WHILE_LOADING, BEFORE_COMMAND_HANDLING],
                         ids=["while the CLI loads", "before the command's stop handling"])
def test_sigterm_at_start_exits_143_saying_nothing_was_done(tmp_path: Path, setup: str) -> None:
    done = _run(tmp_path, setup, ["status", "--workdir", "W", "--json"]
                if setup is WHILE_LOADING else ["migrate", "--json", "-c", "none.toml"])
    what_next = "nothing was done yet: run the same command again"
    assert (done.returncode, done.stderr) == (143, f"stopped (SIGTERM); {what_next}\n")
    assert _stop_object(done.stdout) == {"exit_code": 143, "error": {
        "kind": "interrupted", "type": "Terminated", "signal": "SIGTERM",
        "message": f"stopped (SIGTERM); {what_next}", "what_next": what_next}}


def test_sigterm_before_a_resume_starts_says_the_ledger_keeps_earlier_runs(
        tmp_path: Path) -> None:
    done = _run(tmp_path, BEFORE_COMMAND_HANDLING, ["migrate", "--resume", "-c", "none.toml"])
    assert (done.returncode, done.stderr, done.stdout) == (
        143, "stopped (SIGTERM); this resume had not started yet (the ledger keeps what "
             "earlier runs did): run the same command again\n", "")


def test_ctrl_c_before_the_command_handles_stops_is_reported_too(tmp_path: Path) -> None:
    # was a silent 130 (typer's), now the same words as a Ctrl-C while the CLI loads
    done = _run(tmp_path, BEFORE_COMMAND_HANDLING, ["migrate", "-c", "none.toml"], "SIGINT")
    assert (done.returncode, done.stderr) == (
        130, "interrupted; nothing was done yet: run the same command again\n")


def test_an_ignored_sigterm_stays_ignored(tmp_path: Path) -> None:
    # nohup or a supervisor that ignores SIGTERM for its child: the command runs on
    setup = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + WHILE_LOADING
    done = _run(tmp_path, setup, ["status", "--workdir", "W"])
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no migration in "), done.stderr
