"""Found by a soak in session 24, fixed in session 28 (insert_id scheme 4): around a
legacy project's timezone change, an export's copy and a Data Pipelines copy of one event
could get two insert_ids.

With ``timezone_changes`` (Los Angeles -> Europe/Berlin since 2024-11-06), in the ~9 hours
(Berlin midnight to Los Angeles midnight of the change date) where both zones' local
readings read back to the same UTC time, a pipeline row (UTC) is hashed as the UTC day's
zone's local time (``LocalTimeConverter.to_local_ms``, transform/timeconv.py) while the
export's copy hashes the local time Mixpanel actually stored: migrating both sources of
those days sends such an event twice (268 of 32,785 in the soak, 34 of them the documented
change-date case). Both copies carry the right UTC time. Scheme 4 hashes an export row
near a change by the canonical local time, ``to_local_ms(to_utc_ms(local))``, the one its
pipeline copy hashes; a run started under scheme 3 keeps its scheme-3 ids
(tests/transform/test_timezone_change_ids_session28.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest


def _migrate_both(tmp: Path, utc_iso: str, stored_offset_h: int) -> list[dict]:
    utc = int(datetime.fromisoformat(utc_iso).timestamp() * 1000)
    props = {"distinct_id": "user-12345", "$insert_id": "abcdef0123456789", "$device_id": "dev-12345",
             "mp_processing_time_ms": utc + 5000, "$mp_api_timestamp_ms": utc + 4941}
    local = utc + stored_offset_h * 3_600_000  # the wall clock Mixpanel stored (legacy export)
    (tmp / "export.jsonl").write_text(
        json.dumps({"event": "Clicked", "properties": {**props, "time": local // 1000}}) + "\n")
    day = datetime.fromtimestamp(utc / 1000, tz=UTC)
    dp = tmp / "pipe" / "3141592" / "mp_master_event" / day.strftime("%Y/%m/%d")
    dp.mkdir(parents=True)
    rest = dict(props)
    row = {"event_name": "Clicked", "time": utc, "distinct_id": rest.pop("distinct_id"),
           "insert_id": rest.pop("$insert_id"), "device_id": rest.pop("$device_id"), "properties": rest}
    (dp / "part-00000.json").write_text(json.dumps(row) + "\n")
    (tmp / "cfg.toml").write_text(
        '[mixpanel]\ntimezone = "America/Los_Angeles"\nlegacy_time = true\n'
        'timezone_changes = [{since = "2024-11-06", timezone = "Europe/Berlin"}]\n'
        'time_check = "warn"\n' f'[run]\nworkdir = "{tmp}/work"\n')
    r = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "-c", str(tmp / "cfg.toml"),
                        str(tmp / "export.jsonl"), str(tmp / "pipe" / "3141592"),
                        "--out", str(tmp / "out.jsonl"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]
    assert {e["time"] for e in events} == {utc}  # every copy has the right UTC time
    return events


def test_control_outside_the_band_dedups(tmp_path: Path) -> None:
    assert len(_migrate_both(tmp_path, "2024-11-04T12:00:00+00:00", -8)) == 1


@pytest.mark.parametrize("utc_iso, stored_offset_h", [
    ("2024-11-05T23:30:00+00:00", 1),   # stored in Berlin (change took effect at Berlin midnight): 11-06 00:30
    ("2024-11-06T02:00:00+00:00", -8),  # stored in LA (change took effect later that day): 11-05 18:00
])
def test_export_and_pipeline_copies_get_one_id_around_a_timezone_change(
        tmp_path: Path, utc_iso: str, stored_offset_h: int) -> None:
    events = _migrate_both(tmp_path, utc_iso, stored_offset_h)
    assert len(events) == 1, [e["insert_id"] for e in events]
