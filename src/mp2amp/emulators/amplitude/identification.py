"""The /identify and /groupidentify requests: checks, then user or group properties set.

Apart from the server so that the routes stay readable; the state it changes (the
identities, the groups, the journal) is the ingestor's, shared with /batch.
"""

from __future__ import annotations

from typing import Any

import orjson

from mp2amp.emulators.amplitude.config import AmplitudeConfig
from mp2amp.emulators.amplitude.forms import group_property_count
from mp2amp.emulators.amplitude.identify import (
    apply_update,
    identification_error,
    identification_problem,
)
from mp2amp.emulators.amplitude.ids import Identities
from mp2amp.emulators.amplitude.ingest import Ingestor, group_key, group_values

MAX_GROUP_IDENTIFIES = 1024
MAX_GROUP_PROPERTIES = 1024


def identify_request(form: dict[str, str], group: bool, config: AmplitudeConfig,
                     groups: dict[str, dict[str, Any]], ids: Identities,
                     ingestor: Ingestor) -> tuple[int, dict[str, Any]]:
    """One identify (``group``: group identify) request's form fields: (status, body)."""
    api_key = form.get("api_key")
    if not api_key:
        return 400, {"code": 400, "error": "Request missing required field",
                     "missing_field": "api_key"}
    if api_key != config.api_key:
        return 400, {"code": 400, "error": f"Invalid API key: {api_key}"}
    try:
        items = orjson.loads(form.get("identification") or "")
    except orjson.JSONDecodeError:
        return 400, {"code": 400, "error": "missing_event",
                     "detail": "identification is missing or is not valid JSON"}
    items = items if isinstance(items, list) else [items]
    # "a missing_event message means the identification parameter is missing or
    # malformed": malformed is anything but an object or an array of objects
    if not all(isinstance(item, dict) for item in items):
        return 400, {"code": 400, "error": "missing_event",
                     "detail": "identification must be a JSON object or an array of objects"}
    # /groupidentify: "maximum number of group identifies per request is 1024",
    # "maximum number of group properties per request is 1024"; status codes 200 and 400
    if group and len(items) > MAX_GROUP_IDENTIFIES:
        return 400, {"code": 400, "error": f"Too many group identifies: at most "
                     f"{MAX_GROUP_IDENTIFIES} per request, got {len(items)}"}
    if group and (count := group_property_count(items)) > MAX_GROUP_PROPERTIES:
        return 400, {"code": 400, "error": f"Too many group properties: at most "
                     f"{MAX_GROUP_PROPERTIES} per request, got {count}"}
    problems = {i: p for i, item in enumerate(items)
                if (p := identification_problem(item, group)) is not None}
    if problems:
        return 400, identification_error(problems)
    for item in items:
        if group:
            for value in group_values(item["group_value"]):
                key = group_key(item["group_type"], value)
                props = groups.setdefault(key, {})
                apply_update(props, item.get("group_properties") or {})
                ids.journal.append(["g", key, dict(props)])
        else:
            aid = ids.assign(item.get("user_id"), item.get("device_id"))
            props = ids.user_props.setdefault(aid, {})
            apply_update(props, item.get("user_properties") or {})
            ids.journal.append(["p", aid, dict(props)])
    ids.dirty = True
    ingestor.flush_id_journal()
    return 200, {"code": 200, "identifications_ingested": len(items),
                 "server_upload_time": int(config.now() * 1000)}

