"""Mixpanel Data Pipelines exports on object storage (reference mixpanel-api.md §6).

Two layouts exist:

* JSON pipelines: ``<BUCKET>/<PROJECT_ID>/mp_master_event/<YYYY>/<MM>/<DD>/<part files>``
  next to ``mp_people_data/`` and ``mp_identity_mappings_data/``. Rows are
  ``{event_name, time, distinct_id, device_id, user_id, insert_id, properties}``.
* Legacy raw pipelines: ``<PREFIX>/<PROJECT_ID>/<YYYY>/<MM>/<DD>/<HH or full_day>/`` with
  ``*export.json.gz`` files in Raw Export format and an empty ``complete`` marker.

Given a directory, the reader keeps only event files: under a JSON-pipeline tree only
``mp_master_event`` is read (profiles and identity mappings are not events), ``schema/``
name maps and ``complete`` markers are skipped. Pipeline rows are rewritten to the
Raw Export shape ``{"event", "properties"}`` that the rest of mp2amp reads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from mp2amp.models import UTC_TIME_MARK

EVENTS_DIR = "mp_master_event"
NOT_EVENT_DIRS = frozenset({"mp_people_data", "mp_identity_mappings_data", "schema"})
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz", ".gz")
MARKER_NAMES = frozenset({"complete", "_SUCCESS"})


def is_event_file(relative: str) -> bool:
    """Whether a file found below a given directory holds events (path uses '/')."""
    parts = [p for p in relative.split("/") if p]
    if not parts:
        return False
    name = parts[-1]
    if name.startswith((".", "_")) or name in MARKER_NAMES:
        return False
    if any(p in NOT_EVENT_DIRS for p in parts[:-1]):
        return False
    # any case (B.JSONL, x.jsonl.GZ); inside mp_master_event a part file may have no
    # extension at all (the JSON pipelines' naming is not documented)
    return name.lower().endswith(DATA_SUFFIXES) or (
        "." not in name and EVENTS_DIR in parts[:-1])


def select_event_files(relatives: list[str]) -> list[str]:
    """Event files of a directory listing, in natural (day) order.

    If a JSON-pipeline ``mp_master_event`` tree is present, only files inside it count.
    """
    files = [r for r in relatives if is_event_file(r)]
    if any(EVENTS_DIR in r.split("/")[:-1] for r in files):
        files = [r for r in files if EVENTS_DIR in r.split("/")[:-1]]
    return sorted(files, key=natural_key)


def natural_key(path: str) -> list[Any]:
    """Sort '2024/1/9' before '2024/1/10' (pipelines may not zero-pad)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok)
            for tok in re.split(r"(\d+)", path) if tok]


def is_pipeline_row(record: dict[str, Any]) -> bool:
    return "event_name" in record and "event" not in record


def _epoch_seconds(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # Milliseconds (or finer) are recognisable by magnitude: seconds reach 1e11 in 5138.
        return value / 1000 if value > 1e11 else value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" UTC", ""))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # pipelines write UTC
        ts = parsed.timestamp()
        return int(ts) if ts == int(ts) else ts
    return None


def to_export_shape(row: dict[str, Any]) -> dict[str, Any] | str:
    """A pipeline row as a Raw Export record, or a message saying what is wrong."""
    props: Any = row.get("properties")
    if isinstance(props, str):
        try:
            props = orjson.loads(props)
        except orjson.JSONDecodeError:
            return "field 'properties' is a string that is not valid JSON"
    if props is None:
        props = {}
    if not isinstance(props, dict):
        return "field 'properties' is not an object"
    out = dict(props)
    if "time" in row and "time" not in out:
        seconds = _epoch_seconds(row["time"])
        if seconds is None:
            return f"field 'time' is not a timestamp: {row['time']!r}"
        out["time"] = seconds
    for src, dst in (("distinct_id", "distinct_id"), ("insert_id", "$insert_id"),
                     ("device_id", "$device_id"), ("user_id", "$user_id")):
        value = row.get(src)
        if value not in (None, "") and dst not in out:
            out[dst] = value
    # Pipelines write UTC even for a project created before 2023: marked, so that the
    # legacy_time conversion leaves these times alone
    return {"event": row["event_name"], "properties": out, UTC_TIME_MARK: True}
