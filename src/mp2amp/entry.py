"""The ``mp2amp`` command's entry point (``python -m mp2amp`` and the console script).

Why not ``mp2amp.cli:main`` directly: loading the CLI (typer, rich, every command's
module) takes the first ~0.4 s of each command, before any of its stop handling exists.
A Ctrl-C then printed a KeyboardInterrupt traceback and died by SIGINT (-2), where a
Ctrl-C a moment later exits 130 with a message (and, with ``--json``, the
``interrupted`` object). SIGTERM (``docker stop``, a supervisor) died silently (-15) in
that time and until a command's run installed its own handler; it now stops as Ctrl-C
does, exit 143. This module imports only the standard library before the CLI.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType
from typing import NoReturn

_WHAT_NEXT = "nothing was done yet: run the same command again"
# `migrate --resume`: "nothing was done" read as if the earlier runs' progress were gone
_RESUME_NEXT = ("this resume had not started yet (the ledger keeps what earlier runs did): "
                "run the same command again")


class _TerminatedWhileLoading(KeyboardInterrupt):
    pass


def _on_sigterm_while_loading(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedWhileLoading()


def main() -> None:
    # a SIGTERM its parent ignores (nohup, a supervisor's choice) stays ignored
    takes_sigterm = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    if takes_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm_while_loading)
    try:
        from mp2amp.cli import main as cli_main
        if takes_sigterm:
            from mp2amp.pipeline.stopping import raise_terminated
            signal.signal(signal.SIGTERM, raise_terminated)
    except KeyboardInterrupt as exc:
        _stopped_while_loading(sys.argv[1:], isinstance(exc, _TerminatedWhileLoading))
    try:
        cli_main()
    except KeyboardInterrupt as exc:  # before the command's own stop handling (cli.main)
        _stopped_while_loading(sys.argv[1:], getattr(exc, "exit_code", 130) == 143)


def _stopped_while_loading(args: list[str], sigterm: bool = False) -> NoReturn:
    what_next = _RESUME_NEXT if "--resume" in args else _WHAT_NEXT
    how, code = ("stopped (SIGTERM)", 143) if sigterm else ("interrupted", 130)
    sys.stderr.write(f"{how}; {what_next}\n")
    if "--json" in args:
        doc = {"exit_code": code, "error": {
            "kind": "interrupted", "type": "Terminated" if sigterm else "KeyboardInterrupt",
            "signal": "SIGTERM" if sigterm else "SIGINT",
            "message": f"{how}; {what_next}", "what_next": what_next}}
        # transform without --out writes its events to stdout: its objects go to stderr
        to_stderr = bool(args) and args[0] == "transform" and not any(
            a in ("-o", "--out") or a.startswith("--out=") for a in args)
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    # a second signal while exiting must not turn the announced code into a death by signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(code)
