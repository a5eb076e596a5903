"""``mp2amp generate``: write a realistic synthetic Mixpanel project with its ground truth."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer

from mp2amp.cli import BLANK_PROBLEMS
from mp2amp.cli.output import cli_errors, console, emit
from mp2amp.errors import ConfigError, InputError
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


def _stand_in(ctx: typer.Context, blank: Mapping[str, str], name: str, value: str) -> str:
    """A blank option's default (its problem is listed already), so that the checks that
    follow do not report it a second time; any other option's value as it is."""
    if name not in blank:
        return value
    return next(str(p.default) for p in ctx.command.params if p.name == name)


def _validate(config: GenerateConfig, problems: list[str], blank_out: bool) -> None:
    """``validate``, but a blank --out (listed already) is not also reported as the
    current folder it would be."""
    try:
        validate(config, problems)
    except ConfigError as exc:
        if not blank_out:
            raise
        raise ConfigError([p for p in exc.problems if not p.startswith("--out ")],
                          source=exc.source) from None


def _dangling_out(out: Path) -> str | None:
    """The problem of an --out that is, or is under, a symlink to a missing folder (an
    unmounted drive): validate takes it for a folder to create, and creating
    ``--out/.partial`` then fails naming that inner path, with "File exists"."""
    for link in (out, *out.parents):
        if not os.path.lexists(link):
            continue  # to be created: its nearest existing ancestor decides
        if not link.is_symlink():
            return None
        try:
            link.stat()
        except FileNotFoundError:
            where = "" if link == out else f" cannot be created: {link}"
            return (f"--out {out}{where} is a symlink to a missing folder "
                    f"({os.readlink(link)}); mount it or choose another --out")
        except OSError:
            return None  # a loop, a permission: creating it reports that as it is
        return None
    return None


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
        ctx: typer.Context,
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
            # blank options, refused by mp2amp.cli, are listed with the other problems
            blank: dict[str, str] = ctx.meta.get(BLANK_PROBLEMS, {})
            problems = list(blank.values())
            start, id_merge, timezone, industry = (
                _stand_in(ctx, blank, name, value) for name, value in (
                    ("start", start), ("id_merge", id_merge), ("timezone", timezone),
                    ("industry", industry)))
            config = GenerateConfig(
                out=out, users=users, days=days, start=_parse_start(start, problems), seed=seed,
                id_merge=id_merge, timezone=timezone, legacy_time=legacy_time, dirty=dirty,
                industries=parse_industries(industry), gzip=not no_gzip,
            )
            if "out" not in blank:  # a blank --out is the current folder: never cleared
                _clear_leftover(out)
                problems.extend(filter(None, [_dangling_out(out)]))
            # every problem at once, before anything is written
            _validate(config, problems, "out" in blank)
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
    the entries moved so far. A move killed after its last rename (``project.json`` and
    ``MOVING`` in it) left a whole project: only the marker and ``.partial`` (empty) go,
    and ``--out`` is then refused as holding a project, as any whole project is. Anything
    else in it, at any depth (a user's file, a symlink), keeps it: ``--out`` is then
    refused as not empty, and nothing is deleted."""
    partial, moving = out / PARTIAL, out / MOVING
    try:
        names = {p.name for p in out.iterdir()}
        if "project.json" in names:
            _clear_finished_move(out, names)
            return
        if PARTIAL not in names or partial.is_symlink() or not partial.is_dir() or \
                not _only_generated(partial, ""):
            return
        if names != {PARTIAL} and (
                MOVING not in names or not _is_marker(moving)
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


def _is_marker(path: Path) -> bool:
    """An empty regular file (no one's data), never a symlink."""
    info = path.lstat()
    return stat.S_ISREG(info.st_mode) and not info.st_size


def _clear_finished_move(out: Path, names: set[str]) -> None:
    """Remove the marker and ``.partial`` that a move killed after renaming
    ``project.json`` left beside the whole project, when nothing but the project is
    there. ``.partial`` may still hold a second name of a moved file (a kill between the
    link and the unlink of ``_rename_no_replace``'s fallback): its data is in ``out``."""
    partial, moving = out / PARTIAL, out / MOVING
    if MOVING not in names or not _is_marker(moving) or \
            not _only_generated(out, "", {PARTIAL, MOVING}):
        return
    linked: list[Path] = []
    if PARTIAL in names:
        if partial.is_symlink() or not partial.is_dir():
            return
        for entry in partial.iterdir():
            if not _same_file(entry, out / entry.name):
                return  # a copy, or anything else: it may be someone's, so all is kept
            linked.append(entry)
    # .partial before the marker: a kill in between leaves a state cleared here too
    for entry in linked:
        entry.unlink()
    with suppress(FileNotFoundError):
        partial.rmdir()
    moving.unlink()


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are regular files (never symlinks) of one inode."""
    try:
        sa, sb = a.lstat(), b.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode) and \
        (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


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
            _rename_no_replace(entry, out / entry.name)
        except OSError as exc:  # something put in --out meanwhile
            (out / MOVING).unlink(missing_ok=True)  # not ours alone: never cleared
            raise InputError(f"cannot move {entry} into --out {out} ({exc.strerror or exc}: "
                             "something else writes there); the project there is incomplete: "
                             "choose a new --out") from None
    # .partial before the marker: a kill between them leaves the marker beside a whole
    # project, which the next run tells from a user's folder (an empty .partial would not)
    partial.rmdir()
    (out / MOVING).unlink()


# renameat2 (linux/fs.h, fcntl.h): fail with EEXIST rather than replace the target
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
# renameat2's answers when the kernel or the file system lacks it (then a fallback)
_NO_RENAMEAT2 = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}
# os.link's answers when the file system has no hard links (then check-then-rename)
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


@cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """libc's renameat2 (glibc 2.28+), or None: Python has no wrapper for it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # an older libc, or one without it (musl < 1.2.?)
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                     ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (one file system), failing with EEXIST where ``dst``
    exists: ``os.rename`` would silently replace a file, or an empty folder, that
    something else put there. Atomic with renameat2; else a file is linked then unlinked
    (no replacing either), and a folder (or a file where there are no hard links) is
    checked then renamed: a narrow window, and a folder is never renamed over a
    non-empty one."""
    func = _renameat2()
    if func is not None:
        if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in _NO_RENAMEAT2:
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    if not src.is_dir() or src.is_symlink():
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        else:
            src.unlink()
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


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
