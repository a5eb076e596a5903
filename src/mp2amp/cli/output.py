"""Shared CLI plumbing: print results as JSON or text, turn mp2amp errors into exit codes."""

from __future__ import annotations

import dataclasses
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


JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS


def json_text(result: Any) -> str:
    """``result`` as one indented JSON document. A text JSON cannot carry (a lone
    surrogate in a property name, which real exports hold) is written with the surrogate
    escaped as ``\\udXXX``, as the ledger and the rejects file have it: the run's result
    is printed, never a traceback."""
    try:
        return orjson.dumps(result, option=JSON_OPTIONS, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: "str is not valid UTF-8: surrogates ..."
        return orjson.dumps(_escaped(result), option=JSON_OPTIONS,
                            default=lambda value: _escaped(str(value))).decode()


def _escaped(value: Any) -> Any:
    """``value`` with every text (keys included) made encodable as UTF-8."""
    from mp2amp.ledger.sqlite_io import storable  # here: only a rare result needs it

    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_escaped(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _escaped(dataclasses.asdict(value))
    return value


def print_json(result: Any) -> None:
    """Print a structured result as one JSON document on stdout."""
    sys.stdout.write(json_text(result) + "\n")
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
