"""``mp2amp emulate amplitude``: serve the local Amplitude API emulator until interrupted."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mp2amp.cli.output import cli_errors, err_console
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude.segmentation import CostLimits

DEFAULT_DATA = Path(".mp2amp/amplitude-emulator")


async def _serve(emulator: AmplitudeEmulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = await emulator.start()
    # The first line of stdout is the base URL, so scripts can read it with --port 0.
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    err_console.print(
        f"Amplitude emulator on {url} (data in {emulator.config.data_dir}); "
        "Ctrl-C stops it and saves its state.", markup=False
    )
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def register(app: typer.Typer, emulate: typer.Typer) -> None:
    @emulate.command("amplitude")
    def amplitude(
        host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
        port: int = typer.Option(8040, min=0, max=65535,
                                 help="Port; 0 picks a free one (printed on the first line)."),
        data: Annotated[Path, typer.Option(
            "--data", help="Directory where everything received is kept.")] = DEFAULT_DATA,
        api_key: str = typer.Option("emulator-api-key", help="The project API key to accept."),
        secret_key: str = typer.Option("emulator-secret-key",
                                       help="Secret key (Basic auth of export, segmentation, privacy)."),
        eps_limit: int | None = typer.Option(
            None, help="Events/s per device or user, averaged over 30 s "
                       "(default: 30 on /2/httpapi, 1000 on /batch)."),
        daily_quota: int = typer.Option(500_000, help="Events per device or user per rolling 24 h (enforced on /batch only)."),
        fail_rate: float = typer.Option(0.0, help="Share of API requests answered 500/502/503/504."),
        drop_after_ingest_rate: float = typer.Option(
            0.0, help="Share of accepted requests whose connection is dropped after storing."),
        latency_ms: float = typer.Option(0.0, help="Delay added before each API request."),
        timezone: str = typer.Option("UTC", help="Project timezone (segmentation day buckets)."),
        project_id: int = typer.Option(187520, help="Project (app) ID shown in exports."),
        seed: int = typer.Option(0, help="Seed of the fault generator."),
        segmentation_cost_per_5min: int = typer.Option(
            1000, min=1, help="Segmentation query cost (days x events) allowed per 5 minutes."),
        segmentation_cost_per_hour: int = typer.Option(
            108_000, min=1, help="Segmentation query cost allowed per hour (429 past either)."),
    ) -> None:
        """Serve Amplitude's ingestion, identify, export, segmentation and privacy APIs locally."""
        with cli_errors():
            config = AmplitudeConfig(
                data_dir=data, api_key=api_key, secret_key=secret_key, host=host, port=port,
                project_id=project_id, eps_limit=eps_limit, daily_quota=daily_quota,
                fail_rate=fail_rate, latency_ms=latency_ms,
                drop_after_ingest_rate=drop_after_ingest_rate, timezone=timezone, seed=seed,
            )
            emulator = AmplitudeEmulator(config, segmentation_limits=CostLimits(
                segmentation_cost_per_5min, segmentation_cost_per_hour))
            try:
                asyncio.run(_serve(emulator))
            except OSError as exc:
                err_console.print(f"[bold red]error:[/] "
                                  f"{escape(f'cannot listen on {host}:{port}: {exc}')}")
                raise typer.Exit(2) from None
