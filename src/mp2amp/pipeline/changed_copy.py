"""A staged copy changed after staging: found by the identity pass, before anything of it
is sent, and moved aside (``FILE.changed``, never deleted: the source may be gone too).

Why a checksum of the copy's bytes, kept in the ledger when the identity pass first reads
a copy: a line edited in place (as many lines as were staged) passed the count check and
was sent edited. The window's staging digest (``staging.Staged``) cannot be computed again
from the copy: it is made of what each line said as read (the source line's own text for
most file lines; the record's canonical JSON for an Export API day, a Data Pipelines row
or a legacy-time row), and a staged line does not say which. A copy staged by a run killed
before its identity pass read it is first read, and so checked from, by the next run.

Why a free name for the copy moved aside: a copy that changed again after a resume was
moved over the first ``FILE.changed``, which was lost.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.staging import DIGEST

_META = "copy_text:"  # + window id: [file name, lines, staging digest, CRC-32 of its bytes]
# a 5th item: the copy recorded is away (its window pending: the next copy read is staged
# anew, unless ``restage_missing`` points the window back at one restored, ``copy_back``)
_AWAY = "away"
# + window id: the record a window had as its copy went away (``copy_away``), put back when
# the copy staged anew is refused (``copy_refused``): else the refused copy's record
# replaced it, and an edited copy restored next was taken as new and sent unchecked;
# dropped once the window's check passes (``forget_was``, from ``restage.check_restaged``)
_WAS = "copy_text_was:"


def recorded(ledger: Ledger, window_id: str) -> list[Any] | None:
    """The window's copy record ([name, lines, digest, crc], maybe "away"), if any."""
    was = ledger.get_meta(_META + window_id)
    known = None if was is None else orjson.loads(was)
    return known if isinstance(known, list) and len(known) >= 4 else None


def as_staged(ledger: Ledger, window_id: str) -> list[Any] | None:
    """The record of the copy a window had as it went away (``copy_away``), else its
    current one: what a copy the user restores is checked against, even once a copy
    staged anew (not yet accepted) was recorded in its place."""
    was = ledger.get_meta(_WAS + window_id)
    known = None if was is None else orjson.loads(was)
    return known if isinstance(known, list) and len(known) >= 4 else recorded(ledger, window_id)


def forget_was(ledger: Ledger, window_ids: Iterable[str]) -> None:
    """Drop the ``_WAS`` rows of windows whose copy staged anew was accepted (or that are
    done): nothing checks a restored copy against them any more."""
    for window_id in window_ids:
        was = ledger.get_meta(_WAS + window_id)
        if was is not None:
            ledger.drop_meta(_WAS + window_id, was)


def lines_and_crc(path: Path) -> tuple[int, int]:
    """A file's line count and the CRC-32 of its bytes (as the identity pass takes them)."""
    lines, crc = 0, 0
    with open(path, "rb") as f:
        for raw in f:
            lines, crc = lines + 1, zlib.crc32(raw, crc)
    return lines, crc


def writes_again(ledger: Ledger, output_dir: object, windows: Iterable[Any]) -> bool:
    """Whether the S3-import sink writes every window again (one is not written yet). A
    window pending only because its copy was gone and that was loaded comes back loaded
    once staged (``Ledger.mark_extracted``), so it does not count: a finished run with a
    copy deleted writes nothing (``_write_import_files``), and checked every copy."""
    if output_dir is None:
        return False
    back = ledger.unstaged_loaded()
    return any(w.state != "loaded" and w.window_id not in back for w in windows)


def record_copy(ledger: Ledger, window_id: str, name: str, lines: int,
                digest: object, crc: int) -> None:
    """Record a copy mp2amp wrote and so knows is intact (a merged file: the identity
    pass read, and checksummed, the files merged into it)."""
    ledger.set_meta(_META + window_id, orjson.dumps([name, lines, digest, crc]).decode())


def copy_away(ledger: Ledger, window_id: str, checking: bool = False) -> None:
    """A window's copy is gone and the window is to be staged again: a copy staged anew
    need not have the old one's bytes (its lines renumbered, say), so it is recorded
    anew; why the record is kept: a copy restored instead is checked against it. For a
    window still awaiting its check (``checking``) one kept already stays: its copy
    staged anew went too before it was accepted, and the copy sent from is still the one
    a restored copy must match (another is an earlier mp2amp's, which never dropped it)."""
    was = ledger.get_meta(_META + window_id)
    known = None if was is None else orjson.loads(was)
    if known is not None and len(known) == 4:
        with ledger.atomic():
            if not checking or ledger.get_meta(_WAS + window_id) is None:
                ledger.set_meta(_WAS + window_id, orjson.dumps(known).decode())
            ledger.set_meta(_META + window_id, orjson.dumps([*known, _AWAY]).decode())


def copy_refused(ledger: Ledger, window_id: str) -> None:
    """The copy staged anew for a window is refused (it does not match its batches): the
    record it had before is put back, away, so a copy restored next is checked against
    the copy that was staged (and sent from), not against the refused one."""
    was = ledger.get_meta(_WAS + window_id)
    if was is not None:
        ledger.set_meta(_META + window_id, orjson.dumps([*orjson.loads(was), _AWAY]).decode())


def copy_back(ledger: Ledger, window_id: str) -> None:
    """A copy the user restored under its name is the one recorded as it went away
    (``as_staged``), and is checked so."""
    known = as_staged(ledger, window_id)
    if known is not None and known[:4] != recorded(ledger, window_id):
        ledger.set_meta(_META + window_id, orjson.dumps(known[:4]).decode())


def move_aside(staged: Path) -> Path:
    """Rename ``staged`` to ``FILE.changed`` (``FILE.changed.2``, ... when taken)."""
    aside = staged.with_name(staged.name + ".changed")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = staged.with_name(f"{staged.name}.changed.{n}")
    staged.replace(aside)
    return aside


def check_copy_text(ledger: Ledger, window_id: str, lines: int, crc: int,
                    staged_now: bool, written_again: bool = False) -> None:
    """After the identity pass read a window's copy (``lines`` lines, their CRC-32
    ``crc``): a copy new to the ledger (staged in this run, ``staged_now``, or staged
    again: another name, count or staging digest, or the one recorded was away) is
    recorded; a known one whose bytes differ is moved aside and the run stops (as for a
    changed count, ``restage.stop_on_changed_copy``). A loaded window's copy serves the
    identity graph only (it is left to the end's check), unless the run writes every
    window again (``written_again``: the S3-import sink, resumed before all were written)."""
    row = ledger.window(window_id)
    if row is None or row.staged_path is None:
        return
    staged = Path(row.staged_path)
    key = _META + window_id
    now = [staged.name, lines, row.spec.get(DIGEST), crc]
    was = ledger.get_meta(key)
    known = None if was is None else orjson.loads(was)
    if known == now:
        return
    if staged_now or known is None or len(known) != 4 or known[:3] != now[:3]:
        ledger.set_meta(key, orjson.dumps(now).decode())
        return
    if row.state == "loaded" and not written_again:
        return
    # the record stays: an intact copy restored as the message says is checked against it
    # (one staged again by the resume is recorded anew: ``copy_away``)
    aside = move_aside(staged)
    raise TerminalError(
        f"the staged copy {staged} of {window_id} holds the {lines} lines staged into it, "
        "but their text is not what was staged (its checksum differs): it was cut or edited after "
        f"staging. Nothing of it was sent in this run; it was moved to {aside.name} beside "
        "it: run the same `mp2amp migrate` command with --resume to stage the window again "
        "from its source (if the source is gone too, the resume says so: restore the "
        f"source, or an intact copy of the staged file as {staged.name})")
