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


def main() -> None:
    try:
        from mp2amp.cli import main as cli_main
    except KeyboardInterrupt:
        _stopped_while_loading(sys.argv[1:])
    cli_main()


def _stopped_while_loading(args: list[str]) -> NoReturn:
    sys.stderr.write(f"interrupted; {_WHAT_NEXT}\n")
    if "--json" in args:
        doc = {"exit_code": 130, "error": {
            "kind": "interrupted", "type": "KeyboardInterrupt", "signal": "SIGINT",
            "message": f"interrupted; {_WHAT_NEXT}", "what_next": _WHAT_NEXT}}
        # transform without --out writes its events to stdout: its objects go to stderr
        to_stderr = bool(args) and args[0] == "transform" and not any(
            a in ("-o", "--out") or a.startswith("--out=") for a in args)
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    raise SystemExit(130)
