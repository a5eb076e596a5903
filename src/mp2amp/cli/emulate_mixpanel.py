"""``mp2amp emulate mixpanel``: serve a generated project through a local Mixpanel API."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mp2amp.cli.output import cli_errors, err_console

if TYPE_CHECKING:
    from mp2amp.emulators.mixpanel import MixpanelEmulator


def register(app: typer.Typer, emulate: typer.Typer) -> None:
    @emulate.command("mixpanel")
    def emulate_mixpanel(
        data: Annotated[Path, typer.Option("--data", help="Project directory written by `mp2amp generate`.")],
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8041, "--port", min=0, max=65535,
                                 help="Port; 0 picks a free one (the URL is printed first)."),
        project_id: int | None = typer.Option(None, "--project-id", help="Default: project.json's project_id."),
        service_account: str | None = typer.Option(
            None, "--service-account", help="USER:SECRET accepted for Basic auth (default: $MIXPANEL_SERVICE_ACCOUNT)."
        ),
        api_secret: str | None = typer.Option(
            None, "--api-secret", help="Project API secret accepted (default: $MIXPANEL_SECRET)."
        ),
        token: str | None = typer.Option(None, "--token", help="Project token (/import Basic auth; /track filters on it)."),
        export_rate_limit: int = typer.Option(60, "--export-rate-limit", min=1,
                                              help="Export queries per hour."),
        timezone: str | None = typer.Option(
            None, "--timezone", help="Timezone of from_date/to_date (default: UTC, as for a project created after 2023; the project's timezone if project.json has legacy_time)."
        ),
        fail_rate: float = typer.Option(0.0, "--fail-rate", help="Share of export requests that get a fault (0-1)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the fault injection."),
    ) -> None:
        """Serve /api/2.0/export, engage, lexicon schemas and /track, /engage, /groups, /import."""
        from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
        from mp2amp.errors import InputError

        with cli_errors():
            if not data.exists():
                raise InputError(f"{data} does not exist: run `mp2amp generate --out {data}` first")
            config = MixpanelConfig(
                data_dir=data,
                host=host,
                port=port,
                project_id=project_id,
                service_account=service_account or _env_secret("MIXPANEL_SERVICE_ACCOUNT"),
                api_secret=api_secret or _env_secret("MIXPANEL_SECRET"),
                token=token,
                timezone=timezone,
                export_per_hour=export_rate_limit,
                fail_rate=fail_rate,
                seed=seed,
            )
            emulator = MixpanelEmulator(config)
            try:
                asyncio.run(_serve(emulator))
            except OSError as exc:  # the port is taken, or the address is not this host's
                err_console.print(f"[bold red]error:[/] "
                                  f"{escape(f'cannot listen on {host}:{port}: {exc}')}")
                raise typer.Exit(2) from None
            err_console.print("mixpanel emulator stopped")


def _env_secret(name: str) -> str | None:
    """The variable stripped, or None when unset or blank: as migrate reads it
    (mp2amp.config.loader), so a secret of blanks is none, not the only one accepted."""
    return os.environ.get(name, "").strip() or None


async def _serve(emulator: MixpanelEmulator) -> None:
    # Handlers of our own: a process started in the background by a shell inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt; SIGTERM stops it cleanly too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await emulator.start()
    typer.echo(url)  # first line on stdout: scripts read the chosen port from it
    state = emulator.state
    if not (emulator.config.data_dir / "project.json").exists():
        err_console.print(f"note: {emulator.config.data_dir}/project.json not found; serving an empty UTC project",
                          markup=False)
    config = emulator.config
    auth = _accepted_credentials(config.service_account, config.api_secret, config.token)
    err_console.print(
        f"mixpanel emulator: project {state.project_id}, timezone {state.timezone}, accepting {auth}; Ctrl-C stops",
        markup=False,
    )
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def _accepted_credentials(service_account: str | None, api_secret: str | None,
                          token: str | None = None) -> str:
    """The banner's account of what the auth check accepts, so nobody mistakes a secret-only
    emulator for one that takes any service account, nor thinks /import refuses the token."""
    if service_account and api_secret:
        accepted = "only the configured service account and API secret"
    elif service_account:
        accepted = "only the configured service account (no API secret)"
    elif api_secret:
        accepted = "only the configured API secret (no service account)"
    else:
        return "any Basic credentials"  # the token too: anything of the right shape passes
    return f"{accepted}, and the project token on /import" if token is not None else accepted
