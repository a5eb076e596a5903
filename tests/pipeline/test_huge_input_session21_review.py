"""Session 21 review: huge and adversarial input through ``mp2amp migrate`` (files source)
and ``mp2amp transform``: tens-of-MB lines, megabyte names, 100 KB property names,
thousands of distinct property names, odd line endings and damaged files (README: memory
stays flat, nothing lost). Each test pinned a defect as a strict xfail; 1 and 3 are fixed, 2
stays pinned: see its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, amplitude, stored_counts

T = 1_700_000_000  # 2023-11-14, seconds

# run a command and print the peak RSS (KB) of it and everything it started
_PEAK = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=240)\n"
    "sys.stderr.write(p.stderr)\n"
    "sys.stdout.write(p.stdout)\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(p.returncode)\n"
)


def _event(name: str, i: int, who: str = "user-1", **props: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"time": T + i, "distinct_id": who, "$insert_id": f"iid-{i}"}
    p.update(props)
    return {"event": name, "properties": p}


def _migrate_peak(tmp: Path, events: Path, url: str) -> tuple[int, int, str, dict[str, Any]]:
    """Run ``mp2amp migrate --json`` in a subprocess: (exit code, peak RSS in MB of it and
    its workers, stderr, the JSON result)."""
    cfg = tmp / "mp2amp.toml"
    cfg.write_text(
        f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{events}"]\n'
        f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{tmp / "work"}"\n')
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, sys.executable, "-m", "mp2amp", "migrate",
         "-c", str(cfg), "--json"],
        env=env, capture_output=True, text=True, timeout=300)
    out, _, peak = proc.stdout.rpartition("PEAK_RSS_KB ")
    return proc.returncode, int(peak) // 1024, proc.stderr, orjson.loads(out)


# --- 1. 100 KB property names: the shape memos hold every name whole ----------------------


# Fixed (was xfail): the shape memos counted keys, not characters, and kept each name whole.
def test_distinct_100kb_property_names_keep_migrate_memory_flat(tmp_path: Path) -> None:
    n, width = 2_000, 100_000  # 200 MB of property names, one distinct name per event
    events = tmp_path / "events"
    events.mkdir()
    with (events / "long-keys.jsonl").open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps(_event("A", i, f"user-{i % 50}",
                                        **{f"{i:06d}" + "k" * width: i})) + b"\n")
    with amplitude(tmp_path / "amp") as url:
        code, peak_mb, stderr, result = _migrate_peak(tmp_path, events, url)
        stored = stored_counts(url)
    assert code == 0, stderr[-2000:]
    assert result["totals"]["sent"] == n and len(stored) == n  # nothing lost...
    # ...but memory: the same run with 10-character names peaks at ~66 MB here, and 1,500
    # lines with one same 100 KB name at ~76 MB; each line is 100 KB, so nothing but memos
    # that keep whole names can need more than ~130 MB (observed: ~240 MB, ~100 KB a line)
    assert peak_mb < 130, f"peak RSS {peak_mb} MB for {n} distinct {width}-character names"



# --- 2. over-long distinct_ids: the identity graph holds every one whole -------------------


# Left pinned: a fixed-size key for such IDs (tried in efc203c, reverted) changed who an
# excluded or user_id_pattern-judged over-long ID is (tests/identity/
# test_overlong_session21_second_review.py); Mixpanel caps strings at 255 bytes, so a real
# export holds no such IDs.
@pytest.mark.xfail(strict=True, reason=(
    "the identity graph (and [run] memory_budget, which counts entries, not bytes) keeps"
    " distinct_ids over 1024 characters whole, though Amplitude can never use them: memory"
    " grows ~100 KB per distinct 100 KB ID"))
def test_distinct_over_long_distinct_ids_keep_migrate_memory_flat(tmp_path: Path) -> None:
    n = 2_500  # each event: a 100 KB distinct_id (a blob an SDK bug put there) and a device
    events = tmp_path / "events"
    events.mkdir()
    with (events / "long-ids.jsonl").open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps(_event("A", i, f"{i:06d}" + "u" * 100_000,
                                        **{"$device_id": f"device-{i:05d}"})) + b"\n")
    with amplitude(tmp_path / "amp") as url:
        code, peak_mb, stderr, result = _migrate_peak(tmp_path, events, url)
        stored = stored_counts(url)
    assert code == 0, stderr[-2000:]
    # nothing lost: each goes out under its device, the over-long user_id left out
    assert result["totals"]["sent"] == n and len(stored) == n
    # the same 2,000 lines with 6-character distinct_ids and a 100 KB property peak at
    # ~78 MB; the default memory_budget is documented as ~40 MB of per-ID state
    assert peak_mb < 130, f"peak RSS {peak_mb} MB for {n} distinct 100 KB distinct_ids"


# --- 3. a window's rejected records are all held in memory until the window ends ---------


# Fixed (was xfail): a window's rejects were held in a list until its end.
def test_many_big_rejected_records_in_one_file_keep_migrate_memory_flat(
        tmp_path: Path) -> None:
    n = 2_500  # 100 KB records an SDK wrote with a NaN: each one a non_json_value reject
    events = tmp_path / "events"
    events.mkdir()
    with (events / "day.jsonl").open("wb") as f:
        for i in range(n):
            line = orjson.dumps(_event("A", i, f"user-{i % 50}", blob="x" * 100_000, bad=1))
            f.write(line.replace(b'"bad":1', b'"bad":NaN') + b"\n")
            if i % 100 == 0:  # and some good events among them
                f.write(orjson.dumps(_event("Good", i, f"user-{i % 50}",
                                            **{"$insert_id": f"good-{i}"})) + b"\n")
    with amplitude(tmp_path / "amp") as url:
        code, peak_mb, stderr, result = _migrate_peak(tmp_path, events, url)
        stored = stored_counts(url)
    assert code == 0, stderr[-2000:]
    totals = result["totals"]
    assert totals["rejected"] == n and totals["sent"] == n // 100 == len(stored)
    dead = (tmp_path / "work" / "dead-letters.jsonl").read_bytes().count(b"\n")
    assert dead == n  # nothing lost: every reject in the dead letters
    # the same lines without the NaN (sent, the string cut to 1024) peak at ~78 MB, and
    # `mp2amp transform` of these very lines, which streams its rejects, at ~79 MB
    assert peak_mb < 150, f"peak RSS {peak_mb} MB for {n} rejected 100 KB records"
