"""The merge of overlapping windows gives one order whatever steps it was made in, and a
group an earlier mp2amp merged in steps is refused on restage rather than cut again
into other batches (``staged_merge.merge_staged``, ``restage._refuse_stepwise_merges``); a
resumed import-file run whose files were all written reports the whole migration's
values (``settling.replayed_values``)."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger, WindowRow
from mp2amp.models import SourceRecord
from mp2amp.pipeline import migrate as migrate_module
from mp2amp.pipeline import overlaps
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.overlaps import merge_groups
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staging import read_staged, stage
from shared_kit import amplitude_emulator

T = 1_700_000_000


def _rec(source: str, line: int, iid: str, ingested: int) -> SourceRecord:
    return SourceRecord(source, line, {"event": "E", "properties": {
        "time": T, "distinct_id": "d", "$insert_id": iid, "mp_processing_time_ms": ingested}})


def test_a_merge_in_two_steps_gives_the_one_pass_merge_with_copies_across_files(
        tmp_path: Path) -> None:
    # a's copy of x is ingested first, c's last: merging {a, c} moves c's copy ahead of
    # a's other event y, so "each file's order" is not kept through a merge; b comes later
    stage([_rec("a", 1, "x", 1), _rec("a", 2, "y", 5)], tmp_path / "a")
    stage([_rec("b", 1, "z", 5)], tmp_path / "b")
    stage([_rec("c", 1, "x", 9)], tmp_path / "c")
    rank = {"a": 0, "b": 1, "c": 2}
    one = tmp_path / "one"
    merge_staged([tmp_path / "a", tmp_path / "b", tmp_path / "c"], one, rank)
    merge_staged([tmp_path / "a", tmp_path / "c"], tmp_path / "ac", rank)
    merge_staged([tmp_path / "ac", tmp_path / "b"], tmp_path / "two", rank)
    assert (tmp_path / "two").read_bytes() == one.read_bytes()
    # the latest-ingested copy takes the first copy's place; the others keep window order
    assert [(r.source, r.line) for r in read_staged(one)] == [
        ("c", 1), ("a", 2), ("b", 1), ("a", 1)]


def test_a_window_merged_away_twice_points_at_the_window_holding_its_records(
        tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.add_windows([(n, "file", {}) for n in "abc"])
    for n in "abc":
        stage([_rec(n, 1, n, 1)], tmp_path / n)
        ledger.mark_extracted(n, str(tmp_path / n), 1)

    def rows(*names: str) -> list[WindowRow]:
        return [w for w in ledger.windows() if w.window_id in names]

    merge_groups(ledger, [rows("b", "c")])  # a (first in window order) staged only later
    merge_groups(ledger, [rows("a", "b")])
    assert ledger.merged_into() == {"c": "a", "b": "a"}
    assert ledger.line_ordered_merges() == {"a", "b"}
    head = ledger.window("a")
    assert head is not None and head.records == 3
    ledger.close()


def _files(folder: Path) -> dict[str, list[int]]:
    folder.mkdir()
    files = {"a.jsonl": [10, 20], "b.jsonl": [20, 22], "c.jsonl": [15, 20]}
    for name, times in files.items():
        who = name[0]
        (folder / name).write_bytes(b"".join(orjson.dumps({"event": "E", "properties": {
            "time": T + s, "distinct_id": f"d-{who}", "$insert_id": f"iid-{who}-{s:04d}",
            "pad": "p" * 700}}) + b"\n" for s in times))  # one event a batch (1 KB bodies)
    return files


class _Stop(Exception):
    pass


def _two_step_run(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run 1 merges a and c only (b left out, as if b had not been staged yet) and stops
    before the load; run 2 merges b into that file, and stops after four batches."""
    groups = overlaps.overlapping_groups

    def without_b(windows: list[Any], started: frozenset[str] = frozenset()) -> Any:
        return groups([w for w in windows if not w.window_id.endswith("b.jsonl")], started)

    def stop(windows: Any) -> Any:
        raise _Stop

    with monkeypatch.context() as m:
        m.setattr(overlaps, "overlapping_groups", without_b)
        m.setattr(migrate_module, "load_order", stop)
        with pytest.raises(_Stop):
            migrate(cfg)
    sent = Ledger.batch_sent
    calls: list[str] = []

    def batch_sent(self: Ledger, batch_id: str, *args: Any) -> None:
        calls.append(batch_id)
        if len(calls) == 5:
            raise _Stop
        sent(self, batch_id, *args)

    with monkeypatch.context() as m:
        m.setattr(Ledger, "batch_sent", batch_sent)
        with pytest.raises(_Stop):
            migrate(cfg, resume=True)


def _delete_staged(work: Path, *, older_mp2amp: bool = False) -> None:
    ledger = Ledger(work / "ledger.sqlite")
    for w in ledger.windows():
        if w.staged_path:
            Path(w.staged_path).unlink(missing_ok=True)
    if older_mp2amp:  # its merges were not marked: their order depended on the steps
        ledger.set_meta("line_ordered_merges", "")
    ledger.close()


def _config(tmp_path: Path, url: str) -> Any:
    return load_config(None, {
        "source.files": [str(tmp_path / "in")], "amplitude.api_host": url,
        "mixpanel.timezone": "UTC", "run.workdir": str(tmp_path / "work"),
        "run.concurrency": 1, "run.transform_workers": 0, "amplitude.batch_max_bytes": 1024},
        env={"AMPLITUDE_API_KEY": "test-key"})


def test_a_group_merged_in_two_steps_restaged_sends_every_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path / "in")
    with amplitude_emulator(tmp_path / "amp", "test-key") as url:
        cfg = _config(tmp_path, url)
        _two_step_run(cfg, monkeypatch)
        _delete_staged(tmp_path / "work")
        result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK and result.totals["balanced"]
        with urllib.request.urlopen(url + "/_emulator/insert_ids", timeout=30) as resp:
            ids = orjson.loads(resp.read())
    stored = {iid.rsplit("-", 1)[0] for _, iid, _ in ids}
    assert stored == {f"iid-{n[0]}-{s:04d}" for n, times in files.items() for s in times}


def test_a_group_an_older_mp2amp_merged_in_steps_is_refused_on_restage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _files(tmp_path / "in")
    with amplitude_emulator(tmp_path / "amp", "test-key") as url:
        cfg = _config(tmp_path, url)
        _two_step_run(cfg, monkeypatch)
        _delete_staged(tmp_path / "work", older_mp2amp=True)
        with pytest.raises(TerminalError, match="in more than one step"):
            migrate(cfg, resume=True)
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        # nothing changed: staged files put back would be resumed from as they are
        assert all(w.state != "pending" for w in ledger.windows())
        ledger.close()


def test_a_resumed_import_file_run_reports_the_values_of_its_transform_workers(
        tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "day.jsonl").write_bytes(b"".join(orjson.dumps({"event": "E", "properties": {
        "time": T + i, "distinct_id": "d", "$insert_id": f"i{i}", "long": "x" * 2000}})
        + b"\n" for i in range(3)))
    cfg = load_config(None, {"source.files": [str(folder)], "mixpanel.timezone": "UTC",
                             "amplitude.output_dir": str(tmp_path / "out"),
                             "run.workdir": str(tmp_path / "work"),
                             "run.transform_workers": 1}, env={})
    assert migrate(cfg).as_dict()["values"]["truncated"] == {"long": 3}
    again = migrate(cfg, resume=True)
    assert again.exit_code == EXIT_OK
    assert again.as_dict()["load"]["events"] == 0  # nothing written again
    assert again.as_dict()["values"]["truncated"] == {"long": 3}
