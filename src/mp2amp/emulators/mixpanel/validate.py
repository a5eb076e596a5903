"""Per-record checks of the ingestion endpoints (reference §3.1-3.4, §11.7).

Each check returns ``None`` for a good record or ``(field, message)``; messages follow
the wording of Mixpanel's documented ``failed_records`` example.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

DISALLOWED_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null",
        "n/a", "na", "undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
    }
)
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")  # used with fullmatch: "$" would admit a final "\n"
MIN_TIME = 31_536_000  # 1971-01-01T00:00:00Z
MAX_PROPERTIES = 255
# /track: "each event < 1 MB uncompressed JSON"; /engage, /groups: "each <= 1 MB" (binary
# units, as in Mixpanel's 2MB = 2097152 bytes)
MAX_RECORD_BYTES = 1024 * 1024
PROFILE_OPS = ("$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete")
# $add is listed by the group batch endpoint although the profiles page says otherwise
GROUP_OPS = ("$set", "$set_once", "$add", "$union", "$remove", "$unset", "$delete")

Problem = tuple[str, str] | None


def _json_size(rec: Any) -> int:
    try:
        return len(orjson.dumps(rec))
    except TypeError:  # not what a JSON body decodes to; other checks refuse it
        return 0


def _seconds(value: Any) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return value / 1000.0 if value > 100_000_000_000 else float(value)


def check_import(rec: Any, now: float, strict: bool) -> Problem:
    """``/import``: strict validates everything; non-strict only what it cannot store without."""
    if not isinstance(rec, dict):
        return "event", "each record must be a JSON object"
    if not isinstance(rec.get("event"), str) or not rec["event"]:
        return "event", "'event' is required and must be a non-empty string"
    props = rec.get("properties")
    if not isinstance(props, dict):
        return "properties", "'properties' is required and must be an object"
    if rec["event"] == "$merge":  # documented without time, distinct_id or $insert_id
        ids = props.get("$distinct_ids")
        if not (isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) and i for i in ids)):
            return "properties.$distinct_ids", "'properties.$distinct_ids' must list exactly 2 distinct_ids"
        return None
    t = _seconds(props.get("time"))
    if t is None:
        return "properties.time", "'properties.time' is invalid: must be specified as seconds since epoch"
    if not strict:
        return None
    if t < MIN_TIME or t > now + 3600:
        return (
            "properties.time",
            "'properties.time' is invalid: must be after 1971-01-01 and at most 1 hour in the future",
        )
    did = props.get("distinct_id")
    if did is None or not isinstance(did, str | int) or isinstance(did, bool):
        return "properties.distinct_id", "'properties.distinct_id' is required and must be a string"
    if str(did).strip().lower() in DISALLOWED_IDS:
        return "properties.distinct_id", f"'properties.distinct_id' is invalid: {did!r} is not allowed"
    iid = props.get("$insert_id")
    if not isinstance(iid, str) or not INSERT_ID.fullmatch(iid):
        return (
            "properties.$insert_id",
            "'properties.$insert_id' is invalid: must be 1-36 characters of letters, digits or '-'",
        )
    if iid.lower() in DISALLOWED_IDS:
        return "properties.$insert_id", f"'properties.$insert_id' is invalid: {iid!r} is not allowed"
    if len(props) > MAX_PROPERTIES:
        return "properties", f"too many properties: {len(props)} (at most {MAX_PROPERTIES})"
    return None


def check_track(rec: Any, now: float, max_age_days: float) -> Problem:
    """``/track``: an event name, properties, no ``$merge``, and only the last 5 days."""
    if not isinstance(rec, dict):
        return "event", "each record must be a JSON object"
    size = _json_size(rec)
    if size >= MAX_RECORD_BYTES:
        return "event", f"the event is {size} bytes of JSON; each event must be under {MAX_RECORD_BYTES} bytes"
    if not isinstance(rec.get("event"), str) or not rec["event"]:
        return "event", "'event' is required and must be a non-empty string"
    props = rec.get("properties")
    if not isinstance(props, dict):
        return "properties", "'properties' is required and must be an object"
    if rec["event"] == "$merge":
        return "event", "$merge events are only accepted by /import"
    if "time" in props:
        t = _seconds(props["time"])
        if t is None:
            return "properties.time", "'properties.time' is invalid: must be specified as seconds since epoch"
        if t < now - max_age_days * 86400:
            return (
                "properties.time",
                f"'properties.time' is older than {max_age_days:g} days: use /import for historical events",
            )
    if len(props) >= MAX_PROPERTIES:  # /track: "< 255 properties"
        return "properties", f"too many properties: {len(props)} (fewer than {MAX_PROPERTIES})"
    for name, value in props.items():
        problem = _nested_problem(value, 2)
        if problem is not None:
            return f"properties.{name}", problem
    return None


MAX_DEPTH = 3  # "nested objects < 255 keys and depth <= 3" (properties is the first level)


def _nested_problem(value: Any, depth: int) -> str | None:
    """Why a property value breaks /track's nesting limits ("arrays < 255 elements",
    "nested objects < 255 keys and depth <= 3"), or None."""
    if isinstance(value, list):
        if len(value) >= MAX_PROPERTIES:
            return f"an array of {len(value)} elements (fewer than {MAX_PROPERTIES})"
        items: Any = value
    elif isinstance(value, dict):
        if depth > MAX_DEPTH:
            return f"objects nested {depth} deep (at most {MAX_DEPTH}, properties included)"
        if len(value) >= MAX_PROPERTIES:
            return f"an object of {len(value)} keys (fewer than {MAX_PROPERTIES})"
        items, depth = value.values(), depth + 1
    else:
        return None
    for item in items:
        problem = _nested_problem(item, depth)
        if problem is not None:
            return problem
    return None


def check_profile(rec: Any, group: bool) -> Problem:
    """``/engage`` (``$distinct_id``) or ``/groups`` (``$group_key`` + ``$group_id``) update."""
    if not isinstance(rec, dict):
        return "$distinct_id", "each record must be a JSON object"
    size = _json_size(rec)
    if size > MAX_RECORD_BYTES:
        return "record", f"the update is {size} bytes of JSON; each update must be at most {MAX_RECORD_BYTES} bytes"
    if group:
        for name in ("$group_key", "$group_id"):
            if rec.get(name) in (None, ""):
                return name, f"'{name}' is required"
        ops: tuple[str, ...] = GROUP_OPS
    else:
        if rec.get("$distinct_id") in (None, ""):
            return "$distinct_id", "'$distinct_id' is required"
        ops = PROFILE_OPS
    present = [op for op in ops if op in rec]
    if not present:
        return "operation", f"one operation is required, one of {', '.join(ops)}"
    for op in present:
        value = rec[op]
        if op == "$unset" and not isinstance(value, list):
            return op, "'$unset' must be a list of property names"
        if op not in ("$unset", "$delete") and not isinstance(value, dict):
            return op, f"'{op}' must be an object"
        if op == "$add" and not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
        ):
            return op, "'$add' values must be numbers"
    return None


def record_token(rec: Any, kind: str) -> Any:
    if not isinstance(rec, dict):
        return None
    if kind in ("track", "import"):
        props = rec.get("properties")
        return props.get("token") if isinstance(props, dict) else None
    return rec.get("$token")
