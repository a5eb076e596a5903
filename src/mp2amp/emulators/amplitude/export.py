"""Export API: stored events -> a zip of gzipped NDJSON files, one per hour of server_upload_time.

Members are named as Amplitude names its export files, ``{app}_{YYYY-MM-DD}_{H}#{n}.json.gz``
(hour not zero-padded, partitions from 1), inside a ``{app}/`` folder; rows carry
Amplitude's export field names and ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC timestamps.
"""

from __future__ import annotations

import gzip
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from mp2amp.emulators.amplitude.ids import NO_PERSON
from mp2amp.emulators.amplitude.store import HOUR_FORMAT, EventStore, hashed_device_id

MAX_RANGE = timedelta(days=365)
MAX_EXPORT_BYTES = 4 * 1024**3  # "The limit size is 4GB"
ROWS_PER_FILE = 250_000
SCHEMA_VERSION = 12
MAX_STRING = 1024
DEFAULT_LIBRARY = "http/2.0"
_REVENUE_FIELDS = (("price", "$price"), ("quantity", "$quantity"), ("revenue", "$revenue"),
                   ("productId", "$productId"), ("revenueType", "$revenueType"))


class ExportRangeError(ValueError):
    """``start``/``end`` are malformed, reversed or span more than 365 days."""


def parse_range(start: str | None, end: str | None) -> tuple[str, str]:
    """Validate ``YYYYMMDDTHH`` bounds (inclusive hours); returns them normalised."""
    if not start or not end:
        raise ExportRangeError("start and end are required, formatted YYYYMMDDTHH (e.g. 20220201T05)")
    try:
        first = datetime.strptime(start, HOUR_FORMAT)
        last = datetime.strptime(end, HOUR_FORMAT)
    except ValueError:
        raise ExportRangeError(
            f"start={start!r} end={end!r}: expected YYYYMMDDTHH (e.g. 20220201T05)"
        ) from None
    if last < first:
        raise ExportRangeError(f"end {end} is before start {start}")
    if last - first > MAX_RANGE:
        raise ExportRangeError("the range may cover at most 365 days")
    return first.strftime(HOUR_FORMAT), last.strftime(HOUR_FORMAT)


def fmt_time(ms: int) -> str:
    # validate.py refuses times outside the years 1-9999, so every stored one has a date
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _cut(value: Any) -> Any:
    """``value`` with every string in it, however deep, at most 1024 characters ("strings
    are limited to 1024 characters"); the same object when nothing is cut."""
    t = type(value)
    if t is str:
        return value[:MAX_STRING] if len(value) > MAX_STRING else value
    if t is list:
        items = [_cut(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if t is dict:
        cut = {k: _cut(v) for k, v in value.items()}
        return value if all(cut[k] is v for k, v in value.items()) else cut
    return value


def _truncated(props: dict[str, Any]) -> dict[str, Any]:
    """Amplitude keeps at most 1024 characters of a string property value, nested too."""
    out: dict[str, Any] = _cut(props)
    return out


MAX_GROUP_TYPES = 5
MAX_GROUP_VALUES = 10


def tracked_groups(groups: dict[str, Any]) -> dict[str, list[Any]]:
    """"Up to 5 unique group types and 10 total group values per event. Any groups past
    that threshold aren't tracked." Exports list every group type's values, even a single
    one sent as a string (real export lines: ``"groups": {"[Segment] Group": ["e6a3..."]}``);
    a group name is a string like any other, cut at 1024 characters."""
    out: dict[str, list[Any]] = {}
    left = MAX_GROUP_VALUES
    for group_type, value in groups.items():
        if len(out) == MAX_GROUP_TYPES or left == 0:
            break
        values = value[:left] if isinstance(value, list) else [value]
        left -= len(values)
        out[group_type] = [_cut(v) for v in values]
    return out


def tracked_group_properties(snapshot: dict[str, dict[str, Any]],
                             tracked: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """The ingestion-time properties (``{type: {name: props}}``) of the tracked groups
    only: Amplitude does not track the others, so it shows none of their properties.
    Names are matched as the ingestor keys them (``str``), after the same 1024 cut."""
    out: dict[str, dict[str, Any]] = {}
    for group_type, by_name in snapshot.items():
        names = {str(v) for v in tracked.get(group_type, ())}
        kept = {name[:MAX_STRING]: _truncated(props) for name, props in by_name.items()
                if name[:MAX_STRING] in names}
        if kept:
            out[group_type] = kept
    return out


def export_row(e: dict[str, Any], app: int, canonical: Callable[[int], int]) -> dict[str, Any]:
    """One stored event in Amplitude's export shape."""
    upload = fmt_time(e["_t"])
    sent_time = e.get("time")  # 0 is a time (1970), only a missing one means "upload time"
    event_time = fmt_time(sent_time if sent_time is not None else e["_t"])
    event_props = dict(e.get("event_properties") or {})
    for source, target in _REVENUE_FIELDS:
        if e.get(source) is not None:
            event_props[target] = e[source]
    price = e.get("price")
    if price is not None:  # revenue = price x quantity, "quantity: Defaults to 1"
        quantity = e.get("quantity")
        event_props["$revenue"] = price * (quantity if quantity is not None else 1)
    aid = canonical(e["_a"])
    groups = tracked_groups(e.get("groups") or {})
    # "" is no ID (validation and ingestion read it so): a group update naming nobody,
    # or a device's event, exports a null user_id as one sent without it
    user_id = (e.get("user_id") or None) if aid != NO_PERSON else None
    session_id = e.get("session_id")
    row = {
        "$insert_id": e.get("insert_id"),
        "$schema": SCHEMA_VERSION,
        "adid": e.get("adid"),
        "amplitude_attribution_ids": None,
        "amplitude_event_type": None,
        "amplitude_id": aid if aid != NO_PERSON else None,  # a group update names nobody
        "app": app,
        "city": e.get("city"),
        "client_event_time": event_time,
        "client_upload_time": upload,
        "country": e.get("country"),
        "data": {"merged_amplitude_id": e["_a"]} if aid != e["_a"] else {},
        "device_brand": e.get("device_brand"),
        "device_carrier": e.get("carrier"),
        "device_family": None,
        "device_id": (e.get("device_id") or (hashed_device_id(user_id) if user_id else None)
                      if aid != NO_PERSON else None),
        "device_manufacturer": e.get("device_manufacturer"),
        "device_model": e.get("device_model"),
        "device_type": None,
        "dma": e.get("dma"),
        # always an integer in real exports, also for events sent without one: the
        # emulator numbers those by their position in the request
        "event_id": e["event_id"] if e.get("event_id") is not None else e["_i"],
        "event_properties": _truncated(event_props),
        "event_time": event_time,
        "event_type": e["event_type"],
        "group_properties": _group_properties(e, groups),
        "groups": groups,
        "idfa": e.get("idfa"),
        "ip_address": e.get("ip"),
        "is_attribution_event": False,
        "language": e.get("language"),
        # what a real export shows for an HTTP API event sent without a library (the
        # /2/httpapi line of the wild fixtures); /batch is assumed to do the same
        "library": e.get("library") or DEFAULT_LIBRARY,
        "location_lat": e.get("location_lat"),
        "location_lng": e.get("location_lng"),
        "os_name": e.get("os_name"),
        "os_version": e.get("os_version"),
        "paying": None,
        "platform": e.get("platform"),
        "processed_time": upload,
        "region": e.get("region"),
        "sample_rate": None,
        "server_received_time": upload,
        "server_upload_time": upload,
        "session_id": session_id if session_id is not None else -1,
        "start_version": e.get("start_version"),
        "user_id": user_id,
        # null in real exports of events sent through /2/httpapi and /batch
        "user_creation_time": None,
        "user_properties": _truncated(e.get("_u") or {}),
        "uuid": e["_id"],
        "version_name": e.get("app_version") or e.get("version_name"),
    }
    # "All string values, like user_id, event ... have a character limit of 1024": the
    # top-level fields too, not only the property values
    for key, value in row.items():
        if type(value) is str and len(value) > MAX_STRING:
            row[key] = value[:MAX_STRING]
    return row


def _group_properties(e: dict[str, Any], groups: dict[str, list[Any]]) -> dict[str, Any]:
    """"Only used when event_type is $groupidentify; otherwise ignored": another event
    shows the properties its tracked groups had at ingestion, never its own
    group_properties."""
    snapshot = e.get("_g")
    if snapshot:
        return tracked_group_properties(snapshot, groups)
    if e["event_type"] == "$groupidentify":
        return _truncated(e.get("group_properties") or {})
    return {}


def member_name(app: int, hour: str, part: int) -> str:
    start = datetime.strptime(hour, HOUR_FORMAT)
    return f"{app}/{app}_{start:%Y-%m-%d}_{start.hour}#{part}.json.gz"


class _Member:
    """One gzipped file of the zip being written, ~1 MB of rows at a time: an hour of a big
    migration is hundreds of MB of rows, which were all held before it was written (each
    row as orjson's bytes, which keep the capacity orjson grew them to: ~16 KB a row of
    ~1.4 KB; the demo's emulator peaked at ~2.9 GB for 200k events)."""

    BUFFER_BYTES = 1 << 20

    def __init__(self, zf: zipfile.ZipFile, name: str) -> None:
        self._raw = zf.open(name, "w")
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self._buffer = bytearray()
        self.count = 0

    def add(self, row: bytes) -> None:
        self._buffer += row
        self._buffer += b"\n"
        self.count += 1
        if len(self._buffer) >= self.BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._gz.write(self._buffer)
        self._buffer.clear()

    def close(self) -> None:
        if self._buffer:
            self._flush()
        self._gz.close()
        self._raw.close()


def write_export(
    store: EventStore, first: str, last: str, app: int, canonical: Callable[[int], int],
    out: Path | IO[bytes],
) -> int:
    """Write the zip for hours ``first..last``; returns the number of events (0: nothing)."""
    total = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in store.hour_files(first, last):
            member: _Member | None = None
            part = 1
            try:
                for event in store.iter_file(path):
                    if member is None:  # an hour with no events has no file
                        member = _Member(zf, member_name(app, path.stem, part))
                    member.add(orjson.dumps(export_row(event, app, canonical)))
                    total += 1
                    if member.count >= ROWS_PER_FILE:
                        member.close()
                        member, part = None, part + 1
            finally:
                if member is not None:
                    member.close()
    return total
