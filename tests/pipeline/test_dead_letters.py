"""Malformed source lines and events Amplitude refuses end in ``dead-letters.jsonl`` with
their source file and line, exactly once, even when the run crashed and was resumed.

Amplitude's refusals are real ones: without ``options.min_id_length`` the emulator applies
Amplitude's default of 5 characters, so the generated project's short IDs (which the
transform passes on, mp2amp normally sending ``min_id_length=1``) get a 400 listing them.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import FAST, Key, Project, amplitude, assert_exactly_once, make_config

from mp2amp.pipeline import transform_worker
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.progress import Counters

SHORT = 5  # Amplitude's default minimum ID length
BAD_LINES = {2: b'{"event": "Cut", "properties": {"time": 1704', 7: b"<html>oops</html>"}


class Crash(Exception):
    """Stands for a crash in the middle of loading."""


class CrashingReporter:
    def __init__(self, after_updates: int) -> None:
        self.left = after_updates

    def update(self, counters: Counters) -> None:
        if counters.phase == "load" and counters.sent > 0:
            self.left -= 1
            if self.left <= 0:
                raise Crash

    def close(self, counters: Counters) -> None:
        return None


def short_id(ids: tuple[str | None, str | None]) -> bool:
    return any(v and len(v) < SHORT for v in ids)


@pytest.fixture
def dirty(project: Project, tmp_path: Path) -> tuple[Path, list[tuple[str, int]]]:
    """The project with two malformed lines in its second day file."""
    dest = tmp_path / "events"
    dest.mkdir()
    bad: list[tuple[str, int]] = []
    for i, src in enumerate(sorted(project.events.iterdir())):
        lines = gzip.decompress(src.read_bytes()).splitlines()
        if i == 1:
            for n, text in sorted(BAD_LINES.items()):
                lines.insert(n - 1, text)
            bad = [(str(dest / src.name), n) for n in sorted(BAD_LINES)]
        (dest / src.name).write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return dest, bad


def source_record(source: str, line: int) -> dict[str, Any]:
    return orjson.loads(gzip.decompress(Path(source).read_bytes()).splitlines()[line - 1])


def test_dead_letters_once_after_crash_and_resume(project: Project, tmp_path: Path,
                                                  dirty: tuple[Path, list[tuple[str, int]]],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # progress is reported once a chunk: small chunks, so the crash lands mid-load
    monkeypatch.setattr(transform_worker, "CHUNK_LINES", 32)
    events, bad = dirty
    refused = {iid for iid, ids in project.ids.items() if short_id(ids)}
    assert len(refused) > 5, "the generated project should have short IDs"
    delivered: frozenset[Key] = frozenset(k for k in project.expected if k[1] not in refused)
    upload = {**FAST, "min_id_length": None, "max_events": 100, "concurrency": 4}
    with amplitude(tmp_path / "amp", latency_ms=20) as url:
        cfg = make_config(events, tmp_path / "work", url)
        with pytest.raises(Crash):
            migrate(cfg, reporter=CrashingReporter(after_updates=3), upload_overrides=upload)
        result = migrate(cfg, resume=True, upload_overrides=upload)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, delivered)
    assert result.load["batches_skipped"] > 0, "the crash should come after some batches"
    assert result.totals["dead_lettered"] == len(refused)
    assert result.totals["rejected"] == sum(project.rejects.values()) + len(bad)

    dead_file = tmp_path / "work" / "dead-letters.jsonl"
    assert result.dead_letter_file == str(dead_file)
    rows = [orjson.loads(r) for r in dead_file.read_bytes().splitlines()]
    keys = [(r["source"], r["line"]) for r in rows]
    assert len(keys) == len(set(keys)), "a record is in the dead-letter file twice"
    # malformed lines: the transform stage, with the file and line they were read from
    malformed = {(r["source"], r["line"]) for r in rows if r["reason"] == "malformed_json"}
    assert set(bad) <= malformed
    # Amplitude's refusals: the event as sent, and the source line it was made from
    amp = [r for r in rows if r["stage"] == "amplitude"]
    assert sorted(r["event"]["insert_id"] for r in amp) == sorted(refused)
    for r in amp:
        assert r["reason"] and r["message"]
        assert r["source"].startswith(str(events)) and r["line"] >= 1
        record = source_record(r["source"], r["line"])
        assert record["event"] == r["event"]["event_type"]
        t = float(record["properties"]["time"])
        assert abs(r["event"]["time"] - (t if t > 1e11 else t * 1000)) < 1000
