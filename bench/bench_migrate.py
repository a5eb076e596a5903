"""End to end: generated Mixpanel files -> ``mp2amp migrate`` -> the Amplitude emulator.

Measured in this run, on this machine (2 cores, shared):

* migrate events/s: events Amplitude accepted / wall time of the whole ``mp2amp migrate``
  process (start-up, staging, identity pass, transform, upload; ``/usr/bin/time -v``).
* baseline: the official ``amplitude-analytics`` SDK (``use_batch=True``, 2000-event
  flushes, ``min_id_length=1``) sending the SAME transformed events (``mp2amp transform``
  output) to a fresh emulator of the same build; timed from the first ``track`` to the end
  of ``shutdown()``, events built before the clock starts (so the SDK pays no transform).
* CPU per event of each kind of process in the first run (main, transform worker, spawned
  staging workers, the emulator): where the time went, from the same run.
* peak memory of ``mp2amp migrate`` at two sizes (quick: 100k and 300k events; full: 1M and
  5M): the sum of the PSS of the migration's processes (it forks a transform worker and
  spawns staging workers), sampled every 0.2 s; next to it the main process's peak RSS
  from ``/usr/bin/time -v`` and each kind of process's own peak PSS (main, transform
  workers, spawned staging workers).

Each emulator runs in its own process (``mp2amp emulate amplitude --port 0``) with the
per-device rate limit raised, so the numbers are throughput, not throttling waits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

KEY = "bench-key"
TZ = "America/Los_Angeles"
DAYS = 7
EVENTS_PER_USER_DAY = 3.46  # what `mp2amp generate` produces over 7 days, roughly
SDK_MAX_EVENTS = 300_000   # the SDK's rate is measured on at most this many events


def _mp2amp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", *args], capture_output=True,
                          text=True, check=True, env=env)


def generate(root: Path, events: int) -> Path:
    users = max(50, round(events / (EVENTS_PER_USER_DAY * DAYS)))
    _mp2amp("generate", "--out", str(root), "--users", str(users), "--days", str(DAYS),
            "--seed", "42", "--timezone", TZ)
    return root / "events"


@contextmanager
def emulator(data: Path, usage: dict[str, float] | None = None) -> Iterator[str]:
    """An emulator process for the block; its CPU seconds go to ``usage["emulator"]``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "emulate", "amplitude", "--port", "0", "--data",
         str(data), "--api-key", KEY, "--eps-limit", "100000000", "--daily-quota",
         "100000000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().split()[-1]
        if not url.startswith("http"):
            raise RuntimeError(f"the emulator did not print its URL: {url!r}")
        yield url
    finally:
        if usage is not None:
            import psutil

            times = psutil.Process(proc.pid).cpu_times()
            usage["emulator"] = times.user + times.system
        proc.terminate()
        proc.wait(timeout=30)


def config(root: Path, events: Path, url: str) -> Path:
    path = root / "mp2amp.toml"
    path.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{events}"]\n'
                    f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{root / "work"}"\n')
    return path


def migrate(root: Path, events: Path) -> dict[str, Any]:
    """One migration in a subprocess; its wall time, peak memory and result."""
    usage: dict[str, float] = {}
    with emulator(root / "amp", usage) as url:
        cfg = config(root, events, url)
        env = dict(os.environ, AMPLITUDE_API_KEY=KEY)
        started = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-m", "mp2amp",
                                 "migrate", "-c", str(cfg), "--quiet", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        peak = TreeMemory(proc.pid)
        sampler = threading.Thread(target=peak.sample_until, args=(proc,), daemon=True)
        sampler.start()
        out, err = proc.communicate()
        seconds = time.perf_counter() - started
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"migrate exited {proc.returncode}: {err[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    if rss is None:
        raise RuntimeError("no peak RSS in /usr/bin/time's output")
    result = orjson.loads(out)
    return {"seconds": seconds, "main_rss_mb": int(rss.group(1)) / 1024,
            "tree_mb": peak.peak_mb, "parts_mb": peak.parts_mb,
            "cpu_s": {**peak.cpu_seconds(), **usage},
            "sent": result["totals"]["sent"],
            "balanced": result["totals"]["balanced"]}


class TreeMemory:
    """Peak memory of the migration with its worker processes: the sum of their PSS
    (proportional set size, so pages a forked worker shares with its parent count once),
    sampled every ``interval`` seconds. /usr/bin/time's peak RSS sees one process only.

    ``parts_mb``: each kind of process's own peak PSS (``main``; ``transform``, the
    workers forked from it; ``spawned``, the staging pool and its resource tracker), so
    that a change in the total can be put down to one of them. ``cpu_seconds()``: each
    kind's CPU time (user + system) as last sampled, so where a run's time goes is read
    off the same run (a process's last < ``interval`` seconds are missed)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self.parts_mb: dict[str, float] = {}
        self._cpu: dict[int, tuple[str, float]] = {}

    def sample_until(self, proc: subprocess.Popen[str]) -> None:
        import psutil

        root = psutil.Process(self.pid)  # /usr/bin/time; its own few MB are left out
        while proc.poll() is None:
            total = 0
            parts: dict[str, int] = {}
            try:
                for p in root.children(recursive=True):
                    try:
                        pss = p.memory_full_info().pss
                        kind = _kind(p, self.pid)
                        times = p.cpu_times()
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                    self._cpu[p.pid] = (kind, times.user + times.system)
                    total += pss
                    parts[kind] = parts.get(kind, 0) + pss
            except psutil.NoSuchProcess:
                break
            self.peak_mb = max(self.peak_mb, total / 2**20)
            for kind, pss in parts.items():
                self.parts_mb[kind] = max(self.parts_mb.get(kind, 0.0), pss / 2**20)
            time.sleep(self.interval)


    def cpu_seconds(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for kind, seconds in self._cpu.values():
            total[kind] = total.get(kind, 0.0) + seconds
        return total


def _kind(p: Any, top: int) -> str:
    if p.ppid() == top:
        return "main"
    if any("multiprocessing" in arg for arg in p.cmdline()):
        return "spawned"  # spawn's children run ``-c "from multiprocessing..."``
    return "transform"  # forked: the same command line as the migration


def transformed(root: Path, events: Path, limit: int) -> list[dict[str, Any]]:
    out = root / "transformed.jsonl"
    cfg = root / "transform.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{events}"]\n')
    _mp2amp("transform", "-c", str(cfg), "-o", str(out))
    rows = []
    with open(out, "rb") as f:
        for raw in f:
            rows.append(orjson.loads(raw))
            if len(rows) >= limit:
                break
    return rows


_RENAMED = {"productId": "product_id", "revenueType": "revenue_type"}


def sdk_events(rows: list[dict[str, Any]]) -> list[Any]:
    """The same events as the SDK's BaseEvent objects (JSON key -> SDK attribute)."""
    from amplitude import BaseEvent
    from amplitude.event import EVENT_KEY_MAPPING

    out = []
    for row in rows:
        event = BaseEvent(row["event_type"])
        for key, value in row.items():
            attr = _RENAMED.get(key, key)
            if attr not in EVENT_KEY_MAPPING or value is None:
                continue
            if EVENT_KEY_MAPPING[attr][1] is float and isinstance(value, int):
                value = float(value)
            event[attr] = value
        out.append(event)
    return out


def sdk_rate(root: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from amplitude import Amplitude, Config

    events = sdk_events(rows)
    done = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def callback(event: Any, code: int, message: str | None = None) -> None:
        with lock:
            done["ok" if code == 200 else "failed"] += 1

    with emulator(root / "amp-sdk") as url:
        client = Amplitude(KEY, Config(use_batch=True, server_url=url + "/batch",
                                       flush_queue_size=2000, min_id_length=1,
                                       callback=callback))
        started = time.perf_counter()
        for event in events:
            client.track(event)
        client.shutdown()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "events": len(events), **done}


def run(quick: bool) -> list[dict[str, Any]]:
    small, large = (100_000, 300_000) if quick else (1_000_000, 5_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        root = Path(tmp)
        files_small = generate(root / "gen-small", small)
        first = migrate(root / "run-small", files_small)
        rows = transformed(root, files_small, SDK_MAX_EVENTS)
        sdk = sdk_rate(root, rows)
        del rows
        files_large = generate(root / "gen-large", large)
        second = migrate(root / "run-large", files_large)
    rate = first["sent"] / first["seconds"]
    sdk_eps = sdk["ok"] / sdk["seconds"]
    return [
        {"name": f"migrate end to end, {first['sent']:,} events (files -> emulator)",
         "value": rate, "unit": "events/s", "baseline": sdk_eps,
         "goal": ">= 50k events/s and >= 5x the amplitude-analytics SDK (use_batch); "
                 f"SDK delivered {sdk['ok']:,} of {sdk['events']:,} in {sdk['seconds']:.1f} s; "
                 f"CPU per event: {_cpu(first)} in {first['seconds']:.1f} s wall"},
        {"name": f"migrate peak memory (all its processes, PSS), {second['sent']:,} events",
         "value": second["tree_mb"], "unit": "MB", "baseline": first["tree_mb"],
         "goal": f"< 300 MB at 5M events, within 10% of the {first['sent']:,}-event run "
                 f"(baseline); main process alone: peak RSS {second['main_rss_mb']:.0f} MB "
                 f"(vs {first['main_rss_mb']:.0f} MB); each kind's own peak PSS: "
                 f"{_parts(second)} (vs {_parts(first)})"},
    ]


def _cpu(run: dict[str, Any]) -> str:
    """Each kind's CPU microseconds per event sent, and their sum."""
    per = {kind: 1e6 * seconds / max(1, run["sent"]) for kind, seconds in run["cpu_s"].items()}
    parts = ", ".join(f"{kind} {us:.1f}" for kind, us in sorted(per.items()))
    return f"{parts} (sum {sum(per.values()):.1f} us)"


def _parts(run: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {mb:.0f} MB" for kind, mb in sorted(run["parts_mb"].items()))


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(orjson.dumps(row).decode())
