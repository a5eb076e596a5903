"""Input files that overlap in time (several part files of one day) are merged before the
load, so a device's events still reach Amplitude in time order;
every window is counted, dead letters keep their own file and line, a resume after a
crash does not merge again. (Before, one day split into two interleaved part files sent
226 of 529 events after a later event of their device.)"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    FAST,
    Project,
    amplitude,
    assert_exactly_once,
    make_config,
    order_breaks,
)

from mp2amp.ledger import Ledger, WindowRow
from mp2amp.pipeline.migrate import EXIT_OK, ledger_path, migrate
from mp2amp.pipeline.overlaps import overlapping_groups

BAD_LINE = b'{"event": "Cut", "properties": {"time": 17'


def _parts(project: Project, dest: Path) -> tuple[Path, list[tuple[str, int]]]:
    """Each day file cut into two interleaved halves (a.jsonl: lines 1, 3, ...; b.jsonl:
    2, 4, ...), a malformed line first in every b file."""
    dest.mkdir()
    bad = []
    for day in sorted(project.events.iterdir()):
        lines = gzip.decompress(day.read_bytes()).splitlines()
        stem = day.name.removesuffix(".jsonl.gz")
        (dest / f"{stem}-a.jsonl").write_bytes(b"\n".join(lines[0::2]) + b"\n")
        b = dest / f"{stem}-b.jsonl"
        b.write_bytes(b"\n".join([BAD_LINE, *lines[1::2]]) + b"\n")
        bad.append((str(b), 1))
    return dest, bad


def test_overlapping_part_files_are_sent_in_each_devices_time_order(
        project: Project, tmp_path: Path) -> None:
    events, bad = _parts(project, tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, tmp_path / "work", url)
        result = migrate(config, upload_overrides=FAST)
        assert_exactly_once(url, project.expected)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert order_breaks(tmp_path / "amp", min_devices=11) == []
    merged = result.identity["overlapping_windows_merged"]
    assert [[Path(w).name for w in group] for group in merged] == [
        [f"2024-01-0{d}-a.jsonl", f"2024-01-0{d}-b.jsonl"] for d in (1, 2, 3)]
    # every window is counted: the a windows read both halves, the b windows nothing
    reads = {Path(w.window).name: w.read for w in result.windows}
    assert all(reads[f"2024-01-0{d}-b.jsonl"] == 0 for d in (1, 2, 3))
    assert sum(reads.values()) == result.totals["read"]
    assert all(w.balanced for w in result.windows)
    # the malformed lines are dead-lettered with their own file and line
    rows = [orjson.loads(r) for r in (tmp_path / "work" / "dead-letters.jsonl")
            .read_bytes().splitlines()]
    assert set(bad) <= {(r["source"], r["line"]) for r in rows if r["reason"] == "malformed_json"}


class _Crash(Exception):
    pass


def test_a_resume_after_a_crash_keeps_the_merge(project: Project, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    events, _ = _parts(project, tmp_path / "events")

    def crash(*_: Any) -> None:  # the first window loaded: the load is under way
        raise _Crash

    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, tmp_path / "work", url)
        with monkeypatch.context() as m, pytest.raises(_Crash):
            m.setattr(Ledger, "mark_loaded", crash)
            migrate(config, upload_overrides=FAST)
        ledger = Ledger(ledger_path(config))
        try:
            staged = {Path(w.window_id).name: Path(str(w.staged_path)).name
                      for w in ledger.windows()}
        finally:
            ledger.close()
        assert all(name.endswith(".merged.jsonl") for w, name in staged.items()
                   if w.endswith("-a.jsonl"))
        result = migrate(config, resume=True, upload_overrides=FAST)
        assert_exactly_once(url, project.expected)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert "overlapping_windows_merged" not in result.identity  # merged once, before
    assert order_breaks(tmp_path / "amp", min_devices=11) == []


def _window(tmp_path: Path, seq: int, keys: list[float], state: str = "extracted") -> WindowRow:
    path = tmp_path / f"w{seq}.jsonl"
    path.write_bytes(b"".join(b'null\t[%s,"w%d",%d,{},null]\n' % (orjson.dumps(k), seq, i)
                              for i, k in enumerate(keys, 1)))
    return WindowRow(f"w{seq}", seq, "file", {}, state, str(path), len(keys), {})


@pytest.mark.parametrize(("spans", "groups"), [
    ([[1, 5], [6, 9]], []),                       # one after the other
    ([[1, 5], [5, 9]], [["w0", "w1"]]),           # touching: copies of one event may meet
    ([[1, 5], [4, 9]], [["w0", "w1"]]),
    ([[1, 3], [10, 12], [2, 4]], [["w0", "w2"]]),  # the third overlaps the first only
    ([[1, 9], [2, 3], [4, 5], [20, 21]], [["w0", "w1", "w2"]]),
    ([[-1e18, 5], [4, 9]], [["w0", "w1"]]),        # unknown times (sorted first) are no span
])
def test_overlapping_groups(tmp_path: Path, spans: list[list[float]],
                            groups: list[list[str]]) -> None:
    windows = [_window(tmp_path, i, keys) for i, keys in enumerate(spans)]
    assert [[w.window_id for w in g] for g in overlapping_groups(windows)] == groups


def test_a_loaded_or_started_window_is_never_merged(tmp_path: Path) -> None:
    windows: list[Any] = [_window(tmp_path, 0, [1, 5], state="loaded"),
                          _window(tmp_path, 1, [2, 3])]
    assert overlapping_groups(windows) == []
    # batches of an earlier run (one without the merge) keep their windows as they are
    started = [_window(tmp_path, 2, [1, 5]), _window(tmp_path, 3, [2, 3])]
    assert len(overlapping_groups(started)) == 1
    assert overlapping_groups(started, frozenset({"w2"})) == []



def test_many_overlapping_files_are_merged_in_rounds(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.pipeline import staged_merge

    monkeypatch.setattr(staged_merge, "MERGE_FILES", 2)
    windows = [_window(tmp_path, i, [1.0, 2.0 + i, 9.0]) for i in range(5)]
    n = staged_merge.merge_staged([Path(str(w.staged_path)) for w in windows], tmp_path / "all")
    rows = [orjson.loads(line.split(b"\t", 1)[1])
            for line in (tmp_path / "all").read_bytes().splitlines()]
    assert n == 15 and [r[0] for r in rows] == sorted(r[0] for r in rows)
    # equal times keep the window order: w0 before w1 ... before w4
    assert [r[1] for r in rows if r[0] == 1.0] == [f"w{i}" for i in range(5)]
    assert [r[1] for r in rows if r[0] == 9.0] == [f"w{i}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all"] + [f"w{i}.jsonl" for i in range(5)]
