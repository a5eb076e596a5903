"""Helpers of the migrate reliability tests: the insert_ids the transform emits for a
project (computed by ``mp2amp transform``, independently of migrate), configs, and an
in-process Amplitude emulator with readers for what it stored."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mp2amp.config import Config, load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.ledger import Ledger

API_KEY = "test-api-key"
TIMEZONE = "America/Los_Angeles"
# keep retries quick: the emulator's faults are answered at once
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}
Key = tuple[str | None, str]  # (device_id or user_id, insert_id)


_ABSENT = object()


def drop_fingerprint_key(work: Path, key: str) -> Any:
    """Take ``key`` out of the run fingerprint recorded in ``work``'s ledger, as a run
    started by an mp2amp that did not record it left it; returns the value it had."""
    return set_fingerprint_key(work, key, _ABSENT)


def set_fingerprint_key(work: Path, key: str, value: Any) -> Any:
    """Record ``value`` for ``key`` in ``work``'s run fingerprint, as another mp2amp would
    have (``_ABSENT``: take it out); returns the value it had."""
    ledger = Ledger(work / "ledger.sqlite")
    try:
        stored = orjson.loads(str(ledger.get_meta("fingerprint")))
        was = stored.pop(key)
        if value is not _ABSENT:
            stored[key] = value
        ledger.set_meta("fingerprint", orjson.dumps(stored, option=orjson.OPT_SORT_KEYS).decode())
        return was
    finally:
        ledger.close()


def drop_settings(work: Path) -> None:
    """Take the per-setting digests out of ``work``'s ledger, as a run started by an
    mp2amp that recorded only the one digest of them all left it."""
    import sqlite3

    db = sqlite3.connect(work / "ledger.sqlite")
    try:
        with db:
            db.execute("DELETE FROM meta WHERE key = 'event_settings'")
    finally:
        db.close()


def mp2amp(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "mp2amp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"mp2amp {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Project:
    root: Path
    events: Path             # the folder of day files
    expected: frozenset[Key]  # what the transform emits for these files
    rejects: dict[str, int]   # what the transform refuses, by reason
    ids: dict[str, tuple[str | None, str | None]]  # insert_id -> (device_id, user_id)


def transform_outcome(events: Path, work: Path) -> tuple[
        frozenset[Key], dict[str, int], dict[str, tuple[str | None, str | None]]]:
    """Run ``mp2amp transform`` on the files: the events migrate must deliver."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "transform.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{events}"]\n')
    out = work / "out.jsonl"
    mp2amp("transform", "-c", str(cfg), "-o", str(out), "--json")
    keys = []
    ids = {}
    for raw in out.read_bytes().splitlines():
        event = orjson.loads(raw)
        keys.append((event.get("device_id") or event.get("user_id"), event["insert_id"]))
        ids[event["insert_id"]] = (event.get("device_id"), event.get("user_id"))
    assert len(keys) == len(set(keys)), "the transform emitted an insert_id twice"
    rejects: dict[str, int] = {}
    for raw in (work / "out.jsonl.rejects.jsonl").read_bytes().splitlines():
        reason = orjson.loads(raw)["reason"]
        rejects[reason] = rejects.get(reason, 0) + 1
    return frozenset(keys), rejects, ids


def make_config(events: Path | str, workdir: Path, api_host: str, **extra: Any) -> Config:
    overrides = {"source.files": [str(events)], "amplitude.api_host": api_host,
                 "run.workdir": str(workdir), "mixpanel.timezone": TIMEZONE}
    overrides.update(extra)
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY})


def write_toml(path: Path, events: Path | str, workdir: Path, api_host: str,
               concurrency: int = 4) -> Path:
    path.write_text(
        f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{events}"]\n'
        f'[amplitude]\napi_host = "{api_host}"\n'
        f'[run]\nworkdir = "{workdir}"\nconcurrency = {concurrency}\n')
    return path


@contextmanager
def amplitude(data: Path, **kwargs: Any) -> Iterator[str]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY, **kwargs))
    with emu.running() as url:
        yield url


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return orjson.loads(resp.read())


def post_json(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return orjson.loads(resp.read())


def stored_counts(url: str) -> dict[Key, int]:
    """insert_id -> how many times the emulator stored it (its dedup should keep it 1)."""
    return {(who, iid): n for who, iid, n in get_json(url + "/_emulator/insert_ids")}


def assert_exactly_once(url: str, expected: frozenset[Key]) -> None:
    assert_counts_exactly_once(stored_counts(url), expected)


def assert_counts_exactly_once(counts: dict[Key, int], expected: frozenset[Key]) -> None:
    missing = expected - counts.keys()
    extra = counts.keys() - expected
    assert not missing and not extra, (f"{len(missing)} missing (e.g. {sorted(missing)[:3]}),"
                                       f" {len(extra)} unexpected (e.g. {sorted(extra)[:3]})")
    twice = {k: n for k, n in counts.items() if n != 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"


def arrival_order(data: Path) -> Iterator[dict[str, Any]]:
    """The emulator's stored events in the order they were ingested: its store appends
    each accepted request to the current hour's file, on one event loop."""
    yield from EventStore(data).iter_events()


def order_breaks(data: Path, min_devices: int = 0) -> list[str]:
    """Events the emulator stored after a later event of their device (or user, for events
    without a device): one line each; empty when every device's events came in time order."""
    last: dict[str, int] = {}
    breaks: list[str] = []
    for event in arrival_order(data):
        who = event.get("device_id") or event["user_id"]
        t = int(event["time"])
        if t < last.get(who, t):
            breaks.append(f"{who}: event at {t} arrived after one at {last[who]}")
        last[who] = max(t, last.get(who, t))
    assert len(last) >= min_devices, f"only {len(last)} devices: too few to say anything"
    return breaks


class Clock:
    """The emulator's clock, which a test moves ahead (``offset`` seconds) instead of waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Crash(Exception):
    """Stands for a crash of ``migrate`` at a chosen moment (``crash_at_batch``)."""


def crash_on_call(monkeypatch: Any, owner: Any, name: str, n: int,
                  when: Any = None, after: bool = False) -> list[int]:
    """``owner.name`` raises ``Crash`` at its ``n``-th call (among those ``when`` picks),
    before the original ran, or right after it (``after``): kill -9 at that instant."""
    original = getattr(owner, name)
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if when is None or when(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                if after:
                    original(*args, **kwargs)
                raise Crash(f"{name} #{n}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def crash_at_batch(monkeypatch: Any, n: int, error: BaseException | None = None) -> None:
    """The ``n``-th batch Amplitude accepts is never recorded: ``Ledger.batch_done`` raises
    ``error`` (a ``Crash`` by default) there, as a crash right after the 200 would."""
    done = Ledger.batch_done
    calls: list[int] = []

    def crash(self: Ledger, batch_id: str, **counts: Any) -> str:
        calls.append(1)
        if len(calls) == n:
            raise error if error is not None else Crash("stopped here")
        return done(self, batch_id, **counts)

    monkeypatch.setattr(Ledger, "batch_done", crash)


def copy_events(project: Project, dest: Path) -> Path:
    """The project's day files in a folder of the test's own (to damage or move)."""
    shutil.copytree(project.events, dest)
    return dest


def run_until_crash(config: Config, monkeypatch: Any, n: int) -> None:
    """``migrate(config)`` stopped by a ``Crash`` as the ``n``-th accepted batch is to be
    recorded (``crash_at_batch``); the patch is undone for what follows (a resume)."""
    import pytest

    from mp2amp.pipeline.migrate import migrate

    crash_at_batch(monkeypatch, n)
    with pytest.raises(Crash):
        migrate(config)
    monkeypatch.undo()


def drop_last_records(path: Path, n: int) -> bytes:
    """Rewrite the gzip file ``path`` without its last ``n`` records; returns the original
    (a source that changed since its batches were cut)."""
    import gzip

    original = path.read_bytes()
    lines = gzip.decompress(original).splitlines(keepends=True)
    path.write_bytes(gzip.compress(b"".join(lines[:-n])))
    return original


def split_days(events: Path, dest: Path, days: slice = slice(None)) -> Path:
    """The day files of ``events`` in ``dest``, those in ``days`` as two files of alternate
    lines each: such a pair overlaps in time, so it is merged into one staged file
    (overlaps.py), as a Data Pipelines day's part files are; the other days stay one file."""
    import gzip

    dest.mkdir()
    all_days = sorted(events.iterdir())
    split = set(all_days[days])
    for day in all_days:
        if day not in split:
            shutil.copy(day, dest / day.name)
            continue
        lines = _records(gzip.decompress(day.read_bytes()).splitlines(keepends=True))
        stem = day.name.split(".")[0]
        (dest / f"{stem}-a.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[0::2])))
        (dest / f"{stem}-b.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[1::2])))
    return dest


def _records(lines: list[bytes]) -> list[bytes]:
    """The lines as records: a record the generator's dirt split across two lines stays
    whole (one file of the pair would hold each half: two rejects, not one event)."""
    out: list[bytes] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and not _parses(line) and _parses(line.rstrip(b"\r\n")
                                                                + lines[i + 1]):
            line += lines[i + 1]
            i += 1
        out.append(line)
        i += 1
    return out


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def merged_groups(work: Path) -> dict[str, str]:
    """The ledger's merged-away window -> the window holding its records."""
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return dict(ledger.merged_into())
    finally:
        ledger.close()


# a plain progress line (pipeline/progress.py LogReporter), its numbers named
LOG_LINE = re.compile(
    r"mp2amp: t=(?P<t>\d+\.\d)s phase=(?P<phase>\w+) done=(?P<done>\d+)/(?P<total>\d+) "
    r"sent=(?P<sent>\d+) rate=\d+/s retries=\d+ throttles=\d+ "
    r"dead_letters=\d+ eta=(?P<eta>\?|\d+s)")


def small_events(root: Path) -> Path:
    """A small generated project in ``root`` (2 days, ~400 records, one duplicate): its
    events folder."""
    mp2amp("generate", "--out", str(root / "p"), "--users", "30", "--days", "2",
           "--seed", "5", "--timezone", TIMEZONE)
    return root / "p" / "events"
