"""Serve a project really written by `mp2amp generate` (contracts §1), not a hand-built one."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

generate = pytest.importorskip("mp2amp.generate.project")

START = date(2024, 1, 5)
DAYS = 3


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "project"
    generate.generate_project(generate.GenerateConfig(out=out, users=40, days=DAYS, start=START, seed=5, dirty=0.02))
    return out


def _file_lines(path: Path) -> list[bytes]:
    return [x for x in gzip.decompress(path.read_bytes()).split(b"\n") if x.strip()]


def _export(url: str, sa: dict[str, str], first: date, last: date) -> list[bytes]:
    resp = requests.get(f"{url}/api/2.0/export", auth=("sa-user", "sa-secret"), timeout=30,
                        params={**sa, "from_date": first.isoformat(), "to_date": last.isoformat()})
    assert resp.status_code == 200, resp.text
    return resp.content.splitlines()


def _times(lines: list[bytes]) -> list[float]:
    """The epoch seconds of the lines that are whole records (malformed and split lines of
    the generator's dirt pass through untouched)."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        t = rec.get("properties", {}).get("time") if isinstance(rec, dict) else None
        if isinstance(t, int | float) and not isinstance(t, bool):
            out.append(t / 1000 if t > 1e11 else t)
    return out


def test_export_serves_the_generated_days(generated: Path, serve: Any) -> None:
    meta = json.loads((generated / "project.json").read_text())
    tz = ZoneInfo(meta["timezone"])
    assert not meta["legacy_time"] and meta["timezone"] != "UTC"
    sa = {"project_id": str(meta["project_id"])}
    files = {START + timedelta(days=i): _file_lines(generated / "events" / f"{START + timedelta(days=i)}.jsonl.gz")
             for i in range(DAYS)}
    everything = sum(len(lines) for lines in files.values())
    # A post-2023 project: from_date/to_date are UTC days, and the project's local days span
    # one UTC day more. Each UTC day holds exactly the records of that UTC day.
    first = datetime.combine(START, dtime(0), tz).astimezone(UTC).date()
    last = (datetime.combine(START + timedelta(days=DAYS), dtime(0), tz) - timedelta(seconds=1)).astimezone(UTC).date()
    assert (last - first).days == DAYS
    with serve(generated) as (url, _):
        total = 0
        for i in range((last - first).days + 1):
            day = first + timedelta(days=i)
            got = _export(url, sa, day, day)
            assert all(datetime.fromtimestamp(t, UTC).date() == day for t in _times(got))
            total += len(got)
        assert total == everything == len(_export(url, sa, first, last))
    # Served in the project's timezone (--timezone), a day is its file (a fractional time
    # rounded down to seconds, as export does).
    with serve(generated, timezone=meta["timezone"]) as (url, _):
        for day, want in files.items():
            got = _export(url, sa, day, day)
            assert len(got) == len(want) > 0
            assert all(datetime.fromtimestamp(t, tz).date() == day for t in _times(got))
        assert len(_export(url, sa, START, START + timedelta(days=DAYS - 1))) == everything
        users = requests.get(f"{url}/api/2.0/engage", params=sa, auth=("sa-user", "sa-secret"), timeout=30).json()
        assert users["total"] == len(_file_lines(generated / "profiles" / "users.jsonl.gz"))
        schema = requests.get(f"{url}/api/app/projects/{meta['project_id']}/schemas", auth=("sa-user", "sa-secret"),
                              timeout=30).json()
        assert schema == json.loads((generated / "schema.json").read_text())
        for key in meta["group_keys"]:
            groups = requests.get(f"{url}/api/2.0/engage", params={**sa, "data_group_id": key},
                                  auth=("sa-user", "sa-secret"), timeout=30).json()
            assert groups["total"] == len(_file_lines(generated / "profiles" / "groups" / f"{key}.jsonl.gz"))
