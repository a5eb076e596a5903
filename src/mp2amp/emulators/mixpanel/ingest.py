"""Ingestion endpoints: ``/track``, ``/engage``, ``/groups`` and ``/import`` (slash or not).

Answers as Mixpanel does: ``1``/``0`` as text, ``{"status", "error"}`` with ``verbose=1``,
JSONP with ``callback``, a 1x1 GIF with ``img=1``; ``/import`` answers
``{"code", "num_records_imported", "status"}`` and, with ``strict=1``, 400 plus
``failed_records``. Accepted records are appended to ``DIR/received/<kind>.jsonl``.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from mp2amp.emulators.mixpanel.auth import AuthFailure, authenticate
from mp2amp.emulators.mixpanel.payload import Payload, PayloadError, read_payload
from mp2amp.emulators.mixpanel.state import STATE_KEY, EmulatorState, json_response
from mp2amp.emulators.mixpanel.validate import (
    Problem,
    check_import,
    check_profile,
    check_track,
    record_token,
)

_GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
RATE_LIMITED = "Project exceeded rate limits. Please retry the request with exponential backoff."
_STATUS_TEXT = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 413: "Request Entity Too Large", 429: "Too Many Requests"}


def _coded(status: int, error: str, **extra: Any) -> dict[str, Any]:
    """The ``/import`` error body: ``{"code", "error", ..., "status"}``."""
    return {"code": status, "error": error, **extra, "status": _STATUS_TEXT.get(status, "Error")}


def cors(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """The JS SDK posts with credentials: echo the Origin, never ``*`` with credentials."""
    origin = request.headers.get("Origin")
    if origin:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
        resp.headers["Vary"] = "Origin"
    else:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    wanted = request.headers.get("Access-Control-Request-Headers")
    if wanted:
        resp.headers["Access-Control-Allow-Headers"] = wanted
    return resp


async def handle_preflight(request: web.Request) -> web.StreamResponse:
    return cors(request, web.Response(status=200))


def _simple_reply(request: web.Request, params: dict[str, str], ok: bool, error: str | None) -> web.Response:
    verbose = params.get("verbose", "0") not in ("0", "", "false")
    body: Any = {"status": 1 if ok else 0, "error": None if ok else error} if verbose else (1 if ok else 0)
    callback = params.get("callback")
    if callback:
        text = f"{callback}({orjson.dumps(body).decode()});"
        return web.Response(text=text, content_type="text/javascript")
    if params.get("img") == "1":
        return web.Response(body=_GIF, content_type="image/gif")
    if verbose:
        return json_response(body)
    return web.Response(text=str(body), content_type="text/plain")


async def handle_ingest(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    state: EmulatorState = request.app[STATE_KEY]
    state.stats[f"{kind}_requests"] += 1
    resp = await (_import(request, state) if kind == "import" else _simple(request, state, kind))
    state.stats[f"{kind}_{resp.status}"] += 1
    return cors(request, resp)


def _meta(request: web.Request, payload: Payload, auth: str | None) -> dict[str, Any]:
    params = payload.params
    return {
        "endpoint": request.path,
        "wire": payload.wire,
        "gzip": payload.gzip,
        "batch": len(payload.records),
        "received_at": request.app[STATE_KEY].config.clock(),
        "ip": request.remote,
        "geolocate": params.get("ip", "0" if request.match_info["kind"] == "import" else "1") == "1",
        "auth": auth,
    }


def _partition(
    state: EmulatorState, kind: str, records: list[Any], params: dict[str, str]
) -> tuple[list[Any], list[tuple[int, Any, tuple[str, str]]], int]:
    """(records to store, failures as (index, record, (field, message)), ignored by token)."""
    now = state.config.clock()
    strict = params.get("strict", "0") == "1"
    good, failed, ignored = [], [], 0
    for i, rec in enumerate(records):
        problem: Problem
        if kind == "import":
            problem = check_import(rec, now, strict)
        elif kind == "track":
            problem = check_track(rec, now, state.config.track_max_age_days)
        else:
            problem = check_profile(rec, group=kind == "groups")
        if problem is not None:
            failed.append((i, rec, problem))
            continue
        token = state.config.token
        if kind != "import" and token is not None and record_token(rec, kind) != token:
            ignored += 1  # Mixpanel silently ignores records for another project's token
            continue
        good.append(rec)
    return good, failed, ignored


def _store(state: EmulatorState, kind: str, good: list[Any], failed: list[tuple[int, Any, tuple[str, str]]], meta: dict[str, Any]) -> None:
    state.store.append(kind, [{"record": rec, **meta} for rec in good])
    state.store.append(
        "rejected",
        [{"record": rec, "kind": kind, "index": i, "field": f, "message": m, **meta} for i, rec, (f, m) in failed],
    )


def _failed_records(failed: list[tuple[int, Any, tuple[str, str]]]) -> list[dict[str, Any]]:
    out = []
    for i, rec, (field_name, message) in failed:
        props = rec.get("properties") if isinstance(rec, dict) else None
        insert_id = props.get("$insert_id") if isinstance(props, dict) else None
        out.append({"index": i, "$insert_id": insert_id, "field": field_name, "message": message})
    return out


def _limits(state: EmulatorState, payload: Payload) -> web.Response | None:
    n = len(payload.records)
    if n > state.config.max_records_per_request:
        return json_response(
            _coded(400, f"request has {n} records; the maximum is {state.config.max_records_per_request} per request"),
            400,
        )
    wait = state.ingest_limiter.try_take(n, payload.size)
    if wait is not None:
        return json_response(_coded(429, RATE_LIMITED), 429, {"Retry-After": str(wait)})
    return None


async def _simple(request: web.Request, state: EmulatorState, kind: str) -> web.Response:
    payload = await read_payload(request, state.config.import_max_bytes)
    if isinstance(payload, PayloadError):
        if payload.status == 413:
            return json_response(_coded(413, payload.message), 413)
        return _simple_reply(request, payload.params or dict(request.query), False, payload.message)
    refused = _limits(state, payload)
    if refused is not None:
        return refused
    good, failed, ignored = _partition(state, kind, payload.records, payload.params)
    _store(state, kind, good, failed, _meta(request, payload, None))
    if failed and payload.params.get("strict") == "1":
        return json_response(
            _coded(400, "some data points in the request failed validation",
                   failed_records=_failed_records(failed), num_records_imported=len(good)),
            400,
        )
    ok = bool(good) or ignored > 0
    # a verbose failure always says why (the SDK raises with the message), even for "[]"
    error = failed[0][2][1] if failed else None if ok else "no records in data"
    return _simple_reply(request, payload.params, ok, error)


async def _import(request: web.Request, state: EmulatorState) -> web.Response:
    who = authenticate(
        state.config,
        state.project_id,
        request.headers.get("Authorization"),
        request.query.get("project_id"),
        allow_token=True,
    )
    if isinstance(who, AuthFailure):
        status = 403 if who.status == 403 else 401
        return json_response(_coded(status, "Invalid credentials" if status == 401 else who.message), status)
    payload = await read_payload(request, state.config.import_max_bytes)
    if isinstance(payload, PayloadError):
        return json_response(_coded(payload.status, payload.message), payload.status)
    refused = _limits(state, payload)
    if refused is not None:
        return refused
    good, failed, _ = _partition(state, "import", payload.records, payload.params)
    _store(state, "import", good, failed, _meta(request, payload, who.kind))
    if payload.params.get("strict", "0") != "1":
        # what the Python SDK's non-strict call expects: {"status": 1, "error": null}
        return json_response({"code": 200, "error": None, "num_records_imported": len(good), "status": 1})
    if failed:
        return json_response(
            _coded(400, "some data points in the request failed validation",
                   failed_records=_failed_records(failed), num_records_imported=len(good)),
            400,
        )
    return json_response({"code": 200, "num_records_imported": len(good), "status": "OK"})
