"""Windows whose staged file is gone are staged again from their source, then checked;
windows staged from a damaged file are unstaged until it is restored.

Why: every run reads every staged window (the identity graph is rebuilt on each run, and
loaded windows are replayed for their dedup and session state), so a resume after someone
freed space by deleting the work folder's ``staged/`` files stopped at the first missing
one with a traceback. Staging is deterministic (the same source gives the same sorted
file, hence the same batches), so such a window is staged again from its source; when its
batches were already cut, its record count must come out as the ledger has it, or the
source changed and its batches cannot be matched again: that stops the run, and the new
copy is dropped so that a later resume stages it again instead of loading it. The same
count is not enough: a source that gives other records, or the same in another order,
would put other events under the names of the done batches (never sent, and the run
balanced), so the digest of the records as staged (the window spec's ``digest``, from
``staging.Staged``) must come out the same too; windows staged by an earlier mp2amp have
none, and only their counts are compared (a copy refused by the check writes its own
digest in the spec: what a window is checked against is kept aside, ``_keep_digests``).

The counts and digests to check are kept in the ledger (meta ``restage_expected`` and
``restage_digests``) until the check has passed: a run stopped by it, killed while
staging again, or stopped before the check (SIGTERM, a full disk) leaves the window
pending or staged but unchecked, and the next resume must check it all the same (it
used to stage it again unchecked, or load the changed copy already staged, and cut other
batches under the names of the done ones).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.pipeline.changed_copy import (
    as_staged,
    copy_away,
    copy_back,
    copy_refused,
    forget_was,
    lines_and_crc,
    move_aside,
)
from mp2amp.pipeline.overlaps import merge_groups
from mp2amp.pipeline.staged_names import staged_path
from mp2amp.pipeline.staging import DIGEST, LINES, TIES, damage_of


def restage_missing(ledger: Ledger, workdir: Path) -> dict[str, int]:
    """Mark the windows whose staged file is gone as pending; returns, per such window,
    the records the ledger had for it. A work folder moved (or copied) elsewhere, to a
    bigger disk, keeps its staged files under their names: the ledger is pointed at them
    there. A merged file that is gone is remade from all of its group's sources (each
    staged again, then merged as before: ``remerge_restaged``); a merged-away window's
    empty placeholder that is gone is written again. A window staged again whose copy
    was restored under its name meanwhile is pointed back at it (``_restored``)."""
    merged = ledger.merged_into()
    heads = set(merged.values())
    before = _expected(ledger)  # from an earlier resume that did not get to its check
    earlier = set(before)
    _restored(ledger, workdir, before, merged)
    rows = ledger.windows()
    cut = ledger.batch_windows()
    moved: list[tuple[str, str, int]] = []
    gone: list[str] = []
    heads_gone: set[str] = set()
    placeholders: list[tuple[str, Path]] = []
    for w in rows:
        if w.state == "pending":
            # unstaged with its batches cut (a stop on damage, say): its records count
            # is still the one they were cut from
            if w.window_id in cut and w.window_id not in before:
                before[w.window_id] = w.records
            continue
        if w.staged_path is None:
            continue
        found = _staged_copy(w.staged_path, workdir)
        if found is not None:
            if found != Path(w.staged_path):
                moved.append((w.window_id, str(found), w.records))
            continue
        if w.window_id in merged:  # a merged-away window: its file is an empty placeholder
            placeholders.append((w.window_id, workdir / "staged" / Path(w.staged_path).name))
            continue
        if w.window_id in heads:
            heads_gone.add(w.window_id)
        before.setdefault(w.window_id, w.records)
        gone.append(w.window_id)
    groups = _groups(rows, merged, heads_gone)
    _refuse_unmatched_merges(ledger, groups)
    going = dict.fromkeys(gone)  # in order, looked up by id (a group may hold thousands)
    for group in groups:  # the whole group is staged again, then merged (in window order)
        for window_id in group[1:]:
            before.setdefault(window_id, 0)
            going.setdefault(window_id)
    gone = list(going)
    in_groups = {window_id for group in groups for window_id in group[1:]}
    placeholders = [p for p in placeholders if p[0] not in in_groups]
    for window_id, path in placeholders:  # the group's merged file is still there
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        moved.append((window_id, str(path), 0))
    if groups:
        known = _remerge(ledger)
        ledger.set_meta(_REMERGE, orjson.dumps(
            known + [g for g in groups if g not in known]).decode())
    if before:
        _keep_digests(ledger, rows, before, earlier)  # before staging again replaces them
        _set_expected(ledger, before)  # first: a kill after it still checks them
    for window_id in gone:  # together: a kill between left a window pointing at its copy
        with ledger.atomic():  # with an "away" record (a copy restored then went unchecked)
            copy_away(ledger, window_id, window_id in earlier)
            ledger.mark_pending(window_id)
    if moved:
        ledger.restage(moved)
    return before


def _restored(ledger: Ledger, workdir: Path, expected: dict[str, int],
              merged: dict[str, str]) -> None:
    """Point each window to stage again (``expected``: its copy was gone) whose copy is
    back under its own name (``staged_path``) at it, as staged with the records and
    digest its check expects: the user restored it, as a stop on a gone source or a
    changed copy says, and its source may be gone. The identity pass then checks its
    lines (``stop_on_changed_copy``) and its checksum (``check_copy_text``: against the
    copy recorded before it went), and ``check_restaged`` its count and digest against
    its batches. Why: the next run removed it as a leftover (a pending window has no
    staged file) and stopped again on its gone source. A merge's windows are left to
    be staged and merged again: a file of their own is not what the merge recorded; the
    merged file itself, restored under its name, is used (``_restored_merges``)."""
    in_merges = set(merged) | set(merged.values()) | {m for g in _remerge(ledger) for m in g}
    digests = _digests(ledger)
    _restored_merges(ledger, workdir, expected, digests)
    for w in ledger.windows():
        copy = staged_path(workdir, w.window_id)
        if (w.state != "pending" or w.staged_path is not None or w.window_id not in expected
                or w.window_id in in_merges or copy.is_symlink() or not copy.is_file()):
            continue
        kept = digests.get(w.window_id)  # a copy refused meanwhile wrote its own
        spec = w.spec if kept is None else {**w.spec, DIGEST: kept}
        with ledger.atomic():
            copy_back(ledger, w.window_id)
            ledger.mark_extracted(w.window_id, str(copy), expected[w.window_id], spec)


def _restored_merges(ledger: Ledger, workdir: Path, expected: dict[str, int],
                     digests: dict[str, str | None]) -> None:
    """Point each merge group to stage and merge again whose merged file is back under its
    name (as recorded when merged) at it, and its merged-away windows at their empty
    placeholders, as they were: the user restored it, as a stop on a gone part file
    says. Why: the next run removed it as a leftover and stopped again the same way.
    Its line count and checksum must be the merge's own (``record_copy``; the record as
    the copy went away, ``as_staged``): any other file, or one with no such record to be
    checked against, is moved aside (``FILE.changed``, kept) and the run stops, naming it.
    So is one restored after a resume staged some of the group again (killed, or stopped
    on a gone part file, before the merge): those copies are dropped for it; else it was
    removed as a leftover (its head no longer pending) or merged over."""
    rows = {w.window_id: w for w in ledger.windows()}
    for group in _remerge(ledger):
        members = [rows[m] for m in group if m in rows]
        if (len(members) != len(group)
                or any(not _restaging(w, workdir, expected) for w in members)):
            continue
        copy = workdir / "staged" / (staged_path(workdir, group[0]).stem + ".merged.jsonl")
        known = [as_staged(ledger, m) for m in group]
        records = [k for k in known if k is not None]
        if (len(records) == len(group) and str(records[0][0]).endswith(".merged.jsonl")
                and all(str(k[0]).endswith(".merged-away.jsonl") for k in records[1:])):
            copy = workdir / "staged" / str(records[0][0])
        else:
            records = []  # not the merge's records (an earlier mp2amp kept none)
        if copy.is_symlink() or not copy.is_file():
            continue
        if not records:
            aside = move_aside(copy)
            raise TerminalError(
                f"the staged copy {copy} restored for the {len(group)} files merged into "
                f"{group[0]} cannot be checked: the ledger has no line count and checksum "
                "of that merged file (an earlier mp2amp merged it), so it cannot be used, "
                f"and was moved to {aside.name} beside it. Restore the input files merged "
                "into it and run the same `mp2amp migrate` command with --resume: they are "
                "staged and merged again")
        lines, crc = lines_and_crc(copy)
        if (lines, crc) != (records[0][1], records[0][3]):
            aside = move_aside(copy)
            raise TerminalError(
                f"the staged copy {copy} restored for the {len(group)} files merged into "
                f"{group[0]} holds {lines} lines whose text is not the merged file's "
                f"({records[0][1]} lines; its checksum differs): it cannot be used, and was "
                f"moved to {aside.name} beside it. Restore the input files merged into it "
                f"(or an intact copy of {copy.name}) and run the same `mp2amp migrate` "
                "command with --resume")
        paths = [copy, *(workdir / "staged" / str(k[0]) for k in records[1:])]
        for path in paths[1:]:
            path.write_bytes(b"")  # the placeholders of the windows merged away
        with ledger.atomic():
            for w, path in zip(members, paths, strict=True):
                kept = digests.get(w.window_id)
                copy_back(ledger, w.window_id)
                ledger.mark_extracted(w.window_id, str(path), expected[w.window_id],
                                      w.spec if kept is None else {**w.spec, DIGEST: kept})
        for w in members:  # copies staged again before it was restored: replaced by it
            # this work folder's own (a folder copied elsewhere: never the old folder's)
            here = None if w.staged_path is None else workdir / "staged" / Path(w.staged_path).name
            if here is not None and here not in paths:
                here.unlink(missing_ok=True)


def _restaging(w: WindowRow, workdir: Path, expected: dict[str, int]) -> bool:
    """Whether ``w`` is being staged again (its check ahead): pending without a copy, or
    staged again under its own name (not merged yet)."""
    if w.window_id not in expected:
        return False
    if w.state == "pending":
        return w.staged_path is None
    return (w.state in _STAGED and w.staged_path is not None
            and Path(w.staged_path).name == staged_path(workdir, w.window_id).name)


def _staged_copy(recorded: str, workdir: Path) -> Path | None:
    """Where a window's staged file is now: the work folder's own copy first (one copied
    elsewhere, the old folder still there to be deleted once the copy runs, must not read
    the old folder's files), else where the ledger has it; None when it is gone."""
    was = Path(recorded)
    here = workdir / "staged" / was.name
    if here.resolve() != was.resolve() and here.is_file():
        return here
    return was if was.exists() else None


def _groups(rows: list[WindowRow], merged: dict[str, str], heads: set[str]) -> list[list[str]]:
    """The merge groups (head first, then window order) of ``heads``: every window whose
    records the head holds (an earlier mp2amp left a head merged away later pointing at
    the head it was, not at the one that holds them)."""
    seq = {w.window_id: w.seq for w in rows}
    return [[head, *sorted(_members(merged, head), key=seq.__getitem__)]
            for head in sorted(heads, key=seq.__getitem__)]


def _members(merged: dict[str, str], head: str) -> list[str]:
    """The windows merged into ``head``, in the order they were merged."""
    def root(window_id: str) -> str:
        seen = {window_id}
        while window_id in merged and merged[window_id] not in seen:
            window_id = merged[window_id]
            seen.add(window_id)
        return window_id

    return [m for m in merged if root(m) == head]


def _refuse_unmatched_merges(ledger: Ledger, groups: list[list[str]]) -> None:
    """Stop before a group with batches cut is merged again into a file that need not
    match them (``_refuse_arrival_line_merges``, ``_refuse_stepwise_merges``)."""
    if not groups:
        return
    cut = ledger.batch_windows()
    groups = [g for g in groups if g[0] in cut]
    _refuse_arrival_line_merges(ledger, groups)
    _refuse_stepwise_merges(ledger, groups)


def _refuse_arrival_line_merges(ledger: Ledger, groups: list[list[str]]) -> None:
    """Stop before a group (its batches cut) is merged again when one of its Export API
    days keeps the lines it arrived at (staged by an earlier mp2amp: no ``lines`` mark):
    the merge orders a day's same-time lines by line, i.e. by the order the day is
    fetched in, which Mixpanel does not promise and the day's digest (of its records in
    content order) does not see. Batches cut again would hold other events."""
    rows = {w.window_id: w for w in ledger.windows()}
    for group in groups:
        days = [rows[m] for m in group if m in rows and rows[m].kind == "export"]
        if any(w.spec.get(LINES) != "staged" for w in days):
            raise TerminalError(
                f"the staged file of {group[0]} is gone; it was merged from {len(group)} "
                "overlapping Export API days that an earlier mp2amp staged with the line "
                "numbers of their download, and its batches were cut from that file: "
                "merged again, their same-time events would follow the order the days "
                "are fetched in now, which Mixpanel does not promise, and some would fall "
                "into other batches and never be sent. Put the work folder's staged files "
                "back as they were and run --resume again, or start a new run in a new "
                "work folder")


def _refuse_stepwise_merges(ledger: Ledger, groups: list[list[str]]) -> None:
    """Stop before a group is merged again whose batches were cut from a file an earlier
    mp2amp merged in steps (a window staged later merged into a merged file): that file
    put such a window's same-time events after the others, and a merge now puts them in
    window order, so batches cut again under the done ones' names would hold other
    events (some never sent). This mp2amp's merges depend only on the lines."""
    ours = ledger.line_ordered_merges()
    seq = {w.window_id: w.seq for w in ledger.windows()}
    files = _stepwise_order(ledger.merged_into())
    for group in groups:
        head = group[0]
        order = [seq.get(m, -1) for m in files.get(head, [head])]
        if head in ours or order == sorted(order):
            continue
        raise TerminalError(
            f"the staged file of {head} is gone; an earlier mp2amp merged it from "
            f"{len(group)} overlapping input files in more than one step, and its batches "
            "were cut from that file: merged again, its same-time events would fall into "
            "other batches, and some would never be sent. Put the work folder's staged "
            "files back as they were and run --resume again, or start a new run in a new "
            "work folder")


def _stepwise_order(merged: dict[str, str]) -> dict[str, list[str]]:
    """Per merged file, its windows in the order an earlier mp2amp put their same-time
    events: the steps as they were recorded (``merged_into``'s order; it pointed a window
    merged away at the file it went into), each appending the file merged away to the one
    it went into. A chain ({b, c} into b, then {a, b} into a) is a, b, c: window order."""
    files: dict[str, list[str]] = {}
    for away, into in merged.items():
        files[into] = files.get(into, [into]) + files.pop(away, [away])
    return files


def _remerge(ledger: Ledger) -> list[list[str]]:
    value = ledger.get_meta(_REMERGE)
    return [] if not value else [list(g) for g in orjson.loads(value)]


_REMERGE = "remerge"  # groups of windows staged again, to be merged again as they were


def remerge_restaged(ledger: Ledger) -> None:
    """After staging: each merge group whose merged file was gone (its windows staged
    again, one file each) is merged again, exactly as it was (``overlaps.merge_groups``):
    staging and the merge are deterministic, and the merge's order depends only on the
    lines (not on the steps a group was merged in), so the same sources give the same
    file and the same batches (``check_restaged`` then compares the counts). The groups stay in
    the ledger until merged: a resume stopped before this point merges them next time."""
    groups = _remerge(ledger)
    if not groups:
        return
    rows = {w.window_id: w for w in ledger.windows()}
    todo = [[rows[i] for i in group] for group in groups
            if all(i in rows for i in group)
            and any(rows[i].records for i in group[1:])]  # else merged already
    if any(w.state == "pending" or w.staged_path is None for group in todo for w in group):
        return  # not staged yet (the run stops before the load anyway)
    _refuse_unmatched_merges(ledger, [[w.window_id for w in group] for group in todo])
    merge_groups(ledger, todo)  # the groups stay listed until check_restaged passes


def _expected(ledger: Ledger) -> dict[str, int]:
    value = ledger.get_meta(_EXPECTED)
    return {} if value is None else {str(k): int(v) for k, v in orjson.loads(value).items()}


def _set_expected(ledger: Ledger, expected: dict[str, int]) -> None:
    ledger.set_meta(_EXPECTED, orjson.dumps(expected, option=orjson.OPT_SORT_KEYS).decode())


_EXPECTED = "restage_expected"  # window -> the records its batches were cut from
_DIGESTS = "restage_digests"  # window -> the digest of those records as staged


def _digests(ledger: Ledger) -> dict[str, str | None]:
    value = ledger.get_meta(_DIGESTS)
    return {} if not value else {str(k): None if v is None else str(v)
                                 for k, v in orjson.loads(value).items()}


def _set_digests(ledger: Ledger, digests: dict[str, str | None]) -> None:
    ledger.set_meta(_DIGESTS, orjson.dumps(digests, option=orjson.OPT_SORT_KEYS).decode())


def _keep_digests(ledger: Ledger, rows: list[WindowRow], expected: dict[str, int],
                  earlier: set[str]) -> None:
    """The digest each window to check is checked against, kept until its check passes:
    its spec's as it is first to be checked (staging it again writes the new copy's
    there, a refused copy's too), or None (counts only) for one staged by an earlier
    mp2amp without a digest. A window an earlier resume was already checking without a
    kept digest had none (an mp2amp before this one kept no None): its spec's digest now
    is a new copy's, maybe a refused one."""
    digests = _digests(ledger)
    known = dict(digests)
    for w in rows:
        if w.window_id in expected and w.window_id not in digests:
            digests[w.window_id] = (None if w.window_id in earlier or DIGEST not in w.spec
                                    else str(w.spec[DIGEST]))
    if digests != known:
        _set_digests(ledger, digests)


def awaiting_check(ledger: Ledger) -> set[str]:
    """The windows staged again whose check has not passed yet: staged before, whatever
    count a copy refused by the check left them (0 for a day Mixpanel answered empty)."""
    return set(_expected(ledger))


def check_restaged(ledger: Ledger, before: dict[str, int]) -> None:
    """After staging: a window staged again must give the records its batches were cut
    from, in the same order: the same count and, where the ledger has one, the same
    digest (only windows with batches, or merged into one: the others have nothing to
    match). Then the windows checked (or loaded) lose their copy's ``copy_text_was:``
    record (``forget_was``), in the transaction that drops them from the check."""
    if not before:  # nothing to check; rows an earlier mp2amp never dropped go now
        with ledger.atomic():
            forget_was(ledger, [w.window_id for w in ledger.windows()])
        return
    cut = ledger.batch_windows()
    groups = {group[0]: group for group in _remerge(ledger)}
    head_of = {m: head for head, group in groups.items() for m in group}
    digests = _digests(ledger)
    for w in ledger.windows():
        old = before.get(w.window_id)
        head = head_of.get(w.window_id, w.window_id)
        if old is None or w.state == "pending" or head not in cut:
            continue
        counted = w.window_id not in cut or w.records == old  # merged away: the head counts
        want = digests.get(w.window_id)  # None: an earlier mp2amp's, counts only
        same = want is None or want == w.spec.get(DIGEST)
        if not (counted and same):
            _refuse_changed(ledger, head, groups.get(head, [head]),
                            f"{w.records} records, not the {old} its batches were cut from"
                            if not counted else _what_changed(w, old))
    # every window checked (or without batches to match): nothing left to check
    windows = ledger.windows()
    left = {w.window_id: before[w.window_id] for w in windows
            if w.window_id in before and w.state == "pending"}
    kept = {k: v for k, v in digests.items() if k in left}
    with ledger.atomic():  # a window checked needs no record of the copy it had either
        if left != _expected(ledger):
            _set_expected(ledger, left)
        if kept != digests:
            _set_digests(ledger, kept)
        if groups:
            ledger.set_meta(_REMERGE, "")  # merged again and checked
        forget_was(ledger, (w.window_id for w in windows if w.window_id not in left))


def _what_changed(w: WindowRow, records: int) -> str:
    """What a window staged again with its count but another digest gives, naming only
    what can cause it for its kind. A file's records are compared as written (a checksum
    of each line: comparing what they say would cost staging ~0.6 us a record), so a file
    written again with its keys in another order, or other spacing, counts as changed
    too. An Export API day staged with ties by content has one order for any records:
    only other records change its digest."""
    if w.kind == "file":
        return (f"{w.records} records whose text differs from the lines its batches were "
                "cut from (other records, another order, or the same records written "
                "differently: keys in another order, other spacing, other escapes)")
    if w.spec.get(TIES) == "content":
        return (f"other records than the {records} its batches were cut from (as many, "
                "but some changed or replaced in Mixpanel)")
    return (f"other records than (or the {records} records in another order than) those "
            "its batches were cut from")


def _refuse_changed(ledger: Ledger, head: str, group: list[str], gives: str) -> None:
    """Drop the new copy of a window (a merge group: all of it) that does not match its
    batches, and stop the run: it stays expected, so the next resume checks it again."""
    for window_id in group:  # a merge group is staged again whole (and merged again)
        row = ledger.window(window_id)
        if row is not None and row.staged_path is not None:
            Path(row.staged_path).unlink(missing_ok=True)
        with ledger.atomic():
            copy_refused(ledger, window_id)  # a copy restored next is checked as staged
            ledger.mark_pending(window_id)
    what = (f"{head} was staged again" if len(group) == 1 else
            f"the {len(group)} files merged into {head} ({', '.join(group)}) "
            "were staged again and merged")
    raise TerminalError(
        f"{what} (its staged file was gone) and now gives {gives}: the source changed "
        "since. Put the source back as it was and run --resume again, or start a new run "
        "in a new work folder")


_STAGED = frozenset({"extracted", "identity"})  # staged, not loaded


def stop_on_damaged_files(ledger: Ledger) -> None:
    """Before the load: the windows staged from a file cut short (a .gz without its end)
    and not cut into batches yet are unstaged and the run stops (``[source] damaged_files
    = "stop"``), those an earlier run staged too (it was killed before its check):
    nothing of them is sent, so a file restored (downloaded again) is staged whole on
    ``--resume``. Without this, the records up to the damage went out, the rest was one
    rejection, the run exited 0, and no resume could add the rest (its batches were cut).

    A window whose batches were already cut (a run with ``damaged_files = "keep"``,
    staged again on resume under "stop") is kept: some of it was sent, and restoring the
    file could never match those batches again. So is a window a run under "keep" merged
    with others (only a "keep" run merges a damaged one): the merged file holds theirs."""
    found: list[str] = []
    merged = ledger.merged_into()
    cut = ledger.batch_windows() | set(merged) | set(merged.values())
    for w in ledger.windows():
        if w.state not in _STAGED or w.staged_path is None or w.window_id in cut:
            continue
        damage = damage_of(Path(w.staged_path))
        if damage is None:
            continue
        found.append(damage.split("; ")[0])
        Path(w.staged_path).unlink(missing_ok=True)
        ledger.mark_pending(w.window_id)
    if found:
        raise InputError(
            f"{len(found)} input file(s) are cut short, and nothing of them was sent: "
            + "; ".join(found) + ". Restore them (download again) and run the same `mp2amp "
            "migrate` command with --resume; or, to migrate what they hold up to the damage "
            "(the rest counted as one rejection), set [source] damaged_files = \"keep\" "
            "and resume")


def stop_on_changed_copy(ledger: Ledger, window_id: str, lines: int,
                         written_again: bool = False) -> None:
    """A staged copy holds the lines recorded when it was staged; the identity pass
    counts them before anything is sent. One cut short or changed since (a copy tool
    that stopped on a full disk, an edit) is moved aside (``FILE.changed``: never
    deleted, the source may be gone too;
    ``FILE.changed.2``... when taken) and the run stops: ``--resume`` stages the window
    again from its source, as it does a deleted copy, and checks it against any batches
    already sent. Found only at the load, it left a window whose batches were sent
    short, which no resume could mend. A window already loaded is left to the end's
    check: nothing more of it is sent, and its copy serves the identity graph only
    (unless ``written_again``: the S3-import sink, resumed, writes every window again)."""
    row = ledger.window(window_id)
    if (row is None or row.staged_path is None or row.records == lines
            or (row.state == "loaded" and not written_again)):
        return
    staged = Path(row.staged_path)
    aside = move_aside(staged)  # a free name: an earlier FILE.changed is kept
    raise TerminalError(
        f"the staged copy {staged} of {window_id} holds {lines} lines, but {row.records} "
        "were staged into it: it changed after staging (cut short or replaced). Nothing of "
        f"it was sent in this run; it was moved to {aside.name} beside it: run the same "
        "`mp2amp migrate` command with --resume to stage the window again from its source "
        f"(if the source is gone too, the resume says so: restore the source, or an intact "
        f"copy of the staged file as {staged.name})")
