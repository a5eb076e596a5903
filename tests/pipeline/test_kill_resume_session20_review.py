"""Review (session 20): kill -9 + ``migrate --resume`` in configurations the default
kill/resume test does not cover: HTTP V2, overlapping (merged) inputs, the S3-import sink,
the Export API source killed during the load, the daily quota, a legacy-time project and a
dirty generated project. After every scenario the emulator (or the import files) holds
exactly the expected insert_ids, each once, and the dead letters are the expected rejects.
"""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    TIMEZONE,
    Clock,
    Project,
    amplitude,
    assert_counts_exactly_once,
    assert_exactly_once,
    get_json,
    mp2amp,
    split_days,
    transform_outcome,
)
from test_kill_resume import ledger_rows

LATENCY_MS = 100
IN_FLIGHT: list[int] = []  # events in batches in flight at each kill of the last scenario


def _assert_only_in_flight_resent(url: str) -> None:
    stats = get_json(url + "/_emulator/stats")
    assert stats["duplicates_ignored"] <= sum(IN_FLIGHT), (
        f"{stats['duplicates_ignored']} events received again, but only {sum(IN_FLIGHT)} "
        "were in flight at the kills")


def _toml(path: Path, files: Path | None, work: Path, url: str | None, extra: str = "",
          amplitude_extra: str = "", mixpanel_extra: str = "", source_extra: str = "",
          concurrency: int = 4) -> Path:
    text = f'[mixpanel]\ntimezone = "{TIMEZONE}"\n{mixpanel_extra}[source]\n'
    if files is not None:
        text += f'files = ["{files}"]\n'
    text += source_extra + "[amplitude]\n"
    if url is not None:
        text += f'api_host = "{url}"\n'
    text += amplitude_extra
    text += f'[run]\nworkdir = "{work}"\nconcurrency = {concurrency}\n' + extra
    path.write_text(text)
    return path


def _start(cfg: Path, resume: bool, env_extra: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet", "--json"]
    env = dict(os.environ, AMPLITUDE_API_KEY=API_KEY, **(env_extra or {}))
    return subprocess.Popen(args + (["--resume"] if resume else []), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_after(proc: subprocess.Popen[bytes], ledger: Path, moment: str,
                rng: random.Random) -> bool:
    """kill -9 at ``moment``: 'staging' (first window staged), 'identity' (every window
    staged, nothing sent), 'load' (this run got 1-3 batches accepted), 'check' (every
    batch done, windows not all loaded yet), 'time:S' (S seconds in). False if it ended."""
    started = time.time()
    deadline = time.monotonic() + 60
    if moment.startswith("time:"):
        deadline = time.monotonic() + float(moment[5:])
    want = rng.randint(1, 3)
    while proc.poll() is None and time.monotonic() < deadline:
        if moment == "staging":
            if ledger_rows(ledger, "SELECT 1 FROM windows WHERE state != 'pending'"):
                break
        elif moment == "identity":
            rows = ledger_rows(ledger, "SELECT state FROM windows")
            if rows and all(s != "pending" for (s,) in rows):
                break
        elif moment == "load":
            done = ledger_rows(ledger, "SELECT COUNT(*) FROM batches WHERE state = 'done' "
                               f"AND updated_at >= {started}")
            if done and int(str(done[0][0])) >= want:
                time.sleep(rng.uniform(0.0, LATENCY_MS / 1000))
                break
        elif moment.startswith("files:"):
            out = Path(moment[6:])
            if out.exists() and any(p.name.startswith(("mp2amp-", ".")) and
                                    not p.name.startswith(".mp2amp-probe")
                                    for p in out.iterdir()):
                break
        elif moment == "check":
            b = ledger_rows(ledger, "SELECT state FROM batches")
            w = ledger_rows(ledger, "SELECT state FROM windows")
            if b and all(s == "done" for (s,) in b) and any(s != "loaded" for (s,) in w) \
                    and any(s == "loaded" for (s,) in w):
                break
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _run_with_kills(cfg: Path, ledger: Path, moments: list[str], seed: int = 3,
                    env_extra: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
                    ) -> tuple[dict, int]:
    rng = random.Random(seed)
    IN_FLIGHT.clear()
    resume = False
    kills = 0
    for moment in [*moments, None, None, None]:
        proc = _start(cfg, resume, env_extra)
        if moment is not None and _kill_after(proc, ledger, moment, rng):
            kills += 1
            IN_FLIGHT.append(sum(int(str(n)) for (n,) in ledger_rows(
                ledger, "SELECT events FROM batches WHERE state = 'sent'")))
            resume = ledger.exists()
            continue
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 1 and moment is not None:
            raise AssertionError(err.decode()[-2000:])
        assert proc.returncode in ok, (proc.returncode, err.decode()[-3000:])
        result = orjson.loads(out)
        return result, kills
    raise AssertionError("migrate never finished")


def _dead_letters(work: Path) -> list[dict]:
    path = work / "dead-letters.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(r) for r in path.read_bytes().splitlines()]


def _assert_dead_letters(work: Path, rejects: dict[str, int]) -> None:
    rows = _dead_letters(work)
    keys = [(r.get("source"), r.get("line"), r.get("reason")) for r in rows]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    assert not dup, f"dead-lettered twice: {dup[:3]}"
    got = Counter(r["reason"] for r in rows)
    assert dict(got) == rejects, f"dead letters {dict(got)} != transform rejects {rejects}"


# -- overlapping inputs merged, killed at each stage ------------------------------------


def test_overlapping_inputs_kill9_at_each_stage_then_resume(project: Project,
                                                            tmp_path: Path) -> None:
    events = split_days(project.events, tmp_path / "events")
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS) as url:
        cfg = _toml(tmp_path / "m.toml", events, work, url)
        result, kills = _run_with_kills(cfg, work / "ledger.sqlite",
                                        ["identity", "load", "load", "check"])
        assert kills >= 2
        assert result["totals"]["balanced"]
        assert_exactly_once(url, project.expected)
        _assert_only_in_flight_resent(url)
    _assert_dead_letters(work, project.rejects)


def _import_file_ids(out: Path) -> Counter:
    ids: Counter = Counter()
    for f in sorted(out.glob("mp2amp-*.json.gz")):
        for raw in gzip.decompress(f.read_bytes()).splitlines():
            e = orjson.loads(raw)
            ids[(e.get("device_id") or e.get("user_id"), e["insert_id"])] += 1
    return ids


def test_export_api_kill9_during_load_then_resume(project: Project, tmp_path: Path) -> None:
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    work = tmp_path / "work"
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=project.root, api_secret="emulator-secret", export_per_hour=None,
        export_per_second=None))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp",
                                                 latency_ms=LATENCY_MS) as url:
        cfg = _toml(tmp_path / "m.toml", None, work, url,
                    mixpanel_extra=f'api_host = "{mp_url}"\n',
                    source_extra='from_date = "2024-01-01"\nto_date = "2024-01-04"\n')
        result, kills = _run_with_kills(cfg, work / "ledger.sqlite",
                                        ["load", "load", "check"],
                                        env_extra={"MIXPANEL_SECRET": "emulator-secret"})
        assert kills >= 2
        assert result["totals"]["balanced"]
        assert_exactly_once(url, project.expected)
        stats = get_json(url + "/_emulator/stats")
    assert stats["events_stored"] == len(project.expected)
    _assert_dead_letters(work, project.rejects)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("dirty")
    mp2amp("generate", "--out", str(root / "p"), "--users", "80", "--days", "2",
           "--seed", "9", "--timezone", TIMEZONE, "--dirty", "0.05")
    events = root / "p" / "events"
    return Project(root / "p", events, *transform_outcome(events, root / "transform"))


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated legacy-time project's day files (project-local wall clock)."""
    root = tmp_path_factory.mktemp("legacy")
    mp2amp("generate", "--out", str(root / "p"), "--users", "80", "--days", "2",
           "--seed", "4", "--timezone", TIMEZONE, "--legacy-time")
    return root / "p" / "events"


LEGACY_TZ_CHANGE = ('timezone_changes = [{since = "2024-01-02", timezone = "America/New_York"}]\n'
                    'time_check = "warn"\n')


def _transform_keys(root: Path, events: Path, mixpanel_extra: str) -> tuple[frozenset, dict]:
    root.mkdir(parents=True, exist_ok=True)
    cfgp = root / "t.toml"
    cfgp.write_text(f'[mixpanel]\ntimezone = "{TIMEZONE}"\n{mixpanel_extra}'
                    f'[source]\nfiles = ["{events}"]\n')
    out = root / "out.jsonl"
    mp2amp("transform", "-c", str(cfgp), "-o", str(out), "--json")
    keys = frozenset((e.get("device_id") or e.get("user_id"), e["insert_id"])
                     for e in map(orjson.loads, out.read_bytes().splitlines()))
    rejects = Counter(orjson.loads(r)["reason"] for r in
                      (root / "out.jsonl.rejects.jsonl").read_bytes().splitlines())
    return keys, dict(rejects)


@pytest.mark.parametrize("overlap", [False, True])
def test_output_dir_kill9_while_files_are_written(project: Project, tmp_path: Path,
                                                  overlap: bool) -> None:
    events = split_days(project.events, tmp_path / "events") if overlap else project.events
    work = tmp_path / "work"
    out = tmp_path / "import"
    cfg = _toml(tmp_path / "m.toml", events, work, None,
                amplitude_extra=f'output_dir = "{out}"\n')
    result, kills = _run_with_kills(cfg, work / "ledger.sqlite",
                                    [f"files:{out}", "identity", f"files:{out}"])
    assert kills >= 1
    assert result["totals"]["balanced"]
    assert_counts_exactly_once(dict(_import_file_ids(out)), project.expected)
    _assert_dead_letters(work, project.rejects)


def test_httpv2_throttled_and_flaky_kill9_then_resume(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS, fail_rate=0.1,
                   drop_after_ingest_rate=0.1, eps_limit=60) as url:
        cfg = _toml(tmp_path / "m.toml", project.events, work, url,
                    amplitude_extra='endpoint = "httpapi"\nbatch_max_bytes = 60000\n')
        result, kills = _run_with_kills(cfg, work / "ledger.sqlite",
                                        ["load", "load", "load"])
        assert kills >= 2
        assert result["totals"]["balanced"]
        assert_exactly_once(url, project.expected)
    _assert_dead_letters(work, project.rejects)


def test_daily_quota_cli_kill9_then_resume_after_reset(project: Project, tmp_path: Path) -> None:
    """The real CLI, kill -9 mid-load while the daily quota refuses events, resume (exit 3,
    events parked), the quota's day passes, resume killed while it replays the parked
    events, resume to the end: each event once."""
    clock = Clock()
    work = tmp_path / "work"
    ledger = work / "ledger.sqlite"
    # a quota below the busiest device's events (60) so that it bites, and above what it
    # has parked (a replay request over the quota would be refused every day)
    with amplitude(tmp_path / "amp", daily_quota=45, now=clock, latency_ms=LATENCY_MS) as url:
        cfg = _toml(tmp_path / "m.toml", project.events, work, url)
        result, kills = _run_with_kills(cfg, ledger, ["load", "load"], ok=(0, 3))
        assert kills == 2
        assert result["totals"]["parked"] > 0, result["totals"]
        for attempt in range(8):
            clock.offset += 25 * 3600
            proc = _start(cfg, True)
            if attempt == 0:
                # kill once some parked events were settled by this run
                before = ledger_rows(ledger, "SELECT COUNT(*) FROM parked WHERE state = 'parked'")
                deadline = time.monotonic() + 30
                while proc.poll() is None and time.monotonic() < deadline:
                    now = ledger_rows(ledger,
                                      "SELECT COUNT(*) FROM parked WHERE state = 'parked'")
                    if now and before and now[0][0] < before[0][0]:
                        break
                    time.sleep(0.003)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    continue
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode in (0, 3), err.decode()[-3000:]
            if proc.returncode == 0:
                break
        assert proc.returncode == 0
        assert_exactly_once(url, project.expected)
    _assert_dead_letters(work, project.rejects)


@pytest.mark.parametrize("workers", [0, 2])
def test_dirty_spilling_kill9_then_resume(dirty: Project, tmp_path: Path, workers: int) -> None:
    """A tiny memory budget: identity, sessions and dedup spill to disk; killed at each
    stage, resumed: each event once, the dirty project's rejects dead-lettered once."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", latency_ms=LATENCY_MS) as url:
        cfg = _toml(tmp_path / "m.toml", dirty.events, work, url, concurrency=2,
                    extra=f"memory_budget = 1000\ntransform_workers = {workers}\n")
        result, _kills = _run_with_kills(cfg, work / "ledger.sqlite",
                                         ["identity", "load", "load", "check"], seed=workers)
        assert result["totals"]["balanced"]
        assert_exactly_once(url, dirty.expected)
        _assert_only_in_flight_resent(url)
    _assert_dead_letters(work, dirty.rejects)


def test_legacy_export_api_timezone_change_kill9_then_resume(
        legacy: Path, tmp_path: Path) -> None:
    """A legacy-time project with a timezone change, read through the Export API."""
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    events = legacy
    extra = "legacy_time = true\n" + LEGACY_TZ_CHANGE
    expected, _rejects = _transform_keys(tmp_path / "t", events, extra)
    work = tmp_path / "work"
    mixpanel = MixpanelEmulator(MixpanelConfig(
        data_dir=events.parent, api_secret="emulator-secret", export_per_hour=None,
        export_per_second=None))
    with mixpanel.running() as mp_url, amplitude(tmp_path / "amp",
                                                 latency_ms=LATENCY_MS) as url:
        cfg = _toml(tmp_path / "m.toml", None, work, url,
                    mixpanel_extra=f'api_host = "{mp_url}"\n' + extra,
                    source_extra='from_date = "2024-01-01"\nto_date = "2024-01-02"\n')
        result, _kills = _run_with_kills(cfg, work / "ledger.sqlite",
                                         ["identity", "load", "check"],
                                         env_extra={"MIXPANEL_SECRET": "emulator-secret"})
        assert result["totals"]["balanced"]
        assert_exactly_once(url, expected)
        _assert_only_in_flight_resent(url)
