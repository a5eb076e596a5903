"""Shared CLI plumbing: print results as JSON or text, turn mp2amp errors into exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from mp2amp.errors import Mp2AmpError

# Messages are never hard-wrapped: a file path, URL or window name broken across lines
# cannot be copied (tables still fit the width).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_json(result: Any) -> None:
    """Print a structured result as one JSON document on stdout."""
    sys.stdout.write(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()
        + "\n"
    )
    sys.stdout.flush()


@contextmanager
def cli_errors(interrupted: Callable[[], str] | None = None) -> Iterator[None]:
    """Print an mp2amp error as a clear message (never a traceback) and exit with its code.

    Ctrl-C exits 130, SIGTERM 143 where the command turns it into ``Terminated``
    (``migrate``); ``interrupted`` says what was kept and how to go on."""
    try:
        yield
    except Mp2AmpError as exc:
        # escaped: messages name config sections such as "[run] workdir", which rich
        # would otherwise swallow as markup tags
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True,
                          highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code or 1) from None
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", 130)  # stopping.Terminated: 143
        how = "stopped (SIGTERM)" if code != 130 else "interrupted"
        hint = interrupted() if interrupted is not None else \
            "progress so far is kept (resume where supported)"
        err_console.print(f"{how}; {hint}", markup=False, highlight=False)
        raise typer.Exit(code) from None


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``result`` with ``--json`` or through ``render`` for people."""
    if as_json:
        print_json(result)
    else:
        render(result)
