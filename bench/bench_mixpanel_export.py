"""Mixpanel emulator export throughput: events/s streamed by /api/2.0/export over loopback.

The emulator runs in a thread of this process; the client reads the body with
http.client in 64 KiB reads and counts lines, so client cost is small. Baseline, same run
and same day files: reading and splitting the gzip files in-process (what any server
serving them must at least do). Measured: plain export, export with a `where` filter (every
line parsed and evaluated), and a gzip-encoded export.
"""

from __future__ import annotations

import gzip
import http.client
import tempfile
import time
from base64 import b64encode
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import orjson

from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

DAYS = ("2024-01-10", "2024-01-11")
BASE = 1_704_902_400


def write_project(root: Path, events: int) -> None:
    (root / "events").mkdir(parents=True)
    (root / "project.json").write_bytes(orjson.dumps({"project_id": 1, "timezone": "UTC"}))
    per_day = events // len(DAYS)
    for d, day in enumerate(DAYS):
        with gzip.open(root / "events" / f"{day}.jsonl.gz", "wb", compresslevel=1) as fh:
            for i in range(per_day):
                rec = {"event": ("Viewed Page", "Added To Cart", "Order Completed")[i % 3], "properties": {
                    "time": BASE + d * 86400 + i % 86400, "distinct_id": f"user-{i % 5000}",
                    "$insert_id": f"{d}-{i:012d}", "$browser": "Chrome", "$current_url": f"https://shop.example.com/p/{i % 997}",
                    "price": (i % 50) + 0.99, "mp_lib": "web", "$lib_version": "2.47.0"}}
                fh.write(orjson.dumps(rec) + b"\n")


def fetch(url: str, where: str | None, gz: bool) -> tuple[int, float]:
    parsed = urlparse(url)
    params = {"from_date": DAYS[0], "to_date": DAYS[-1], "project_id": "1"}
    if where:
        params["where"] = where
    headers = {"Authorization": "Basic " + b64encode(b"u:s").decode(), "Accept-Encoding": "gzip" if gz else "identity"}
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    started = time.perf_counter()
    conn.request("GET", "/api/2.0/export?" + urlencode(params), headers=headers)
    resp = conn.getresponse()
    lines = 0
    if gz:
        body = gzip.decompress(resp.read())
        lines = body.count(b"\n")
    else:
        while chunk := resp.read(65536):
            lines += chunk.count(b"\n")
    took = time.perf_counter() - started
    conn.close()
    return lines, took


def baseline(root: Path) -> tuple[int, float]:
    started = time.perf_counter()
    lines = 0
    for day in DAYS:
        with gzip.open(root / "events" / f"{day}.jsonl.gz", "rb") as fh:
            for _ in fh:
                lines += 1
    return lines, time.perf_counter() - started


def run(quick: bool) -> list[dict[str, Any]]:
    events = 40_000 if quick else 400_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        write_project(root, events)
        base_lines, base_took = baseline(root)
        base_rate = base_lines / base_took
        emulator = MixpanelEmulator(MixpanelConfig(data_dir=root, service_account="u:s", export_per_hour=None,
                                                   export_per_second=None))
        rows = []
        with emulator.running() as url:
            for name, where, gz in (
                ("mixpanel export, plain", None, False),
                ("mixpanel export, where filter", 'properties["price"] >= 0 and properties["$browser"] == "Chrome"', False),
                ("mixpanel export, gzip", None, True),
            ):
                lines, took = fetch(url, where, gz)
                assert lines == base_lines, (name, lines, base_lines)
                rows.append({"name": name, "value": lines / took, "unit": "events/s", "baseline": base_rate,
                             "goal": "stream, flat memory"})
        return rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(row)
