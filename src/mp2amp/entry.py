"""The ``mp2amp`` command's entry point (``python -m mp2amp`` and the console script).

Why not ``mp2amp.cli:main`` directly: loading the CLI (typer, rich, every command's
module) takes the first ~0.4 s of each command, before any of its stop handling exists.
A Ctrl-C then printed a KeyboardInterrupt traceback and died by SIGINT (-2), where a
Ctrl-C a moment later exits 130 with a message (and, with ``--json``, the
``interrupted`` object). This module imports only the standard library before the CLI.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

_WHAT_NEXT = "nothing was done yet: run the same command again"
# `migrate --resume`: "nothing was done" read as if the earlier runs' progress were gone
_RESUME_NEXT = ("this resume had not started yet (the ledger keeps what earlier runs did): "
                "run the same command again")


def main() -> None:
    try:
        from mp2amp.cli import main as cli_main
    except KeyboardInterrupt:
        _stopped_while_loading(sys.argv[1:])
    cli_main()


def _stopped_while_loading(args: list[str]) -> NoReturn:
    what_next = _RESUME_NEXT if "--resume" in args else _WHAT_NEXT
    sys.stderr.write(f"interrupted; {what_next}\n")
    if "--json" in args:
        doc = {"exit_code": 130, "error": {
            "kind": "interrupted", "type": "KeyboardInterrupt", "signal": "SIGINT",
            "message": f"interrupted; {what_next}", "what_next": what_next}}
        # transform without --out writes its events to stdout: its objects go to stderr
        to_stderr = bool(args) and args[0] == "transform" and not any(
            a in ("-o", "--out") or a.startswith("--out=") for a in args)
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    raise SystemExit(130)
