"""Review (session 22): many distinct people and devices, past ``[run] memory_budget``.

Checked here (a guard: no defect found in this area): the spilled stages give exactly the
events of an unspilled run (identity, sessions across files, duplicates far apart in the
input, a seconds and a ms copy of one event).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from mp2amp.config import load_config
from mp2amp.transform.offline import transform_files

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z, seconds


def _record(i: int, t: int, device: int) -> dict[str, Any]:
    return {"event": "Viewed", "properties": {
        "time": t, "distinct_id": f"user-{device:07d}",
        "$user_id": f"user-{device:07d}", "$device_id": f"device-{device:07d}",
        "$insert_id": f"ins-{i:08d}", "mp_lib": "web"}}


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _transform(tmp: Path, files: list[Path], budget: int) -> tuple[bytes, dict[str, Any], bool]:
    cfg = load_config(None, {"mixpanel.timezone": "UTC", "run.memory_budget": budget,
                             "run.workdir": str(tmp / f"work{budget}")}, env={})
    out_path, rej_path = tmp / f"out{budget}.jsonl", tmp / f"rej{budget}.jsonl"
    with open(out_path, "wb") as out, open(rej_path, "wb") as rej:
        result = transform_files(cfg, [str(f) for f in files], out, rej)
    return out_path.read_bytes(), result.summary.as_dict(), bool(result.identity["spilled"])


# --- guard: spilled == in memory -------------------------------------------------------------


def test_spilled_transform_gives_the_same_events_as_in_memory(tmp_path: Path) -> None:
    """6,000 devices (3x every stage's 1,000-entry share at memory_budget 2000): the same
    user_id, device_id, session_id and insert_id for every event, and the same duplicates,
    whether the identity graph, the Sessionizer and the Deduper spill or not. Sessions span
    the two files (each device is active across the file boundary, within the 30-minute
    gap); the second file repeats records of the first (duplicates 6,000 records apart in
    the input), some as a ms copy of a seconds record (one Mixpanel event)."""
    rng = random.Random(22)
    n = 6_000
    first, second = [], []
    i = 0
    for device in range(n):  # file 1: every device once near its end
        first.append(_record(i, T0 + 3_600 + device // 10, device))
        i += 1
    for device in range(n):  # file 2: every device again, 10-20 min later: same session
        second.append(_record(i, T0 + 3_600 + 600 + n // 10 + device // 10, device))
        i += 1
    repeats = rng.sample(first, 400)
    second += repeats[:200]  # exact duplicates
    for rec in repeats[200:]:  # the same events exported with ms times
        props = dict(rec["properties"])
        props["time"] = props["time"] * 1000 + 250
        second.append({"event": rec["event"], "properties": props})
    files = [_write(tmp_path / "a.jsonl", first), _write(tmp_path / "b.jsonl", second)]

    spilled, s_summary, s_spilled = _transform(tmp_path, files, 2_000)
    in_memory, m_summary, m_spilled = _transform(tmp_path, files, 10_000_000)

    assert s_spilled and not m_spilled

    assert s_summary["duplicates"] == m_summary["duplicates"] == 400
    assert spilled == in_memory
    sessions = {}
    for line in spilled.splitlines():
        event = orjson.loads(line)
        sessions.setdefault(event["device_id"], set()).add(event["session_id"])
    assert len(sessions) == n and all(len(s) == 1 for s in sessions.values())
