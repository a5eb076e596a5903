"""``mp2amp generate``: write a realistic synthetic Mixpanel project with its ground truth."""

from __future__ import annotations

import os
import re
import shutil
from contextlib import suppress
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from mp2amp.cli.output import cli_errors, console, emit
from mp2amp.errors import InputError
from mp2amp.generate import GenerateConfig, generate_project
from mp2amp.generate.project import GenerateResult, parse_industries, validate
from mp2amp.pipeline.stopping import signals_deferred, signals_held


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
        done: list[bool] = []  # the project is in --out: a stop now loses only the result

        def interrupted() -> str:
            if done:
                return f"the project in {out} is complete; only its result was not printed"
            return ("nothing was written (the partial project was removed): run the same "
                    "command again")

        with cli_errors(interrupted, as_json=as_json):
            problems: list[str] = []
            config = GenerateConfig(
                out=out, users=users, days=days, start=_parse_start(start, problems), seed=seed,
                id_merge=id_merge, timezone=timezone, legacy_time=legacy_time, dirty=dirty,
                industries=parse_industries(industry), gzip=not no_gzip,
            )
            _clear_leftover(out)
            validate(config, problems)  # every problem at once, before anything is written
            result = _generate(config)
            done.append(True)
            emit({**result.as_dict(), "out": str(out)}, as_json, _render)


# where a project is generated before it is moved into --out, inside it: the same file
# system (a mount point as --out cannot take a rename from beside it)
PARTIAL = ".partial"
# in --out while .partial's entries are moved into it (written before the first rename,
# removed after project.json's): it alone tells a move cut short by a kill from a user's
# folder that merely looks generated (a name check would delete such a folder), so only
# a folder holding it is ever cleared of anything but .partial
MOVING = ".partial-moving"
# what a generation writes (mp2amp.generate.project), folders and files by their path in
# the project: a PARTIAL holding nothing else is a killed one's (kill -9)
_WRITTEN_FOLDERS = {"events", "profiles", "profiles/groups", "identity", "truth"}
_WRITTEN_FILES = re.compile(
    r"events/\d{4}-\d{2}-\d{2}\.jsonl(\.gz)?|profiles/users\.jsonl\.gz"
    r"|profiles/groups/company_id\.jsonl\.gz|identity/mappings\.jsonl\.gz"
    r"|truth/(event_person\.tsv\.gz|daily_counts\.json|metrics\.json|summary\.json)"
    r"|schema\.json|project\.json")


def _clear_leftover(out: Path) -> None:
    """Remove what a generation killed outright (kill -9, power loss) left in ``out``, so
    that the same command can run again: its partial project alone, or a move into ``out``
    cut short (``MOVING`` in it, ``project.json`` not: the project never was whole) with
    the entries moved so far. Anything else in it, at any depth (a user's file, a
    symlink), keeps it: ``--out`` is then refused as not empty, and nothing is deleted."""
    partial, moving = out / PARTIAL, out / MOVING
    try:
        names = {p.name for p in out.iterdir()}
        if PARTIAL not in names or partial.is_symlink() or not partial.is_dir() or \
                not _only_generated(partial, ""):
            return
        if names != {PARTIAL} and (
                MOVING not in names or "project.json" in names or moving.is_symlink()
                or not moving.is_file() or moving.stat().st_size  # an empty marker: no one's data
                or not _only_generated(out, "", {PARTIAL, MOVING})):
            return
    except OSError:  # not a folder (validate says so), or unreadable: never deleted
        return
    # the moved entries, then the marker, then .partial: a kill in between leaves a state
    # this function clears too
    for name in sorted(names - {PARTIAL, MOVING}):
        if (out / name).is_dir():  # checked above: never a symlink
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    moving.unlink(missing_ok=True)
    shutil.rmtree(partial)


def _only_generated(folder: Path, prefix: str, skip: set[str] | None = None) -> bool:
    """Whether ``folder`` (``prefix`` its path in the project) holds only what a
    generation writes, ``skip`` aside; symlinks are never followed, nor taken for a
    generated file."""
    with os.scandir(folder) as entries:
        for entry in entries:
            path = prefix + entry.name
            if skip and entry.name in skip:
                continue
            if entry.is_dir(follow_symlinks=False):
                if path not in _WRITTEN_FOLDERS or \
                        not _only_generated(Path(entry.path), path + "/"):
                    return False
            elif not entry.is_file(follow_symlinks=False) or \
                    not _WRITTEN_FILES.fullmatch(path):
                return False
    return True


def _generate(config: GenerateConfig) -> GenerateResult:
    """``generate_project`` into ``--out/.partial``, whose files are moved into ``--out``
    at the end: Ctrl-C or SIGTERM (never raised inside the compiled generator) removes it
    and leaves ``--out`` as it was, so the same command runs again. The move is held
    from stops: once it is done the project is whole, and a stop is too late to undo it."""
    out = config.out
    created = not out.exists()
    partial = out / PARTIAL
    result: GenerateResult | None = None
    moved = False
    try:
        with signals_deferred(sigterm=True):
            result = generate_project(replace(config, out=partial))
            with signals_held():
                _move_entries(partial, out)
                moved = True
    except BaseException as exc:
        if not (moved and isinstance(exc, KeyboardInterrupt)):
            shutil.rmtree(partial, ignore_errors=True)
            if created:  # made for the generation; never removed with something in it
                with suppress(OSError):
                    out.rmdir()
            raise
    assert result is not None  # moved: the stop came after the project was whole
    return result


def _move_entries(partial: Path, out: Path) -> None:
    try:
        (out / MOVING).touch(exist_ok=False)
        _sync_folder(out)  # on disk before any rename (power loss)
    except OSError as exc:
        raise InputError(f"cannot write {out / MOVING} ({exc.strerror or exc}); nothing was "
                         "moved into --out: choose a folder that can be written") from None
    # project.json last: a project without it is not a whole one
    for entry in sorted(partial.iterdir(), key=lambda p: p.name == "project.json"):
        try:
            entry.rename(out / entry.name)
        except OSError as exc:  # something put in --out meanwhile
            (out / MOVING).unlink(missing_ok=True)  # not ours alone: never cleared
            raise InputError(f"cannot move {entry} into --out {out} ({exc.strerror or exc}: "
                             "something else writes there); the project there is incomplete: "
                             "choose a new --out") from None
    (out / MOVING).unlink()
    partial.rmdir()


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a folder that cannot be opened to sync: the rename order is all there is
    try:
        with suppress(OSError):  # a file system that cannot sync a folder
            os.fsync(fd)
    finally:
        os.close(fd)
