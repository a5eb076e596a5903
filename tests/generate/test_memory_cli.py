"""Memory stays flat as events grow, and the command line behaves (output, exit codes)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import orjson
import pytest

from mp2amp.generate import GenerateConfig, generate_project


def _peak(out: Path, days: int) -> tuple[int, int]:
    tracemalloc.start()
    try:
        result = generate_project(GenerateConfig(out=out, users=60, days=days, seed=9))
        return tracemalloc.get_traced_memory()[1], result.records_written
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_events(tmp_path: Path) -> None:
    small_peak, small_events = _peak(tmp_path / "small", 2)
    big_peak, big_events = _peak(tmp_path / "big", 24)
    assert big_events > 3 * small_events
    # same people, 3x+ the events: the peak may move a little (per-person state), not 3x
    assert big_peak < small_peak * 1.5, (small_peak, big_peak)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "generate", *args],
                          capture_output=True, text=True, check=False)


def test_cli_writes_a_project_and_prints_json(tmp_path: Path) -> None:
    out = _run("--out", str(tmp_path / "p"), "--users", "30", "--days", "2", "--seed", "3",
               "--industry", "fintech", "--id-merge", "original", "--json")
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    assert result["files"] == ["events/2024-01-01.jsonl.gz", "events/2024-01-02.jsonl.gz"]
    project = orjson.loads((tmp_path / "p/project.json").read_bytes())
    assert project["industries"] == ["fintech"] and project["id_merge"] == "original"
    assert project["events_written"] == result["records_written"] > 0


def test_cli_human_output(tmp_path: Path) -> None:
    out = _run("--out", str(tmp_path / "p"), "--users", "10", "--days", "1", "--dirty", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("wrote ") and "dirt: none" in out.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--users", "0"), "--users must be between 1"),
    (("--days", "0"), "--days must be between 1"),
    (("--start", "2024-02-30"), "--start must be a date as YYYY-MM-DD, got '2024-02-30'"),
    (("--id-merge", "legacy"), "--id-merge must be simplified or original"),
    (("--timezone", "Mars/Olympus"), "is not an IANA timezone"),
    (("--dirty", "0.5"), "--dirty must be a rate between 0 and 0.2"),
    (("--industry", "gaming"), "--industry must be all or among"),
])
def test_cli_rejects_bad_arguments(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = _run("--out", str(tmp_path / "p"), *args)
    assert out.returncode == 2
    assert message in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr and not (tmp_path / "p").exists()


def test_cli_refuses_a_non_empty_output_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    out = _run("--out", str(tmp_path), "--users", "5", "--days", "1")
    assert out.returncode == 2 and "is not an empty directory" in " ".join(out.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
