"""Shared CLI plumbing: print results as JSON or text, turn mp2amp errors into exit codes."""

from __future__ import annotations

import codecs
import dataclasses
import os
import select
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, TextIO, cast

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from mp2amp.errors import Mp2AmpError, RejectedRecord, TerminalError, TransientError
from mp2amp.pipeline.stopping import signals_held


def stdout_nowhere(stream: IO[str] | None = None) -> None:
    """Point a closed or failing stdout (or ``stream``) at /dev/null: the interpreter's last
    flush would fail again and print "Exception ignored" (no real file in a test runner)."""
    with suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), (stream or sys.stdout).fileno())


class StdoutConsole(Console):
    """A console whose closed stdout (``| head``, a reader that died) ends its output
    quietly: the command still exits with its own code (rich would exit 1, the code of
    "a window does not add up")."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        stdout_nowhere()

    def _check_buffer(self) -> None:
        # rich handles a closed pipe only: a full disk (`> /dev/full`) would end in a
        # traceback, exit 1, where the --json result gets a message and exit 2
        try:
            super()._check_buffer()
        except OSError as exc:
            del self._buffer[:]  # never written again: stdout goes nowhere below
            raise unwritable_result(exc, self.file) from None


# Messages are never hard-wrapped: a file path, URL or window name broken across lines
# cannot be copied (tables still fit the width).
console = StdoutConsole(soft_wrap=True)
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


# JSON documents printed so far: a command that printed its (partial) result object
# before it stopped does not print an error object too (one object per run)
_printed = [0]
# Set by ``cli.main``, the process's own entry: once a command's result is printed, Ctrl-C
# and SIGTERM are ignored until the process exits (~0.1-0.4 s of unwinding and clean-up),
# so a finished run exits with its result's code. In-process callers (tests) keep theirs.
_LAST_WORD = [False]
# Whether ``cli_errors`` reported a stop (Ctrl-C, SIGTERM): one before the command's own
# handling (typer turns it into a silent exit 130) is reported by ``cli.main``
_STOP_REPORTED = [False]


def stop_reported() -> bool:
    return _STOP_REPORTED[0]


def stops_end_with_result() -> None:
    """From now on, a printed result is the process's last word (``print_json``)."""
    _LAST_WORD[0] = True


@contextmanager
def printing_result() -> Iterator[list[int]]:
    """Around the printing of a finished run's result: Ctrl-C and SIGTERM held (a second
    one stops at once), then, in the ``mp2amp`` process, ignored until it exits. A second
    stop came because the output blocks (a reader that stopped reading, a terminal paused
    with Ctrl-S): what the stop says next would block there too, for good, so a stream
    that cannot take a byte now is pointed at /dev/null first."""
    real = sys.stdout, sys.stderr
    try:
        with signals_held(second_stops=True, ignore_after=_LAST_WORD[0]) as seen:
            # a table printed by rich (or print) is written whole as well: through the
            # streams' buffered writers, a held stop would cut it where the reader lagged
            sys.stdout = cast(TextIO, _WholeWrites(real[0]))
            sys.stderr = cast(TextIO, _WholeWrites(real[1]))
            try:
                yield seen
            finally:
                sys.stdout, sys.stderr = real
    except KeyboardInterrupt:
        for stream in (sys.stdout, sys.stderr):
            if not _writable_now(stream):
                stdout_nowhere(stream)
        raise


class _WholeWrites:
    """A text stream whose writes go to their last byte (``_write_whole``); all else is
    the wrapped stream's (``isatty``, ``encoding``, ``fileno``: rich's colours and width
    stay those of the real stream)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        _write_whole(self._stream, text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _writable_now(stream: IO[str]) -> bool:
    """Whether a write to ``stream`` would not block (a file, a terminal, a pipe with room);
    True where that cannot be told (no file behind it)."""
    try:
        fd = stream.fileno()
        return bool(select.select([], [fd], [], 0)[1])
    except (OSError, ValueError):
        return True


def print_json(result: Any, *, to_stderr: bool = False) -> None:
    """Print a structured result as one JSON document on stdout (on stderr where stdout
    carries the command's data: ``transform`` without ``--out``).

    It counts as the run's one document before it is written, and Ctrl-C or SIGTERM
    while it is written (a slow reader) is held: the run is over, the document is
    printed whole and the command exits with its result's code (a second press stops
    at once); in the ``mp2amp`` process, later stops are ignored until it has exited
    (``stops_end_with_result``). A closed stdout loses the document quietly and keeps the exit code; any
    other failure to write it (a full disk) is a ``TerminalError``."""
    stream = sys.stderr if to_stderr else sys.stdout
    text = json_text(result) + "\n"
    _printed[0] += 1
    try:
        with printing_result():
            _write_whole(stream, text)
    except BrokenPipeError:
        stdout_nowhere(stream)
    except OSError as exc:
        raise unwritable_result(exc, stream) from None


def unwritable_result(exc: OSError, stream: IO[str]) -> TerminalError:
    """The error of a result that cannot be written (a full disk), ``stream`` pointed at
    /dev/null: what is still buffered would fail again at exit."""
    stdout_nowhere(stream)
    where = "stderr" if stream is sys.stderr else "stdout"
    return TerminalError(f"cannot write the result to {where}: {exc.strerror or exc}; "
                         "what the run wrote elsewhere is kept (the result is not "
                         f"shown): send {where} where it can be written")


def _json_escape(error: UnicodeError) -> tuple[str, int]:
    """What a stream cannot encode, as JSON writes it (``\\udcff``, ``\\u00e9``): valid
    inside a JSON document's strings, and readable in a table (the JSON results escape
    lone surrogates so already)."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = []
    for ch in error.object[error.start:error.end]:
        code = ord(ch)
        if code > 0xFFFF:  # a surrogate pair, as JSON spells characters past the BMP
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out), error.end


_ESCAPES = "mp2amp-json-escape"
codecs.register_error(_ESCAPES, _json_escape)


def _write_whole(stream: IO[str], text: str) -> None:
    """Write ``text`` to ``stream`` to its last byte. Why not ``stream.write``: a signal
    handled (held) while a buffered write waits on a slow reader makes it return as if
    done, the rest dropped (a JSON document cut at 64 KiB). ``os.write`` says how much
    it wrote; it is retried on EINTR by Python itself."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # no file behind it (a test runner's capture)
        stream.write(text)
        stream.flush()
        return
    stream.flush()  # what is buffered goes first
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        raw = text.encode(encoding, getattr(stream, "errors", None) or "strict")
    except UnicodeEncodeError:  # a lone surrogate (a path's undecodable byte), or ASCII out
        raw = text.encode(encoding, _ESCAPES)
    data = memoryview(raw)
    while data:
        data = data[os.write(fd, data):]


def print_stop(doc: dict[str, Any], *, to_stderr: bool = False) -> None:
    """``print_json`` for the object of a stop: a closed stdout (``| true``) must not
    turn the stop's exit code into a traceback; stderr has said what happened."""
    stream = sys.stderr if to_stderr else sys.stdout
    text = json_text(doc) + "\n"
    _printed[0] += 1
    try:
        with printing_result():
            _write_whole(stream, text)
    except (OSError, KeyboardInterrupt):  # a second press: already stopping, same code
        stdout_nowhere(stream)


# error attributes carried into the JSON error object, when the exception has them
_ERROR_FIELDS = ("problems", "source", "status", "retry_after")


def error_kind(exc: BaseException) -> str:
    """``terminal``, ``transient``, ``rejected`` or ``error`` (a bare ``Mp2AmpError``): a
    wrapper such as the demo's ``DemoStopped`` takes the kind of the error it wraps."""
    for err in (exc, exc.__cause__):
        if isinstance(err, TerminalError):
            return "terminal"
        if isinstance(err, TransientError):
            return "transient"
        if isinstance(err, RejectedRecord):
            return "rejected"
    return "error"


def error_document(exc: Mp2AmpError, code: int) -> dict[str, Any]:
    """The ``--json`` object of a run stopped by ``exc``: ``message`` is what stderr says."""
    error: dict[str, Any] = {"kind": error_kind(exc), "type": type(exc).__name__,
                             "message": str(exc)}
    for name in _ERROR_FIELDS:
        value = getattr(exc, name, None)
        if value is not None:
            error[name] = value
    return {"exit_code": code, "error": error}


def stop_document(code: int, message: str, what_next: str) -> dict[str, Any]:
    """The ``--json`` object of a run stopped by Ctrl-C (130) or SIGTERM (143)."""
    return {"exit_code": code, "error": {
        "kind": "interrupted", "type": "KeyboardInterrupt" if code == 130 else "Terminated",
        "signal": "SIGINT" if code == 130 else "SIGTERM", "message": message,
        "what_next": what_next}}


@contextmanager
def cli_errors(interrupted: Callable[[], str] | None = None, *, as_json: bool = False,
               json_to_stderr: bool = False) -> Iterator[None]:
    """Print an mp2amp error as a clear message (never a traceback) and exit with its code.

    Ctrl-C exits 130, SIGTERM 143 where the command turns it into ``Terminated``
    (``migrate``); ``interrupted`` says what was kept and how to go on. With ``as_json``
    the stop is also printed as one JSON object on stdout (on stderr with
    ``json_to_stderr``: stdout holds the command's data), unless the command printed its
    result object already."""
    printed = _printed[0]

    def document(doc: dict[str, Any]) -> None:
        if as_json and _printed[0] == printed:
            print_stop(doc, to_stderr=json_to_stderr)

    try:
        yield
    except Mp2AmpError as exc:
        code = exc.exit_code or 1
        # escaped: messages name config sections such as "[run] workdir", which rich
        # would otherwise swallow as markup tags
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True,
                          highlight=False, soft_wrap=True)
        document(error_document(exc, code))
        raise typer.Exit(code) from None
    except KeyboardInterrupt as exc:
        code = getattr(exc, "exit_code", 130)  # stopping.Terminated: 143
        how = "stopped (SIGTERM)" if code != 130 else "interrupted"
        hint = interrupted() if interrupted is not None else \
            "progress so far is kept (resume where supported)"
        err_console.print(f"{how}; {hint}", markup=False, highlight=False)
        document(stop_document(code, f"{how}; {hint}", hint))
        _STOP_REPORTED[0] = True
        raise typer.Exit(code) from None


def emit(result: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """Print ``result`` with ``--json`` or through ``render`` for people."""
    if as_json:
        print_json(result)
    else:
        with printing_result():
            render(result)
