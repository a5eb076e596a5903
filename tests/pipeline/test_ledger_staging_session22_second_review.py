"""Second review of session 22's changes: staging's merge rounds (f506f1d), the ledger's
paged reads (f32ee6f) and the loaded-windows-pending-again rows (5ae3dec).

The rounds number the runs they write on from the runs staging cut (``made =
len(runs)``), five digits, in the folder whose side file of big lines is ``run-99999``
(``_Stash.NAME``). A window of ~98,450 runs or more (one run per 20,000 records: about
two billion records in one window) therefore has a round write ``run-99999`` over the
stash, which is still open and read from at the end, and then ``run-100000``, a name
``staged_names`` no longer takes for a sort run. Records of one line each (``chunk=1``)
reach those numbers in a few seconds. Both were fixed (run numbers skip the stash's, and
longer ones are sort runs too); the tests below reach the same code with fewer runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mp2amp.ledger import Ledger
from mp2amp.models import SourceRecord
from mp2amp.pipeline import staging
from mp2amp.pipeline.staged_names import remove_leftovers, sort_runs_folder
from mp2amp.pipeline.staging import stage

T = 1_704_067_200


def _records(n: int, big_first: bool) -> Iterator[SourceRecord]:
    for i in range(1, n + 1):
        props = {"time": T + i, "distinct_id": f"u{i % 7}", "$insert_id": f"i{i}"}
        if big_first and i == 1:
            props["blob"] = "b" * (staging.BIG_LINE + 10)  # stubbed: its line in the stash
        yield SourceRecord("day", i, {"event": "E", "properties": props})


def test_merge_rounds_never_overwrite_the_big_line_stash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found with 98,500 one-record runs against the real ``run-99999`` (a round wrote over
    the open stash: 98,563 lines, the first mangled, the digest unchanged); here the stash
    is given a low number, so 300 runs pass it."""
    monkeypatch.setattr(staging._Stash, "NAME", "run-00150")
    rounds = stage(_records(300, big_first=True), tmp_path / "rounds", chunk=1)
    one = stage(_records(300, big_first=True), tmp_path / "one")  # a single sorted run
    assert rounds == one == 300
    assert rounds.digest == one.digest
    assert (tmp_path / "rounds").read_bytes() == (tmp_path / "one").read_bytes()


def test_runs_past_run_99999_skip_the_stash_and_are_left_overs_a_resume_removes(
        tmp_path: Path) -> None:
    """Found with a kill -9 in the round writing ``run-100000``: the leftover folder was not
    taken for a sort-runs folder (five digits only), so a resume kept its runs for ever."""
    assert [staging._run_path(tmp_path, n).name for n in (0, 99_998, 99_999, 100_000)] == [
        "run-00000", "run-99998", "run-100000", "run-100001"]
    staged = tmp_path / "staged"
    left = staged / ".stage-ab12_xyz"
    left.mkdir(parents=True)
    for name in ("run-00000", "run-99999", "run-100000", "run-1000000"):
        (left / name).write_bytes(b"x")
    assert sort_runs_folder(left)
    remove_leftovers(staged, [])  # what a resume does with the work folder
    assert list(staged.iterdir()) == []


def test_pending_again_rows_of_ids_with_colons_semicolons_unicode(tmp_path: Path) -> None:
    """Guard (passes): the per-window meta rows are found by a key range; ids holding ':'
    or ';' or non-ASCII text stay inside it, an older list is merged in once."""
    led = Ledger(tmp_path / "l.sqlite")
    ids = ["a:b", "a;b", "é:ü;x", "unstaged_loaded", ";"]
    led.add_windows([(w, "file", {}) for w in ids])
    for w in ids:
        led.mark_extracted(w, str(tmp_path / "x"), 1)
        led.mark_loaded(w, {"batches": 1})
    led.set_meta("unstaged_loaded", '[";"]')  # an older mp2amp's list
    for w in ids[:4]:
        led.mark_pending(w)
    assert led.unstaged_loaded() == set(ids)
    for w in ids:
        led.mark_extracted(w, str(tmp_path / "y"), 1)
    assert led.unstaged_loaded() == set()
    assert {w.state for w in led.windows()} == {"loaded"}
