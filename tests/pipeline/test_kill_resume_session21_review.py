"""Review (session 21): kill -9 and ``--resume`` through the day's new code paths at once:
one project mixing ordinary events, lines over 64 KB (staged through stubs in a side file),
transform rejects (NaN values, missing ids), Amplitude 400 dead letters (short ids with
``min_id_length``), over-long distinct_ids and overlapping input
files (merged windows). Real ``mp2amp migrate`` subprocesses against the Amplitude
emulator, killed (SIGKILL to the whole process group) at chosen moments by test-side hooks:
during staging (the side file written), in a window's first transform attempt, in its
re-transform, after its last batch. At the end each expected insert_id is stored once,
each rejected record is listed once in dead-letters.jsonl, and ``status --json`` equals
the final ``migrate --json`` totals, balanced."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from migrate_kit import API_KEY, TIMEZONE, amplitude, mp2amp, stored_counts

T = 1_700_000_000  # 2023-11-14 22:13:20 UTC
DAY = 86_400
MIN_ID = 5

# ``mp2amp migrate`` with hooks: argv = config, AT, migrate args. AT is WHAT:N, WHAT one of
# stash (after the N-th big line's stub is written to the side file), stage (after the N-th
# stage_window_rejects), loaded (before the N-th mark_loaded: the window's batches done),
# done (after the N-th batch_done), merged (after the N-th merge of overlapping windows'
# staged files, before the ledger records it), deadfile (every window loaded, before
# dead-letters.jsonl is rendered), none. A hook kills the whole process group (-9).
_HOOK = """
import dataclasses, os, signal, sys
from mp2amp.ledger import Ledger
from mp2amp.ledger.rejects import RejectStore
from mp2amp.pipeline import staging, transform_worker
transform_worker.CHUNK_LINES = 4
what, _, n = sys.argv[2].partition(":")
n = int(n or 1)
calls = {"stash": 0, "stage": 0, "loaded": 0, "done": 0}
def kill():
    os.killpg(os.getpgid(0), signal.SIGKILL)
def hit(name):
    calls[name] += 1
    if what == name and calls[name] == n:
        kill()
stage = RejectStore.stage_window_rejects
def staging_rejects(self, rows, **kw):
    stage(self, rows, **kw)
    hit("stage")
RejectStore.stage_window_rejects = staging_rejects
loaded, done = Ledger.mark_loaded, Ledger.batch_done
def mark_loaded(self, *a, **k):
    hit("loaded")
    return loaded(self, *a, **k)
def batch_done(self, *a, **k):
    out = done(self, *a, **k)
    hit("done")
    return out
Ledger.mark_loaded, Ledger.batch_done = mark_loaded, batch_done
import mp2amp.pipeline.migrate as m
import mp2amp.pipeline.overlaps as ov
_ms = ov.merge_staged
def merge_staged(*a, **k):
    out = _ms(*a, **k)
    hit("merged")
    return out
ov.merge_staged = merge_staged
calls["merged"] = 0
calls["deadfile"] = 0
_wdl = m.write_dead_letters
def write_dead_letters(*a, **k):
    hit("deadfile")  # every window loaded, dead-letters.jsonl not rendered yet
    return _wdl(*a, **k)
m.write_dead_letters = write_dead_letters
settings = m.upload_settings
m.upload_settings = lambda *a, **k: dataclasses.replace(settings(*a, **k), max_events=3)
from mp2amp.cli import main
sys.argv = ["mp2amp", "migrate", "-c", sys.argv[1]] + sys.argv[3:]
main()
"""


def _line(event: str, props: dict[str, Any], nan: bool = False) -> bytes:
    if nan:
        props = {**props, "bad": 1}
    raw = orjson.dumps({"event": event, "properties": props})
    return (raw.replace(b'"bad":1', b'"bad":NaN') if nan else raw) + b"\n"


def _file(path: Path, tag: str, start: int, step: int, n: int) -> None:
    """``n`` rounds of: an ordinary event, a NaN reject, a missing-id reject, a short id (a
    400), a line over 64 KB, an over-long distinct_id with a device (sent by its device)
    and one without (a reject), big NaN / missing-id / short-id lines, a 70 KB distinct_id
    with a device and one without; times ``start + step * k``. a.jsonl and b.jsonl also
    share copies of a short-id event and of a (big or small) event, b's with other spacing."""
    out: list[bytes] = []
    k = 0

    def t() -> int:
        nonlocal k
        k += 1
        return start + step * k

    for i in range(n):
        out.append(_line("Plain", {"time": t(), "distinct_id": f"user-{i % 4}",
                                   "$insert_id": f"{tag}-plain-{i}"}))
        out.append(_line("Bad", {"time": t(), "distinct_id": f"user-{i % 4}",
                                 "$insert_id": f"{tag}-nan-{i}"}, nan=True))
        out.append(_line("NoId", {"time": t(), "$insert_id": f"{tag}-noid-{i}"}))
        out.append(_line("Short", {"time": t(), "distinct_id": f"s{i % 3}",
                                   "$insert_id": f"{tag}-short-{i}"}))
        out.append(_line("Big", {"time": t(), "distinct_id": f"user-{i % 4}",
                                 "$insert_id": f"{tag}-big-{i}",
                                 "blob": f"{tag}{i}" + "x" * 70_000}))
        long_id = f"L{tag}{i}" + "y" * 1200
        out.append(_line("LongDev", {"time": t(), "distinct_id": long_id,
                                     "$device_id": f"device-{tag}-{i}",
                                     "$insert_id": f"{tag}-longdev-{i}"}))
        out.append(_line("LongOnly", {"time": t(), "distinct_id": long_id + "z",
                                      "$insert_id": f"{tag}-longonly-{i}"}))
        out.append(_line("BigNaN", {"time": t(), "distinct_id": f"user-{i % 4}",
                                    "$insert_id": f"{tag}-bignan-{i}",
                                    "blob": "n" * 70_000}, nan=True))
        out.append(_line("BigNoId", {"time": t(), "$insert_id": f"{tag}-bignoid-{i}",
                                     "blob": "m" * 70_000}))
        out.append(_line("BigShort", {"time": t(), "distinct_id": f"s{i % 3}",
                                      "$insert_id": f"{tag}-bigshort-{i}",
                                      "blob": "k" * 70_000}))
        out.append(_line("HugeId", {"time": t(), "distinct_id": "H" * 70_000 + f"{tag}{i}",
                                    "$device_id": f"device-h{tag}-{i}",
                                    "$insert_id": f"{tag}-hugeid-{i}"}))
        out.append(_line("HugeOnly", {"time": t(), "distinct_id": "G" * 70_000 + f"{tag}{i}",
                                      "$insert_id": f"{tag}-hugeonly-{i}"}))
        out.append(_line("Short", {"time": T + 7000 + i, "distinct_id": "s9",
                                   "$insert_id": f"dupshort-{i}"}) if tag in "ab" else b"")
        # a copy in both overlapping files, at one time (b's with other spacing)
        dup = {"event": "Dup", "properties": {"time": T + 5000 + i, "distinct_id": "user-dup",
                                              "$insert_id": f"dup-{i}",
                                              "blob": "d" * 70_000 * (i % 2)}}
        if tag == "a":
            out.append(orjson.dumps(dup) + b"\n")
        elif tag == "b":
            out.append(orjson.dumps(dup).replace(b'":', b'": ') + b"\n")
    path.write_bytes(b"".join(out))


def _project(root: Path) -> Path:
    """a.jsonl and b.jsonl interleave in time (merged into one window), c.jsonl a day on."""
    events = root / "events"
    events.mkdir(parents=True)
    _file(events / "a.jsonl", "a", T, 20, 4)
    _file(events / "b.jsonl", "b", T + 10, 20, 4)
    _file(events / "c.jsonl", "c", T + DAY, 20, 4)
    return events


def _expected(events: Path, work: Path) -> tuple[set[tuple[str | None, str]],
                                                  set[tuple[str, int]],
                                                  set[tuple[str, int]]]:
    """What ``mp2amp transform`` makes of the files: (accepted keys, transform rejects'
    (source, line), insert_ids Amplitude refuses for a short id)."""
    work.mkdir(parents=True)
    cfg = work / "transform.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{events}"]\n')
    out = work / "out.jsonl"
    mp2amp("transform", "-c", str(cfg), "-o", str(out), "--json")
    accepted: set[tuple[str | None, str]] = set()
    refused: set[str] = set()
    for raw in out.read_bytes().splitlines():
        e = orjson.loads(raw)
        ids = [x for x in (e.get("device_id"), e.get("user_id")) if x]
        if any(len(x) < MIN_ID for x in ids):
            refused.add(e["insert_id"])
        else:
            accepted.add((e.get("device_id") or e.get("user_id"), e["insert_id"]))
    rejects = set()
    for raw in (work / "out.jsonl.rejects.jsonl").read_bytes().splitlines():
        r = orjson.loads(raw)
        rejects.add((Path(r["source"]).name, r["line"]))
    return accepted, rejects, refused


def _config(path: Path, events: Path, work: Path, url: str) -> Path:
    path.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n[source]\nfiles = ["{events}"]\n'
                    f'[amplitude]\napi_host = "{url}"\nmin_id_length = {MIN_ID}\n'
                    f'[run]\nworkdir = "{work}"\nconcurrency = 2\n')
    return path


# the stash hook, in every process of the run (staging may run in spawned workers):
# kill -9 of the group after the N-th big line's stub is written ($STASH_AT)
_SITE = """
import os, signal
if os.environ.get("STASH_AT"):
    from mp2amp.pipeline import staging
    _stub = staging._Stash.stub
    _calls = [0]
    def _stubbing(self, item):
        out = _stub(self, item)
        self._file.flush()
        _calls[0] += 1
        if _calls[0] == int(os.environ["STASH_AT"]):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return out
    staging._Stash.stub = _stubbing
"""


def _migrate(cfg: Path, at: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    site = cfg.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITE)
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY,
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [
                   os.environ.get("PYTHONPATH")])]))
    if at.startswith("stash:"):
        env["STASH_AT"] = at.split(":")[1]
    return subprocess.run([sys.executable, "-c", _HOOK, str(cfg), at, *args], env=env,
                          capture_output=True, timeout=120, start_new_session=True)


def _status(work: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "status", "--workdir", str(work),
                           "--json"], env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(orjson.loads(proc.stdout)["totals"])


def _dead(work: Path) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in (work / "dead-letters.jsonl").read_bytes().splitlines()]


def _run_with_kills(tmp_path: Path, kills: list[str]) -> None:
    events = _project(tmp_path)
    accepted, rejects, refused = _expected(events, tmp_path / "expect")
    assert (len(accepted), len(rejects), len(refused)) == (52, 72, 28)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=20) as url:
        cfg = _config(tmp_path / "mp2amp.toml", events, work, url)
        for n, at in enumerate(kills):
            proc = _migrate(cfg, at, "--quiet", *(["--resume"] if n else []))
            assert proc.returncode == -9, (at, proc.returncode, proc.stderr[-3000:])
        end = _migrate(cfg, "none", *(["--resume"] if kills else []), "--json")
        assert end.returncode == 0, end.stderr[-3000:]
        counts = stored_counts(url)
    totals = orjson.loads(end.stdout)["totals"]
    missing = accepted - counts.keys()
    extra = counts.keys() - accepted
    twice = {k: c for k, c in counts.items() if c != 1}
    assert not missing and not extra and not twice, (sorted(missing)[:3], sorted(extra)[:3],
                                                     list(twice.items())[:3])
    dead = _dead(work)
    keys = Counter((Path(d["source"]).name, d["line"]) for d in dead)
    assert not [k for k, c in keys.items() if c > 1], "dead-lettered twice"
    transform_dead = {k for d in dead if d["stage"] == "transform"
                      for k in [(Path(d["source"]).name, d["line"])]}
    assert transform_dead == rejects, (sorted(rejects - transform_dead)[:5],
                                       sorted(transform_dead - rejects)[:5])
    amp_dead = [d for d in dead if d["stage"] == "amplitude"]
    assert len(amp_dead) == len(refused)
    assert (totals["sent"], totals["rejected"], totals["dead_lettered"]) == (
        len(accepted), len(rejects), len(refused)), totals
    assert totals["balanced"], totals
    assert _status(work) == totals


# --- the scenario ------------------------------------------------------------------------


def test_kills_in_staging_first_transform_retransform_and_after_last_batch(
        tmp_path: Path) -> None:
    """kill -9 with a big line's stub in the side file (window a staging), in the merged
    window's first transform attempt (rejects written straight in), in its re-transform
    (rejects staged), after its last batch (not marked loaded) and after the next
    window's; then ``--resume``: each insert_id once, each reject once, balanced."""
    _run_with_kills(tmp_path, ["stash:3", "stage:2", "stage:2", "loaded:1", "loaded:1"])


def test_kills_during_the_merge_and_mid_load_then_resume(tmp_path: Path) -> None:
    _run_with_kills(tmp_path, ["merged:1", "done:3", "stage:1", "done:3", "loaded:1",
                               "deadfile:1"])
