"""The ``mp2amp`` command line: a thin layer over library functions.

Each command lives in its own module under ``mp2amp.cli`` and exposes
``register(app, emulate)``; this module only assembles them. Commands return
structured results and print them with ``--json`` or as a rich table.
"""

from __future__ import annotations

import importlib
import signal

import typer

from mp2amp import __version__
from mp2amp.proxyenv import bypass_proxy_for_loopback

app = typer.Typer(
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
    try:
        app()
    except SystemExit as exc:
        if exc.code in (130, 143):
            # A run stopped by Ctrl-C or SIGTERM exits now (its pools and threads take a
            # moment): a second signal must not turn the exit code it announced into a
            # death by signal (-15 to a Python caller, "killed" to systemd).
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise
