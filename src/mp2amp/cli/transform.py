"""``mp2amp transform``: Mixpanel files in, Amplitude Batch API events (JSON lines) out."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, cast

import typer

from mp2amp.cli.output import (
    StdoutConsole,
    cli_errors,
    print_json,
    printing_result,
    stdout_nowhere,
)
from mp2amp.errors import TerminalError
from mp2amp.pipeline.stopping import signals_deferred, signals_held

if TYPE_CHECKING:
    from mp2amp.transform.offline import TransformResult


def register(app: typer.Typer, emulate: typer.Typer) -> None:
    @app.command("transform")
    def transform(
        inputs: Annotated[list[str] | None, typer.Argument(
            metavar="IN...", show_default=False,
            help="Mixpanel export files: JSONL, JSON arrays, .gz, folders, globs, s3://, "
                 "gs:// (default: \\[source] files of the config).")] = None,
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", help="mp2amp.toml (default: ./mp2amp.toml when it exists).",
            show_default=False)] = None,
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Amplitude events, one JSON object a line "
                                "(default: stdout; the summary then goes to stderr).",
            show_default=False)] = None,
        rejects: Annotated[Path | None, typer.Option(
            "--rejects", help="Rejected records with source, line, reason and the original "
                              "record (default: OUT.rejects.jsonl, or ./rejects.jsonl with "
                              "stdout).", show_default=False)] = None,
        plan: Annotated[Path | None, typer.Option(
            "--plan", help="Tracking-plan YAML (overrides \\[transform] plan).",
            show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Transform Mixpanel events into Amplitude events offline, with a summary that adds up.

        Pass 1 reads the inputs to build the identity graph; pass 2 transforms. Exit code 0
        when every record read is accounted for (events out + identity records + duplicates
        + skipped + rejected); 2 for a bad config, missing input or counts that do not add up;
        141, quietly, when the reader of the events on stdout closes it (`| head`); a
        closed stdout that only loses the summary (with -o) keeps the exit code.
        """
        written: list[bool] = []  # both outputs are in place: a stop now loses only the summary

        def interrupted() -> str:
            if written:
                events = "stdout" if out is None else str(out)
                return (f"the events ({events}) and rejects ({rejects_path}) are complete; "
                        "only the summary was not printed")
            if out is None:  # what went to stdout cannot be taken back
                return ("the events written to stdout so far are incomplete, do not load "
                        "them; the rejects file was removed: run the same command again")
            return "nothing was written (the partial outputs were removed): run the same " \
                   "command again"

        rejects_path: Path | None = None
        # SIGTERM (docker stop) stops as Ctrl-C does, from the start: the partial outputs
        # are removed and the stop reported (143), never a silent death that leaves them
        with cli_errors(interrupted, as_json=as_json, json_to_stderr=out is None), \
                _closed_stdout_ends_quietly(), signals_deferred(sigterm=True):
            # inside: a Ctrl-C during these imports is reported as any other stop
            from mp2amp.cli.migrate import load_cli_config
            from mp2amp.transform.offline import transform_files

            cfg = load_cli_config(config, {"transform.plan": plan.resolve() if plan else None})
            paths = list(inputs or cfg.source.files)
            if out is not None:  # before OUT.rejects.jsonl is named after it
                _refuse_folder("--out", out)
            rejects_path = rejects or (
                out.with_name(out.name + ".rejects.jsonl") if out else Path("rejects.jsonl"))
            _check_outputs(paths, out, rejects_path)
            with _outputs(out, rejects_path) as (out_handle, rejects_handle):
                result = transform_files(cfg, paths, out_handle, rejects_handle,
                                         exclude=[p for p in (out, rejects_path) if p])
                doc = {**result.as_dict(), "out": str(out) if out else "-",
                       "rejects": str(rejects_path)}
                if not result.summary.balanced:
                    # inside: counts that do not add up leave the previous outputs in place
                    _summarize(result, doc, as_json, to_stderr=out is None)
                    result.summary.check()
            written.append(True)
            # outside: the files are in place, so a closed stdout (`-o out.jsonl | true`)
            # only loses the summary, never the finished output
            _summarize(result, doc, as_json, to_stderr=out is None)


# what a shell reports for a command ended by a closed pipe (128 + SIGPIPE), as `yes | head`
EXIT_CLOSED_STDOUT = 141


@contextmanager
def _closed_stdout_ends_quietly() -> Iterator[None]:
    """``mp2amp transform ... | head -1``: the reader that closes the pipe has what it
    wanted, so the command ends as ``yes`` would, with no message and 141; the rejects
    file is removed as for any stop. With ``-o`` the pipe is closed only when the summary
    is printed, after the output files are in place: they stay, and the exit code is the
    run's (``print_json``, ``StdoutConsole``)."""
    try:
        yield
    except BrokenPipeError:
        stdout_nowhere()  # the interpreter's last flush of stdout would fail again
        raise typer.Exit(EXIT_CLOSED_STDOUT) from None


def _refuse_folder(option: str, path: Path) -> None:
    from mp2amp.errors import InputError

    if path.name in ("", ".", "..") or path.is_dir():
        raise InputError(f"{option} {path} is a folder: name a file to write (nothing was "
                         "written)")


def _check_outputs(inputs: list[str], out: Path | None, rejects: Path) -> None:
    """Refuse outputs that would destroy an input or each other, or cannot be files."""
    from mp2amp.errors import InputError

    named = {"--out": out, "--rejects": rejects}
    for option, path in named.items():
        if path is not None:
            _refuse_folder(option, path)
    if out is not None and os.path.realpath(out) == os.path.realpath(rejects):
        raise InputError(f"--out and --rejects are the same file ({out}): events and "
                         "rejections need a file each (nothing was written)")
    for raw in inputs:
        # URLs, globs and folders: transform_files checks the files they expand to
        if "://" in raw or not os.path.exists(raw):
            continue
        for option, path in named.items():
            if path is not None and os.path.realpath(raw) == os.path.realpath(path):
                raise InputError(f"the input {raw} is also the {option} file: it would be "
                                 "replaced by the output; write the output elsewhere "
                                 "(nothing was written)")


class _StdoutEvents:
    """stdout as transform's events file: a write that fails (a full disk, `> /dev/full`)
    stops the run with a message and the ``--json`` error object, not a traceback; a
    closed pipe (`| head`) still ends quietly with 141."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer
        self.name = getattr(self._out, "name", None)  # never read back as an input

    def write(self, data: bytes) -> int:
        try:
            return self._out.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _unwritable(exc) from None

    def flush(self) -> None:
        try:
            self._out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _unwritable(exc) from None


def _unwritable(exc: OSError) -> TerminalError:
    stdout_nowhere()  # what is still buffered would fail again at exit
    return TerminalError(f"cannot write the events to stdout: {exc.strerror or exc}; the "
                         "events written so far are incomplete, do not load them; the "
                         "rejects file was removed: send stdout where it can be written "
                         "(or write the events with -o FILE) and run the same command again")


@contextmanager
def _outputs(out: Path | None, rejects: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """The events and rejects files, written whole or not at all: under temporary names,
    both renamed at the end with Ctrl-C and SIGTERM held, since a stop between the two
    renames would leave the new rejects file beside the previous events file (the run is
    complete once they are renamed: a stop then is too late to undo it). The events go
    to stdout when ``out`` is None."""
    from mp2amp.errors import InputError

    opened: list[tuple[Path, Path, IO[bytes]]] = []  # final name, temporary name, file
    # named before it is made: a stop raised as open() returns still removes it
    temporary: list[Path] = []
    try:
        for path in (out, rejects):  # --out named first when neither can be written
            if path is None:
                continue
            tmp = path.with_name(f".{path.name}.partial")
            temporary.append(tmp)
            try:
                made: IO[bytes] = open(tmp, "wb")  # noqa: SIM115 (closed below)
            except OSError as exc:
                temporary.pop()  # not made here: never removed
                raise InputError(f"cannot write {path}: {exc.strerror or exc} (nothing was "
                                 "written)") from None
            opened.append((path, tmp, made))
        stdout = _StdoutEvents() if out is None else None
        events = cast("IO[bytes]", stdout) if stdout is not None else opened[0][2]
        yield events, opened[-1][2]
        if stdout is not None:
            stdout.flush()
        with signals_held():
            for path, _, handle in opened:
                try:
                    handle.close()  # a full disk may only show here
                except OSError as exc:
                    raise InputError(f"cannot write {path}: {exc.strerror or exc} (the "
                                     "previous outputs are kept)") from None
            for path, tmp, _ in opened:
                try:
                    os.replace(tmp, path)
                except OSError as exc:  # a folder made meanwhile, say
                    raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        for _, _, handle in opened:
            with suppress(OSError):
                handle.close()
        for tmp in temporary:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise


def _summarize(result: TransformResult, doc: dict[str, Any], as_json: bool,
               to_stderr: bool) -> None:
    if as_json:
        _print_json(doc, to_stderr)
    else:
        with printing_result():  # the run is over: a stop now changes nothing
            _render(result, doc, to_stderr)


def _print_json(doc: dict[str, Any], to_stderr: bool) -> None:
    # counted as the command's one JSON document: a stop right after it prints no other
    print_json(doc, to_stderr=to_stderr)


def _render(result: TransformResult, doc: dict[str, Any], to_stderr: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    s = result.summary
    table = Table(title="mp2amp transform", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("records read", f"{s.records_read:,}")
    table.add_row("events out", f"{s.events_out:,}")
    table.add_row("identity records", f"{s.identity_records:,}")
    table.add_row("duplicates", f"{s.duplicates:,}")
    table.add_row("skipped", f"{sum(s.skipped.values()):,}")
    for rule, count in sorted(s.skipped.items()):  # names are text, not markup
        table.add_row(escape(f"  {rule}"), f"{count:,}")
    table.add_row("rejected", f"{sum(s.rejected.values()):,}")
    for reason, count in sorted(s.rejected.items()):
        table.add_row(escape(f"  {reason}"), f"{count:,}")
    verdict = "[green]yes[/]" if s.balanced else "[bold red]NO[/]"
    table.add_row("counts add up", verdict)
    ident = result.identity
    for key in ("clusters", "shared_devices", "cap_hits"):
        if ident.get(key):
            table.add_row(f"identity {key.replace('_', ' ')}", f"{ident[key]:,}")
    truncated = result.values.get("truncated", {})
    if truncated:
        table.add_row("strings truncated", f"{sum(truncated.values()):,}")
    class QuietOnClosedPipe(Console):
        def on_broken_pipe(self) -> None:
            # the events' reader is gone: 141, quietly, as for the events (rich: exit 1)
            self.quiet = True
            raise BrokenPipeError

    # with -o a closed stdout loses only the summary: the run's exit code stands
    console = QuietOnClosedPipe(stderr=True, width=100) if to_stderr else \
        StdoutConsole(width=100)
    console.print(table)
    console.print(f"events: {doc['out']}   rejects: {doc['rejects']}", highlight=False,
                  markup=False)
