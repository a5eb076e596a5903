"""Mixpanel Data Pipelines exports on object storage (reference mixpanel-api.md §6).

Two layouts exist:

* JSON pipelines: ``<BUCKET>/<PROJECT_ID>/mp_master_event/<YYYY>/<MM>/<DD>/<part files>``
  next to ``mp_people_data/`` and ``mp_identity_mappings_data/``. Rows are
  ``{event_name, time, distinct_id, device_id, user_id, insert_id, properties}``.
* Legacy raw pipelines: ``<PREFIX>/<PROJECT_ID>/<YYYY>/<MM>/<DD>/<HH or full_day>/`` with
  ``*export.json.gz`` files in Raw Export format and an empty ``complete`` marker.

Given a directory, the reader keeps its event files: profiles and identity mappings
(``mp_people_data``, ``mp_identity_mappings_data``) and ``schema/`` name maps are not
events (named in ``[source] files`` themselves, they are refused), ``complete`` markers
are skipped; every other data file is read, also beside a pipeline tree (a backfill, an
older pipeline's slices). Inside ``mp_master_event`` every file but markers and hidden
ones is a part file whatever its name (``part-0``, ``.c000``, ``.json.gzip``): the JSON
pipelines' naming is not documented, and gzip is told by content. Pipeline rows are
rewritten to the Raw Export shape ``{"event", "properties"}`` that the rest of mp2amp
reads; the records of a legacy raw pipeline's files are Raw Export already, and are marked
as UTC as such rows are (both pipelines write UTC, also for projects created before 2023).
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from mp2amp.errors import InputError
from mp2amp.extract.globparts import names_at, pattern_parts_at
from mp2amp.models import UTC_TIME_MARK

EVENTS_DIR = "mp_master_event"
NOT_EVENT_DIRS = frozenset({"mp_people_data", "mp_identity_mappings_data", "schema"})
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz", ".gz")
MARKER_NAMES = frozenset({"complete", "_SUCCESS"})
_NOT_EVENTS = {"mp_people_data": "profiles, not events",
               "mp_identity_mappings_data": "identity mappings, not events (give them as "
                                            "[source] identity_table)",
               "schema": "name maps, not events"}
# <PROJECT_ID>/<YYYY>/<MM>/<DD>/<HH or full_day>: a legacy raw pipeline's slice folder
_LEGACY_SLICE = re.compile(
    r"\d+/(?:19|20)\d\d/(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/"
    r"(?:[01]?\d|2[0-3]|full_day)", re.ASCII)
# epoch seconds or milliseconds as text (BigQuery's JSON writes INT64 so)
_NUMBER_TEXT = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)


def is_event_file(relative: str, in_events_dir: bool = False) -> bool:
    """Whether a file found below a given directory holds events (path uses '/');
    ``in_events_dir``: that directory itself lies inside an ``mp_master_event`` tree."""
    parts = [p for p in relative.split("/") if p]
    if not parts:
        return False
    name = parts[-1]
    if name.startswith((".", "_")) or name in MARKER_NAMES:
        return False
    if any(p in NOT_EVENT_DIRS or p.startswith((".", "_")) for p in parts[:-1]):
        return False  # hidden or "_" folders: unfinished writes (Spark's _temporary)
    # any case (B.JSONL, x.jsonl.GZ); inside mp_master_event any name (part-0, .c000,
    # .json.gzip: the JSON pipelines' naming is not documented; a file that is not JSON
    # stops the run when sniffed, rather than being left out without a word)
    return name.lower().endswith(DATA_SUFFIXES) or in_events_dir or EVENTS_DIR in parts[:-1]


def select_event_files(relatives: list[str], root: str = "",
                       really_in_events: Callable[[str], bool] | None = None) -> list[str]:
    """Event files of a directory listing, in natural (day) order.

    ``root`` is the directory's own path or key ('/'-separated): given a folder inside an
    ``mp_master_event`` tree (a year, a day), its part files of any name are events too.
    ``really_in_events``: whether a folder of the listing (relative) lies inside such a
    tree where it really is (a local folder reached through a link: ``events ->
    bucket/77/mp_master_event``); asked only about folders holding files of other names.
    """
    in_events = EVENTS_DIR in root.split("/")

    def wanted(relative: str) -> bool:
        if is_event_file(relative, in_events):
            return True
        return (really_in_events is not None and is_event_file(relative, True)
                and really_in_events(relative.rpartition("/")[0]))

    return sorted(filter(wanted, relatives), key=natural_key)


def select_table_files(relatives: list[str]) -> list[str]:
    """Every data file of a table's folder (identity mappings: part files of any name),
    markers and hidden files left out, and files in hidden or ``_`` folders (Spark's
    ``_temporary/``: unfinished writes), in natural order."""
    def wanted(relative: str) -> bool:
        *folders, name = relative.split("/")
        return bool(name) and not name.startswith((".", "_")) and name not in MARKER_NAMES \
            and not any(f.startswith((".", "_")) for f in folders)

    return sorted((r for r in relatives if wanted(r)), key=natural_key)


def glob_left_out(relative: str, every_file: bool, pattern: Sequence[str] = (),
                  folder: bool = False) -> str | None:
    """Why a glob's match (its path below the pattern's literal part: a file or, with
    ``folder``, a folder read whole) is not an input by the rules a folder's listing
    follows, or ``None`` when it is: a marker, a "_" name or in a "_" folder, for events
    another table's folder or in one. ``pattern``: the pattern's parts from its first
    wildcard on. A part of it starting with '_' names such names at its own position (as
    one starting with '.' names hidden ones: the glob's own rule), but a "_" folder it
    matches is not read whole (``out/_*`` takes ``_part-0.json``, not Spark's
    ``_temporary/``); extensionless names stay: a glob naming them (``part-*``) means
    them."""
    parts = [p for p in relative.split("/") if p]
    if parts and parts[-1] in MARKER_NAMES:
        return "a marker file, which holds no records"
    named_by = pattern_parts_at(parts, pattern)
    for part, by in zip(parts, named_by, strict=True):
        if part.startswith("_") and not names_at(part, by, "_"):
            return ("a '_' name or in a '_' folder: unfinished writes (Spark's _temporary) "
                    "are left out unless a pattern part starting with '_' names them")
        if not every_file and part in NOT_EVENT_DIRS:
            return f"in {part}/, which holds {_NOT_EVENTS[part]}"
    if folder and parts and parts[-1].startswith("_") and glob.has_magic(named_by[-1] or "*"):
        return ("a '_' folder (unfinished writes: Spark's _temporary), read only when named "
                "in full or by a pattern for files in it")
    return None


def named_left_out(path: str, folder: bool) -> str | None:
    """Why a path named as events (a folder or file, or a glob's literal part: a folder)
    is another table's, or ``None``: inside ``mp_people_data`` or
    ``mp_identity_mappings_data`` (or that folder itself), or a ``schema`` folder or a file
    right in one (the schematized pipelines' name maps; a ``schema`` folder higher up is
    where the user keeps the inputs). Read as events, every row was a rejection."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    folders = parts if folder else parts[:-1]
    found = next((p for p in folders if p in NOT_EVENT_DIRS and p != "schema"), None)
    if found is None and folders and folders[-1] == "schema":
        found = "schema"
    return None if found is None else f"in {found}/, which holds {_NOT_EVENTS[found]}"


def refuse_other_table(path: str, folder: bool, shown: str) -> None:
    """Another table's folder, or a file or glob in it, named as events stops the run, as
    a glob matching only such folders does (``glob_left_out``): read, every row of it was
    a rejection and, for identity mappings, the mappings were never applied."""
    why = named_left_out(path, folder)
    if why is not None:
        raise InputError(f"{shown} is left out of the inputs by rule ({why}); remove it "
                         "from [source] files, and run again")


def literal_part(pattern: str) -> str:
    """The folder a glob pattern names before its first wildcard ('/' or os.sep)."""
    parts = pattern.replace(os.sep, "/").split("/")
    return "/".join(parts[:next(i for i, part in enumerate(parts) if glob.has_magic(part))])


def legacy_slice(path: str) -> str | None:
    """The slice folder of a file in a legacy raw pipeline's layout
    (``<PROJECT_ID>/<YYYY>/<MM>/<DD>/<HH or full_day>/<file>``), else ``None``."""
    parts = path.split("/")
    if len(parts) < 7 or _LEGACY_SLICE.fullmatch("/".join(parts[-6:-1])) is None:
        return None
    return "/".join(parts[:-1])


def unfinished_slices(event_files: list[str], listing: list[str],
                      layout: Callable[[str], str] = str) -> list[str]:
    """The legacy slices holding some of ``event_files`` but no ``complete`` marker in
    ``listing`` (every file of the folder) while another slice has one: Mixpanel writes the
    marker when a slice is finished, so such a slice may still be being written. (No slice
    with a marker: a copy made without them, nothing to tell.) ``layout`` gives the path
    a file's layout is judged on (a local file's real folder); slices are named as the
    files are."""
    finished = {legacy_slice(layout(p)) for p in listing if p.rsplit("/", 1)[-1] == "complete"}
    finished.discard(None)
    if not finished:
        return []
    unfinished = set()
    for path in event_files:
        real = legacy_slice(layout(path))
        if real is not None and real not in finished:
            unfinished.add(path.rpartition("/")[0])
    return sorted(unfinished, key=natural_key)


def natural_key(path: str) -> list[Any]:
    """Sort '2024/1/9' before '2024/1/10' (pipelines may not zero-pad)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok)
            for tok in re.split(r"(\d+)", path) if tok]


def is_pipeline_row(record: dict[str, Any]) -> bool:
    return "event_name" in record and "event" not in record


def _by_magnitude(value: float) -> float:
    # Milliseconds (or finer) are recognisable by magnitude: seconds reach 1e11 in 5138.
    return value / 1000 if value > 1e11 else value


def _epoch_seconds(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _by_magnitude(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER_TEXT.fullmatch(text):  # read as the same number would be
            return _by_magnitude(int(text) if text.lstrip("+-").isdigit() else float(text))
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" UTC", ""))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # pipelines write UTC
        ts = parsed.timestamp()
        return int(ts) if ts == int(ts) else ts
    return None


_NOT_JSON = object()


def _parse_text(text: str) -> Any:
    """JSON text as ``lines.parse_json`` reads an event line: orjson, then the standard
    library for what only it reads (a lone surrogate, an emoji cut in half: sent as
    U+FFFD as in an export line; NaN). Text, not bytes: a raw lone surrogate cannot be
    encoded, and that parser's failure mark is its own."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


def to_export_shape(row: dict[str, Any]) -> dict[str, Any] | str:
    """A pipeline row as a Raw Export record, or a message saying what is wrong."""
    props: Any = row.get("properties")
    if isinstance(props, str):
        props = _parse_text(props)
        if props is _NOT_JSON:
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
