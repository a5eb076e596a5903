"""``GET /api/app/projects/{id}/schemas[/{entityType}[/{name}]]`` from ``DIR/schema.json``.

Service-account auth only (the Lexicon Schemas API does not take the API secret);
errors use the app API shape ``{"error", "status": "error"}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from mp2amp.emulators.mixpanel.auth import AuthFailure, authenticate
from mp2amp.emulators.mixpanel.ratelimit import Refusal
from mp2amp.emulators.mixpanel.state import STATE_KEY, EmulatorState, json_response

ENTITY_TYPES = ("event", "profile")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return json_response({"error": message, "status": "error"}, status, headers or None)


def _entries(state: EmulatorState) -> list[dict[str, Any]] | str:
    path = state.config.data_dir / "schema.json"
    if not path.exists():
        return []
    try:
        body = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return f"{path}: not valid JSON ({exc})"
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return f"{path}: expected {{\"status\": \"ok\", \"results\": [...]}}"
    return [e for e in results if isinstance(e, dict)]


async def handle_schemas(request: web.Request) -> web.Response:
    state: EmulatorState = request.app[STATE_KEY]
    state.stats["schema_requests"] += 1
    who = authenticate(
        state.config,
        state.project_id,
        request.headers.get("Authorization"),
        request.match_info["project_id"],
        allow_secret=False,
    )
    if isinstance(who, AuthFailure):
        return _error(who.status if who.status != 400 else 401, who.message)
    slot = state.lexicon_limiter.try_acquire()
    if isinstance(slot, Refusal):
        return _error(429, f"rate limit exceeded: {slot.reason}", **{"Retry-After": str(slot.retry_after)})
    slot.release()
    entity_type = request.match_info.get("entity_type")
    name = request.match_info.get("name") or request.query.get("entity_name")
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        return _error(400, f"entityType must be one of {list(ENTITY_TYPES)}, got {entity_type!r}")
    entries = _entries(state)
    if isinstance(entries, str):
        return _error(500, entries)
    if entity_type is not None:
        entries = [e for e in entries if e.get("entityType") == entity_type]
    if name is not None:
        entries = [e for e in entries if e.get("name") == name]
        if request.match_info.get("name") is not None:
            if not entries:
                return _error(404, f"no {entity_type} schema named {name!r}")
            return json_response({"results": entries[0], "status": "ok"})
    return json_response({"results": entries, "status": "ok"})
