"""Review (session 15, b) of the fixes made late in the session: the values report with
transform workers and import files (081aed4), same-time copies in staging and the merge
(a6f5312), revenue_not_a_number (cd2a82c) and the gzip fallback (e9a9009, cbbba3c, 1a6fdd3).

``xfail(strict=True)`` tests pin defects (the reason says what is wrong); the others guard
non-obvious behaviour of those fixes.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.models import Resolved
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.transform.events import Transformer
from mp2amp.transform.offline import transform_files
from mp2amp.transform.settings import RevenueSettings, TransformSettings
from shared_kit import amplitude_emulator

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def mp_event(name: str, t: int, iid: str, ingested: int, **props: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"time": t, "distinct_id": "$device:dev-0001", "$device_id": "dev-0001",
                         "mp_lib": "web", "$insert_id": iid}
    p.update(props)
    p["mp_processing_time_ms"] = ingested
    return {"event": name, "properties": p}


def transform(root: Path, files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``mp2amp transform`` in process over these files: the events out."""
    folder = root / "in"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name, records in files.items():
        path = folder / name
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
        names.append(str(path))
    config = load_config(None, {"run.workdir": str(root / "work")}, env={})
    out, rejects = io.BytesIO(), io.BytesIO()
    result = transform_files(config, names, out, rejects)
    assert result.summary.balanced, result.summary.as_dict()
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


# --- staging: copies of one event (a6f5312) --------------------------------------------------


def test_a_reshuffled_copy_ingested_later_is_the_copy_sent(tmp_path: Path) -> None:
    # two exports of the same day, the second taken after an identity merge (Mixpanel's
    # reshuffle re-keyed the event and kept the id it was sent with); the event was
    # re-imported in between with a corrected property
    old = mp_event("Buy", T0 + 5, "iid-000000001", T0 * 1000 + 6_000, plan="free")
    new = mp_event("Buy", T0 + 5, "iid-000000001", T0 * 1000 + 90_000, plan="pro",
                   **{"$distinct_id_before_identity": "$device:dev-0001"})
    new["properties"]["distinct_id"] = "user-1"
    events = transform(tmp_path, {"a.jsonl": [old], "b.jsonl": [new]})
    buys = [e for e in events if e["event_type"] == "Buy"]
    assert len(buys) == 1  # one event to the transform (one insert_id)...
    assert buys[0]["event_properties"]["plan"] == "pro"  # ...and the latest ingested copy


def test_distinct_events_with_a_placeholder_insert_id_keep_their_order(tmp_path: Path) -> None:
    first = mp_event("Tap", T0, "undefined", T0 * 1000 + 40, n=1)
    second = mp_event("Tap", T0, "undefined", T0 * 1000 + 95, n=2)
    events = transform(tmp_path, {"day.jsonl": [first, second]})
    assert len({e["insert_id"] for e in events}) == 2  # two events to the transform
    assert [e["event_properties"]["n"] for e in events] == [1, 2]  # in their order


_STAGE_SCRIPT = r"""
import hashlib, sys
from pathlib import Path
from mp2amp.models import SourceRecord
from mp2amp.pipeline.staged_merge import merge_staged
from mp2amp.pipeline.staging import stage
out = Path(sys.argv[1])
def records(tag, n):
    for i in range(n):
        iid = [f"i{i % 7}", i % 5, None, "i1"][i % 4]
        props = {"time": 1700000000 + i % 9, "distinct_id": ["a", 1, "1", None][i % 3],
                 "mp_processing_time_ms": (i * 7919) % 11, "n": i}
        if iid is not None:
            props["$insert_id"] = iid
        yield SourceRecord(f"{tag}.jsonl", i + 1, {"event": "EF"[i % 2], "properties": props})
a, b, m = out / "a.jsonl", out / "b.jsonl", out / "m.jsonl"
stage(records("a", 400), a, chunk=37)  # spilled in sorted runs
stage(records("b", 300), b, chunk=1000)
merge_staged([a, b], m)
print(hashlib.sha256(a.read_bytes() + m.read_bytes()).hexdigest())
"""


def test_staging_and_the_merge_give_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    # copy_key uses Python's hash, salted per process: a resume (or restage) in another
    # process must still cut the same file, hence the same batches
    digests = set()
    for seed in ("1", "2"):
        out = tmp_path / seed
        out.mkdir()
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", _STAGE_SCRIPT, str(out)], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        digests.add(done.stdout.strip())
    assert len(digests) == 1


# --- revenue_not_a_number (cd2a82c) ----------------------------------------------------------


def test_an_amount_that_is_not_a_number_is_counted_once_on_the_fast_paths_fallback() -> None:
    rs = RevenueSettings(price="item_price", revenue="Amount", product_id="item_id")
    transformer = Transformer(TransformSettings(revenue=rs))

    def purchase(distinct_id: str, amount: Any) -> dict[str, Any]:
        return {"event": "Purchase", "properties": {
            "time": T0, "distinct_id": distinct_id, "$insert_id": "abcdefghijkl",
            "Amount": amount, "item_id": "p1"}}

    for _ in range(3):  # the shape is learned: the next event takes the fast path
        transformer.event(purchase("u1", 5), Resolved("u1", None))
    assert transformer.stats()["other"] == {}
    odd = "u\ud800x"  # an id cut by an SDK (the README: lone surrogates are handled)
    transformer.event(purchase(odd, "$5"), Resolved(odd, None))  # one event
    assert transformer.stats()["other"] == {"revenue_not_a_number": 1}


# --- the values report (081aed4) -------------------------------------------------------------


def _long_values_days(folder: Path, days: int = 2, per_day: int = 5) -> Path:
    folder.mkdir(parents=True)
    for day in range(days):
        lines = [orjson.dumps({"event": "Viewed", "properties": {
            "time": 1704100000 + day * 86400 + i, "distinct_id": f"dev-{i % 3}",
            "$insert_id": f"iid-{day}-{i:04d}", "long": "x" * 2000}}) for i in range(per_day)]
        (folder / f"2024-01-0{day + 1}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def test_a_resumed_import_file_run_reports_the_whole_migrations_values(tmp_path: Path) -> None:
    events = _long_values_days(tmp_path / "in")
    cfg = load_config(None, {"source.files": [str(events)], "mixpanel.timezone": "UTC",
                             "amplitude.output_dir": str(tmp_path / "out"),
                             "run.workdir": str(tmp_path / "work"),
                             "run.transform_workers": 0}, env={})
    first = migrate(cfg)
    assert first.exit_code == EXIT_OK
    assert first.as_dict()["values"]["truncated"] == {"long": 10}
    again = migrate(cfg, resume=True)  # e.g. after a kill once the files were written
    assert again.exit_code == EXIT_OK
    assert again.as_dict()["values"]["truncated"] == {"long": 10}


# --- windows that meet at one time are merged (a6f5312): a run started before it ------------


class _Stop(Exception):
    pass


def _strict_groups(windows: list[Any], started: frozenset[str] = frozenset()) -> list[Any]:
    """``overlaps.overlapping_groups`` as it was before a6f5312: windows that only meet
    at one time are not merged."""
    from mp2amp.pipeline import overlaps
    from mp2amp.pipeline.staging import staged_key_range

    spans = []
    for w in windows:
        if w.state not in overlaps.MERGEABLE or not w.staged_path or not w.records \
                or w.window_id in started:
            continue
        span = staged_key_range(Path(w.staged_path))
        if span is not None:
            spans.append((span[0], span[1], w))
    spans.sort(key=lambda s: (s[0], s[2].seq))
    groups, current, end = [], [], 0.0
    for start, stop, w in spans:
        if current and start < end:
            current.append(w)
            end = max(end, stop)
            continue
        if len(current) > 1:
            groups.append(current)
        current, end = [w], stop
    if len(current) > 1:
        groups.append(current)
    return [sorted(g, key=lambda w: w.seq) for g in groups]


def test_a_group_merged_in_two_steps_is_staged_again_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mp2amp.ledger import Ledger
    from mp2amp.pipeline import migrate as migrate_module
    from mp2amp.pipeline import overlaps

    t = 1704100000
    folder = tmp_path / "in"
    folder.mkdir()
    files = {"a.jsonl": [10, 20], "b.jsonl": [20, 22], "c.jsonl": [15, 20]}
    for name, times in files.items():
        who = name[0]
        (folder / name).write_bytes(b"".join(orjson.dumps({"event": "E", "properties": {
            "time": t + s, "distinct_id": f"d-{who}", "$insert_id": f"iid-{who}-{s:04d}",
            "pad": "p" * 700}}) + b"\n" for s in times))  # one event a batch (1 KB bodies)
    with amplitude_emulator(tmp_path / "amp", "test-key") as url:
        cfg = load_config(None, {
            "source.files": [str(folder)], "amplitude.api_host": url, "mixpanel.timezone": "UTC",
            "run.workdir": str(tmp_path / "work"), "run.concurrency": 1,
            "run.transform_workers": 0, "amplitude.batch_max_bytes": 1024},
            env={"AMPLITUDE_API_KEY": "test-key"})
        # run 1, by the code before a6f5312: a and c overlap and are merged, b (meeting a
        # at t+20) is not; it stops before the load
        monkeypatch.setattr(overlaps, "overlapping_groups", _strict_groups)

        def stop(windows: Any) -> Any:
            raise _Stop

        monkeypatch.setattr(migrate_module, "load_order", stop)
        with pytest.raises(_Stop):
            migrate(cfg)
        monkeypatch.undo()
        # run 2, resumed with this code: b is merged into a's merged file; four batches
        # are delivered, and the run stops as the fifth is to be sent
        sent = Ledger.batch_sent
        calls: list[str] = []

        def batch_sent(self: Ledger, batch_id: str, *args: Any) -> None:
            calls.append(batch_id)
            if len(calls) == 5:
                raise _Stop
            sent(self, batch_id, *args)

        monkeypatch.setattr(Ledger, "batch_sent", batch_sent)
        with pytest.raises(_Stop):
            migrate(cfg, resume=True)
        monkeypatch.undo()
        # the staged files are deleted (space freed), and the run is resumed
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        for w in ledger.windows():
            if w.staged_path:
                Path(w.staged_path).unlink(missing_ok=True)
        ledger.close()
        result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK
        with urllib.request.urlopen(url + "/_emulator/insert_ids", timeout=30) as resp:
            ids = orjson.loads(resp.read())
        stored = {iid.rsplit("-", 1)[0] for _, iid, _ in ids}
    assert stored == {f"iid-{name[0]}-{s:04d}" for name, times in files.items() for s in times}
