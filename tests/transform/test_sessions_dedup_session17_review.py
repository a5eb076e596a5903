"""Review (session 17): sessions, deduplication and insert_ids across windows, resumes and
spills, end to end through ``migrate`` against the local Amplitude emulator.

No defect was confirmed in this area (see the review report); the tests below are
regression guards for non-obvious properties that hold today: a migration stopped in its
second window and resumed, with the smallest memory budget (sessions and digests spilled)
and without transform workers, stores exactly what an uninterrupted in-memory run stores,
session_ids and duplicates included; a seconds copy of an event in the next (not merged)
window is a duplicate of its millisecond copy, also across the resume; and ``mp2amp
transform`` gives the same (insert_id, session_id) pairs as ``migrate``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))  # migrate_kit

from migrate_kit import (
    FAST,
    Crash,
    amplitude,
    arrival_order,
    crash_at_batch,
    make_config,
    stored_counts,
)

from mp2amp.pipeline.migrate import migrate
from mp2amp.transform.offline import transform_files

DAY1_END = 1_700_006_400  # 2023-11-15T00:00:00Z, seconds
DEVICES = 1_050  # past the smallest in-memory share of sessions and digests (1,000)
UPLOAD = {**FAST, "concurrency": 2, "max_events": 200}


def mp_event(device: str, t: float | int, n: int) -> dict[str, Any]:
    return {"event": "Play", "properties": {
        "time": t, "distinct_id": f"$device:{device}", "$device_id": device,
        "$insert_id": f"ins-{device}-{n:04}", "mp_lib": "web"}}


def write(path: Path, events: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))


def two_files(folder: Path) -> Path:
    """Two files that do not overlap in time (two windows, not merged). Each device plays
    before and after midnight (one session across the window boundary); dev-0000 has a
    millisecond copy of one event at the end of the first file and its whole-seconds copy
    (Mixpanel's default export) in the second: it sorts after every ms of its second, so
    the windows stay apart and only the Deduper can drop it."""
    devices = [f"dev-{k:04}" for k in range(DEVICES)]
    last = DAY1_END - 1
    first = [mp_event(d, DAY1_END - 1200 + k, 0) for k, d in enumerate(devices)]
    first.append(mp_event(devices[0], last + 0.5, 1))  # ms copy
    second = [mp_event(devices[0], last, 1)]  # whole-seconds copy of the same event
    second += [mp_event(d, DAY1_END + 300 + k, 2) for k, d in enumerate(devices)]
    write(folder / "b-first.jsonl", first)
    write(folder / "a-second.jsonl", second)
    return folder


def stored(data: Path) -> dict[str, tuple[Any, ...]]:
    return {e["insert_id"]: (e.get("session_id"), e["time"], e.get("device_id"))
            for e in arrival_order(data)}


def test_a_resume_in_the_second_window_with_spills_and_no_workers_stores_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = two_files(tmp_path / "events")
    with amplitude(tmp_path / "clean") as url:
        clean_result = migrate(make_config(events, tmp_path / "w1", url),
                               upload_overrides=UPLOAD)
    clean = stored(tmp_path / "clean")
    assert clean_result.exit_code == 0, clean_result.as_dict()["problems"]
    assert clean_result.totals["duplicate"] == 1 and len(clean) == 2 * DEVICES + 1
    # one session per device, across midnight, named by its first event's ms
    sessions = {v[2]: v[0] for v in clean.values()}
    assert sessions["dev-0007"] == (DAY1_END - 1200 + 7) * 1000
    assert all(v[0] == sessions[v[2]] for v in clean.values())

    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "w2", url,
                          **{"run.memory_budget": 1_000, "run.transform_workers": 0})
        crash_at_batch(monkeypatch, 8)  # the first window is 6 batches of 200
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=UPLOAD)
        monkeypatch.undo()
        result = migrate(cfg, resume=True, upload_overrides=UPLOAD)
        counts = stored_counts(url)
    assert result.exit_code == 0, result.as_dict()["problems"]
    assert set(counts.values()) == {1}
    assert stored(tmp_path / "amp") == clean
    assert result.totals["duplicate"] == 1 and result.totals["balanced"]


def test_transform_gives_migrates_session_ids_for_the_same_files(tmp_path: Path) -> None:
    events = two_files(tmp_path / "events")
    with amplitude(tmp_path / "amp") as url:
        migrate(make_config(events, tmp_path / "w1", url), upload_overrides=UPLOAD)
    sent = stored(tmp_path / "amp")
    out, rejects = io.BytesIO(), io.BytesIO()
    cfg = make_config(events, tmp_path / "w2", "http://127.0.0.1:9")
    result = transform_files(cfg, [str(events)], out, rejects)
    written = {}
    for line in out.getvalue().splitlines():
        e = orjson.loads(line)
        written[e["insert_id"]] = (e.get("session_id"), e["time"], e.get("device_id"))
    assert result.summary.duplicates == 1
    assert written == sent
