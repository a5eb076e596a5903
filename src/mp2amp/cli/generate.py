"""``mp2amp generate``: write a realistic synthetic Mixpanel project with its ground truth."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from mp2amp.cli.output import cli_errors, console, emit
from mp2amp.errors import ConfigError
from mp2amp.generate import GenerateConfig, generate_project
from mp2amp.generate.project import parse_industries, validate
from mp2amp.pipeline.stopping import signals_deferred


def _parse_start(value: str, problems: list[str]) -> date:
    """The date, or (the problem noted, to be listed with the others) a stand-in day."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"--start must be a date as YYYY-MM-DD, got {value!r}")
        return date(2024, 1, 1)


def _render(result: dict[str, Any]) -> None:
    dirt = ", ".join(f"{k} {v}" for k, v in result["dirt"].items() if v) or "none"
    console.print(
        f"wrote {result['records_written']:,} records ({result['events_counted']:,} countable events, "
        f"{result['identity_events']:,} identity events) for {result['users']:,} people over "
        f"{result['days']} day(s) to {result['out']} in {result['seconds']:.1f} s\n"
        f"dirt: {dirt}",
        highlight=False, markup=False,  # a folder named "[x]" is shown as it is
    )


def register(app: typer.Typer, emulate: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        out: Annotated[Path, typer.Option("--out", help="New (or empty) directory to write the project to.")],
        users: Annotated[int, typer.Option("--users", help="Number of people (visitors, new and existing users).")] = 1000,
        days: Annotated[int, typer.Option("--days", help="Number of project-timezone days.")] = 7,
        start: Annotated[str, typer.Option("--start", help="First day, YYYY-MM-DD.")] = "2024-01-01",
        seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 1,
        id_merge: Annotated[str, typer.Option("--id-merge", help="simplified | original.")] = "simplified",
        timezone: Annotated[str, typer.Option("--timezone", help="Project timezone (IANA).")] = "America/Los_Angeles",
        legacy_time: Annotated[bool, typer.Option("--legacy-time",
                                         help="Export `time` in project-local epoch (pre-2023 projects).")] = False,
        dirty: Annotated[float, typer.Option("--dirty",
                                    help="Dirt rate: ~RATE exact duplicates plus the other kinds (0 = clean).")] = 0.001,
        industry: Annotated[str, typer.Option("--industry",
                                     help="ecommerce | b2b | fintech | streaming | all (or a comma list).")] = "all",
        no_gzip: Annotated[bool, typer.Option("--no-gzip",
                                     help="Write events/DAY.jsonl uncompressed (faster; ~6x the disk).")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Write a synthetic Mixpanel project (events, profiles, identities, schema, truth)."""
        with cli_errors(as_json=as_json):
            problems: list[str] = []
            config = GenerateConfig(
                out=out, users=users, days=days, start=_parse_start(start, problems), seed=seed,
                id_merge=id_merge, timezone=timezone, legacy_time=legacy_time, dirty=dirty,
                industries=parse_industries(industry), gzip=not no_gzip,
            )
            if problems:  # with every other problem of the arguments
                validate(config, problems)
                raise ConfigError(problems, source="mp2amp generate")
            with signals_deferred():  # Ctrl-C never raised inside the compiled generator
                result = generate_project(config)
            emit(result.as_dict(), as_json, _render)
