"""kill -9 of ``mp2amp migrate`` at seeded random moments, then ``--resume`` until exit 0.

After every scenario: the emulator holds exactly the transform's insert_ids, each once;
the ledger says only batches that were in flight at a kill were sent again; what the
emulator received twice (its duplicate count) fits inside those in-flight batches; the
malformed source lines are in dead-letters.jsonl exactly once.
"""

from __future__ import annotations

import gzip
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    TIMEZONE,
    Project,
    amplitude,
    assert_exactly_once,
    get_json,
    write_toml,
)

from mp2amp.pipeline.staging import UNKNOWN_TIME, sort_key
from mp2amp.pipeline.status import status

LATENCY_MS = 120  # every request waits this long, so that kills land while batches fly
MALFORMED = {3: b'{"event": "Broken", "properties": {"time": 17', 10: b"not json at all"}


@dataclass
class Kills:
    in_flight: dict[str, int] = field(default_factory=dict)  # batch -> times in flight at a kill
    in_flight_events: int = 0
    count: int = 0


def dirty_copy(project: Project, dest: Path, parts: int = 3) -> tuple[Path, list[tuple[str, int]]]:
    """The project's day files cut in ``parts`` files each (more windows, so that every
    run between kills gets through some of them), with two malformed lines put into the
    first file. Cut by event time (each part a slice of the day; a line that does not
    parse stays with the line before it, so a split record stays whole): parts that
    overlapped in time would be merged back into one window (pipeline/overlaps.py)."""
    dest.mkdir(parents=True)
    bad: list[tuple[str, int]] = []
    for i, src in enumerate(sorted(project.events.iterdir())):
        lines = gzip.decompress(src.read_bytes()).splitlines()
        times = [_time_of(line) for line in lines]
        known = sorted(t for t in times if t is not None)
        cuts = [known[len(known) * k // parts] for k in range(1, parts)]
        chunks: list[list[bytes]] = [[] for _ in range(parts)]
        part = 0
        for line, t in zip(lines, times, strict=True):
            if t is not None:
                part = sum(t >= cut for cut in cuts)
            chunks[part].append(line)
        for part, chunk in enumerate(chunks):
            out = dest / src.name.replace(".jsonl.gz", f"-{part}.jsonl.gz")
            if i == part == 0:
                for line_no, text in sorted(MALFORMED.items()):
                    chunk.insert(line_no - 1, text)
                bad = [(str(out), n) for n in sorted(MALFORMED)]
            out.write_bytes(gzip.compress(b"\n".join(chunk) + b"\n"))
    return dest, bad


def _time_of(line: bytes) -> float | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    key = sort_key(record if isinstance(record, dict) else None)
    return None if key == UNKNOWN_TIME else key


def ledger_rows(ledger: Path, sql: str) -> list[tuple[object, ...]]:
    if not ledger.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:  # created but no schema yet
        return []


def start(cfg: Path, resume: bool) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet", "--json"]
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY)
    return subprocess.Popen(args + (["--resume"] if resume else []), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen[bytes], ledger: Path, rng: random.Random) -> bool:
    """kill -9 after this run saw a random number of batches accepted (so every run makes
    progress and lands mid-load), or,
    one time in four, after a random time, which may fall in extract or identity; False
    if the run ended first."""
    started = time.time()
    by_time = rng.random() < 0.25
    deadline = time.monotonic() + (rng.uniform(0.3, 1.5) if by_time else 60)
    want = rng.randint(1, 4)
    while proc.poll() is None:
        if time.monotonic() >= deadline:
            break
        if not by_time:
            sent = ledger_rows(ledger, "SELECT COUNT(*) FROM batches WHERE state = 'done' "
                               f"AND updated_at >= {started}")
            if sent and int(str(sent[0][0])) >= want:
                time.sleep(rng.uniform(0.0, LATENCY_MS / 1000))
                break
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def record_in_flight(ledger: Path, kills: Kills) -> None:
    kills.count += 1
    in_flight = ledger_rows(ledger, "SELECT batch_id, events FROM batches WHERE state = 'sent'")
    for batch_id, events in in_flight:
        kills.in_flight[str(batch_id)] = kills.in_flight.get(str(batch_id), 0) + 1
        kills.in_flight_events += int(str(events))
    if ledger.exists():  # `mp2amp status` reads the same state from the killed run's ledger
        seen = status(ledger.parent)
        assert seen.batches["in_flight"] == len(in_flight)
        assert not seen.complete or not in_flight


def run_with_kills(cfg: Path, ledger: Path, rng: random.Random, kills_wanted: int) -> Kills:
    kills = Kills()
    resume = False
    for _ in range(kills_wanted + 6):
        proc = start(cfg, resume)
        if kills.count < kills_wanted and kill_when(proc, ledger, rng):
            record_in_flight(ledger, kills)
            resume = ledger.exists()
            continue
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        result = orjson.loads(out)
        assert result["totals"]["balanced"] and result["resumed"] == resume
        return kills
    raise AssertionError("migrate never finished")


@pytest.mark.parametrize("seed", [11])
def test_kill9_and_resume_delivers_each_event_once(project: Project, tmp_path: Path,
                                                    seed: int) -> None:
    rng = random.Random(seed)
    events, bad_lines = dirty_copy(project, tmp_path / "events")
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS) as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", events, work, url, concurrency=4)
        kills = run_with_kills(cfg, ledger, rng, kills_wanted=5)
        assert_exactly_once(url, project.expected)
        stats = get_json(url + "/_emulator/stats")
    assert kills.count == 5
    # only batches in flight at a kill were sent again, at most once per such kill
    attempts = {str(b): int(str(a)) for b, a in ledger_rows(
        ledger, "SELECT batch_id, attempts FROM batches")}
    resent = {b: a for b, a in attempts.items() if a > 1}
    assert resent, "no kill landed while batches were in flight"
    for batch_id, n in resent.items():
        assert batch_id in kills.in_flight, f"{batch_id} sent {n} times, never in flight at a kill"
        assert n <= 1 + kills.in_flight[batch_id]
    assert stats["events_stored"] == len(project.expected)
    assert stats["duplicates_ignored"] <= kills.in_flight_events
    states = {s for (s,) in ledger_rows(ledger, "SELECT state FROM batches")}
    assert states == {"done"}
    # the malformed lines: dead-lettered once each, with their file and line
    rows = [orjson.loads(r) for r in (work / "dead-letters.jsonl").read_bytes().splitlines()]
    malformed = sorted((r["source"], r["line"]) for r in rows if r["reason"] == "malformed_json")
    assert set(bad_lines) <= set(malformed)
    assert len(malformed) == len(bad_lines) + project.rejects.get("malformed_json", 0)
    keys = [(r["source"], r["line"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_kill9_while_exporting_and_resume_delivers_each_event_once(project: Project,
                                                                   tmp_path: Path) -> None:
    """The Export API source: kill -9 while days are being downloaded (a slow link keeps
    every day in flight for a while), four times, the later ones after some days were
    staged, then resume to the end. A day cut mid-download is fetched again from scratch,
    a day already staged is not; Amplitude ends with each event once."""
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    rng = random.Random(7)
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, api_secret="emulator-secret", export_per_hour=None,
        export_per_second=None, chunk_bytes=8192, chunk_delay=0.03))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp") as url:
        cfg = tmp_path / "mp2amp.toml"
        # the generated Los Angeles days 01-01..01-03, as UTC days (a post-2023 project);
        # concurrency 2 -> two days downloading at a time
        cfg.write_text(
            f'[mixpanel]\ntimezone = "{TIMEZONE}"\napi_host = "{mp_url}"\n'
            '[source]\nfrom_date = "2024-01-01"\nto_date = "2024-01-04"\n'
            f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{work}"\nconcurrency = 2\n')
        env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY, MIXPANEL_SECRET="emulator-secret")
        args = [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet", "--json"]
        resume = False
        at_kills: list[int] = []  # days staged at each kill
        for staged_first in (0, 1, 1, 2, None):
            proc = subprocess.Popen(args + (["--resume"] if resume else []), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if staged_first is not None:
                killed = _kill_mid_download(proc, ledger, mp_url, staged_first, rng)
                assert killed is not None, "the downloads ended before the kill"
                at_kills.append(killed)
                resume = True
                continue
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]
            result = orjson.loads(out)
            assert result["totals"]["balanced"] and result["resumed"]
        assert_exactly_once(url, project.expected)
        stats = get_json(url + "/_emulator/stats")
        requests = get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"]
    assert stats["events_stored"] == len(project.expected) and stats["duplicates_ignored"] == 0
    windows = ledger_rows(ledger, "SELECT window_id, state FROM windows ORDER BY window_id")
    assert windows == [(f"export:2024-01-0{d}", "loaded") for d in (1, 2, 3, 4)]
    assert not list((work / "export").rglob("*.part")), "a cut download was left behind"
    # each day once, plus a download or two cut by each kill (two days download at a time);
    # a day staged before a kill is never fetched again
    assert at_kills[0] == 0 and at_kills[-1] >= 2
    assert 4 + len(at_kills) <= requests <= 4 + sum(min(2, 4 - staged) for staged in at_kills)


def _kill_mid_download(proc: subprocess.Popen[bytes], ledger: Path, mp_url: str,
                       staged_first: int, rng: random.Random) -> int | None:
    """kill -9 a random moment into a download (the Mixpanel emulator is streaming an
    export) once at least ``staged_first`` days are staged: the days staged at the kill,
    or None if the run got past the downloads (or ended) first."""
    def downloading() -> bool:
        return int(get_json(mp_url + "/_emulator/stats")["export_in_flight"]) > 0

    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        staged = len(ledger_rows(ledger, "SELECT 1 FROM windows WHERE state != 'pending'"))
        if staged >= staged_first and downloading():
            time.sleep(rng.uniform(0.0, 0.2))
            if downloading():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return len(ledger_rows(ledger, "SELECT 1 FROM windows WHERE state != 'pending'"))
        time.sleep(0.005)
    return None
