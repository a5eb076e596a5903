"""The ``mp2amp`` command line: a thin layer over library functions.

Each command lives in its own module under ``mp2amp.cli`` and exposes
``register(app, emulate)``; this module only assembles them. Commands return
structured results and print them with ``--json`` or as a rich table.
"""

from __future__ import annotations

import importlib
import pathlib
import signal
import typing
from typing import Any

import typer
from typer.core import TyperGroup

from mp2amp import __version__
from mp2amp.cli.output import stop_reported, stops_end_with_result
from mp2amp.pipeline.stopping import Terminated, stop_exit_code
from mp2amp.proxyenv import bypass_proxy_for_loopback

try:  # typer 0.2x parses with its own copy of click; earlier releases with click itself
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[assignment]


class _Commands(TyperGroup):
    """The root group: a usage error (an unknown option, a value out of range) of a
    command given ``--json`` is also printed as one JSON object, as its other stops are."""

    def invoke(self, ctx: Any) -> Any:
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # cleared by invoke
        _refuse_blank_values(self, ctx, args)
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _usage_document(exc, args, _named_command(self, ctx, args))
            raise  # typer prints the usual message on stderr and exits 2


# where a command's stdout carries its data unless an option sends it to a file: its
# JSON goes to stderr then, as its summary does (``transform`` without ``--out``)
_DATA_ON_STDOUT = {"transform": ("--out", "-o")}


def _named_command(group: Any, ctx: Any, args: list[str]) -> Any:
    """The command ``args`` name (``emulate amplitude``: through its group), None when
    they name none."""
    command, rest = group, list(args)
    while rest and hasattr(command, "get_command"):
        command, rest = command.get_command(ctx, rest[0]), rest[1:]
    return None if command is group else command


def _usage_document(exc: UsageError, args: list[str], named: Any = None) -> None:
    from mp2amp.cli.output import print_stop

    # the parser's own errors (an option without its value, a flag given one) come
    # without a context: the command is the one the arguments name
    command = exc.ctx.command if exc.ctx is not None else named
    if command is None or not any("--json" in p.opts for p in command.params):
        return
    given = args[:args.index("--")] if "--" in args else args
    if "--json" not in given:
        return
    doc = {"exit_code": exc.exit_code, "error": {
        "kind": "usage", "type": type(exc).__name__, "message": exc.format_message()}}
    to_file = _DATA_ON_STDOUT.get(command.name or "")
    print_stop(doc, to_stderr=to_file is not None and not any(a.startswith(to_file)
                                                               for a in given))


def _refuse_blank_values(group: Any, ctx: Any, args: list[str]) -> None:
    """An option given a blank value (``--workdir "$WORKDIR"`` with the variable unset) is
    refused, naming the option, before the command runs: a path would be ``Path("")``, the
    current folder, silently overriding the config's ``[run] workdir``; a text would be a
    silent fallback (``--service-account ""`` takes $MIXPANEL_SERVICE_ACCOUNT), another
    meaning (``--host ""`` listens on every interface) or a check that does not say what
    is wrong. Read from the raw command line, since "." is a real value."""
    from mp2amp.cli.output import cli_errors
    from mp2amp.errors import ConfigError

    command, name, rest = group, "", list(args)
    while rest and hasattr(command, "get_command"):  # a group: emulate amplitude ...
        command, name, rest = command.get_command(ctx, rest[0]), rest[0], rest[1:]
        if command is None:
            return  # an unknown command: the usual usage error says so
    if command is group:
        return
    try:
        sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        sub.resilient_parsing = False  # so that an unknown option raises, not stops the parse
        given, _, _ = command.make_parser(sub).parse_args(args=list(rest))
    except UsageError:
        return  # an unknown option, a missing value: the usual usage error says so
    help_option = command.get_help_option(sub)
    if help_option is not None and given.get(help_option.name):
        return  # --help wins over bad values, as click has it
    blank = {p.name: _blank_problem(p, given[p.name]) for p in command.params
             if isinstance(given.get(p.name), str) and not given[p.name].strip()
             and (_is_path(p) or _is_text_option(p))}
    if not blank:
        return
    if command.name in _GATHERS_PROBLEMS and _parses(command, name, rest, ctx):
        ctx.meta[BLANK_PROBLEMS] = blank  # shared with the command's context
        return
    problems = list(blank.values())
    # as parsed: in `-c --json` the "--json" is the config's (blank-less) name
    as_json = any("--json" in p.opts and given.get(p.name) for p in command.params)
    to_file = _DATA_ON_STDOUT.get(command.name or "", ())
    with cli_errors(as_json=as_json, json_to_stderr=bool(to_file) and not any(
            set(to_file) & set(p.opts) and p.name in given for p in command.params)):
        raise ConfigError(problems)


# Commands that list every problem of theirs in one report (README: generate's bad
# arguments "exit 2 with every problem listed"): their blank options' problems, by
# parameter name, go in ctx.meta[BLANK_PROBLEMS] for them to list with the others
_GATHERS_PROBLEMS = frozenset({"generate"})
BLANK_PROBLEMS = "mp2amp.blank_problems"


def _parses(command: Any, name: str, args: list[str], ctx: Any) -> bool:
    """Whether ``args`` parse (types, ranges): a usage error stops the command before it
    could list the blank options' problems, so they are then refused here, as before."""
    try:
        command.make_context(name, list(args), parent=ctx)
    except UsageError:
        return False
    return True


# What a text option takes, for the message refusing its blank value (a test checks that
# every text option of every command has one)
_TEXT_HINTS = {
    "--timezone": "an IANA timezone such as UTC or America/Los_Angeles",
    "--host": "an address to listen on, such as 127.0.0.1 (0.0.0.0 for every interface)",
    "--start": "a date as YYYY-MM-DD",
    "--id-merge": "simplified or original",
    "--industry": "ecommerce, b2b, fintech, streaming, all, or a comma list of them",
    "--api-key": "the API key to accept",
    "--secret-key": "the secret key to accept",
    "--service-account": "USER:SECRET",
    "--api-secret": "the API secret to accept",
    "--token": "the project token",
}


def _blank_problem(param: Any, value: str) -> str:
    option = _option_name(param.opts)
    # a required option left out fails as missing: never advise that
    leave_out = "" if param.required else "leave the option out"
    if _is_path(param):
        return (f"{option}: must be a path, got a blank value {value!r} (an unset variable?), "
                "which would be the current folder; give the path (\".\" for the current "
                f"folder){' or ' + leave_out if leave_out else ''}")
    if leave_out and param.default is not None:
        leave_out += f" for the default, {param.default}"
    return (f"{option}: must be {_TEXT_HINTS.get(option, 'a value')}, got a blank value "
            f"{value!r} (an unset variable?); give one{', or ' + leave_out if leave_out else ''}")


def _is_path(param: Any) -> bool:
    return _annotated(param, pathlib.Path)


def _is_text_option(param: Any) -> bool:
    # options only: a blank argument (transform's inputs) is the command's own problem
    return getattr(param, "param_type_name", "") == "option" and _annotated(param, str)


def _annotated(param: Any, kind: type) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    return annotation is kind or kind in typing.get_args(annotation)


def _option_name(opts: list[str]) -> str:
    return next((o for o in opts if o.startswith("--")), opts[0] if opts else "?")


app = typer.Typer(
    cls=_Commands,
    name="mp2amp",
    help="Move a Mixpanel project into Amplitude, and prove nothing was lost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
emulate = typer.Typer(
    help="Local, faithful emulators of the Amplitude and Mixpanel APIs (dry runs, tests).",
    no_args_is_help=True,
)
app.add_typer(emulate, name="emulate")

# One line per command module; each module defines register(app, emulate).
_COMMAND_MODULES: tuple[str, ...] = (
    "emulate_amplitude",
    "emulate_mixpanel",
    "generate",
    "transform",
    "migrate",
    "demo",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mp2amp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """mp2amp: Mixpanel -> Amplitude migration, verified."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"mp2amp.cli.{_name}").register(app, emulate)


def main() -> None:
    bypass_proxy_for_loopback()  # the local emulators are never behind a proxy
    stops_end_with_result()
    try:
        app()
    except SystemExit as exc:
        if exc.code == 130 and not stop_reported():
            # stopped before the command's own handling began (typer made the stop a silent
            # 130): ``entry.main`` reports it, as a stop while the CLI loads
            raise (Terminated() if stop_exit_code() == Terminated.exit_code
                   else KeyboardInterrupt()) from None
        # The command has ended (a run stopped by Ctrl-C or SIGTERM exits now, its pools
        # and threads taking a moment): a signal must not turn the exit code it announced
        # into a death by signal (-15 to a Python caller, "killed" to systemd).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise
