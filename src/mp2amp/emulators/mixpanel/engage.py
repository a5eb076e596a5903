"""``/api/2.0/engage`` and ``/api/query/engage`` (GET + query string, POST + form body).

Profiles are streamed from ``profiles/users.jsonl.gz`` (or ``profiles/groups/<key>.jsonl.gz``
with ``data_group_id``) on every page, so memory stays flat: page 0 scans the whole file
to count ``total``; page N skips N*page_size matches and stops once its page is full.
``session_id`` ties later pages to the query of page 0; ``total`` is sent on page 0
only (what Airbyte relies on; later pages omit it).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import secrets
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from mp2amp.emulators.mixpanel.auth import AuthFailure, authenticate
from mp2amp.emulators.mixpanel.ratelimit import Refusal
from mp2amp.emulators.mixpanel.state import STATE_KEY, EmulatorState, json_response, query_error
from mp2amp.emulators.mixpanel.where import WhereError, compile_where

_UNSUPPORTED = ("behaviors", "filter_by_cohort", "as_of_timestamp", "include_all_users")
_SESSIONS_KEPT = 1000
_UTC = ZoneInfo("UTC")


def data_group_id(group_key: str) -> str:
    """A stable numeric id for a group key (Mixpanel shows one per key in Project Settings)."""
    digest = hashlib.sha256(group_key.encode()).digest()
    return str(-(int.from_bytes(digest[:8], "big") >> 1))


@dataclass(frozen=True)
class EngageQuery:
    path: Path
    is_group: bool
    where_text: str
    distinct_ids: frozenset[str] | None
    output_properties: tuple[str, ...] | None

    def key(self) -> tuple[Any, ...]:
        return (str(self.path), self.where_text, self.distinct_ids, self.output_properties)


class Sessions:
    """session_id -> the query of its page 0 (bounded, oldest forgotten first)."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    def open(self, key: tuple[Any, ...]) -> str:
        sid = f"{secrets.randbits(40)}-{secrets.token_hex(3).upper()}"
        self._by_id[sid] = key
        while len(self._by_id) > _SESSIONS_KEPT:
            self._by_id.popitem(last=False)
        return sid

    def get(self, sid: str) -> tuple[Any, ...] | None:
        return self._by_id.get(sid)


SESSIONS_KEY = web.AppKey("mixpanel_engage_sessions", Sessions)


def _json_list(raw: str, name: str) -> list[str] | str:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f'{name} must be a JSON array of strings, e.g. ["a","b"]'
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        return f'{name} must be a JSON array of strings, e.g. ["a","b"]'
    return [str(v) for v in value]


def parse_engage(params: Any, state: EmulatorState) -> EngageQuery | str:
    for name in _UNSUPPORTED:
        if params.get(name) not in (None, ""):
            return f"{name} is not supported by this emulator (cohorts and behaviors are not modelled)"
    profiles = state.config.data_dir / "profiles"
    path = profiles / "users.jsonl.gz"
    is_group = False
    group = params.get("data_group_id")
    if group not in (None, ""):
        keys = {data_group_id(k): k for k in state.project.group_keys}
        key = keys.get(group, group if group in state.project.group_keys else None)
        if key is None:
            return f"data_group_id {group!r} is not a group key of this project"
        path, is_group = profiles / "groups" / f"{key}.jsonl.gz", True
    ids: list[str] | None = None
    if params.get("distinct_ids") not in (None, ""):
        parsed = _json_list(params["distinct_ids"], "distinct_ids")
        if isinstance(parsed, str):
            return parsed
        ids = parsed
    if params.get("distinct_id") not in (None, ""):
        ids = [*(ids or []), params["distinct_id"]]
    out: list[str] | None = None
    if params.get("output_properties") not in (None, ""):
        parsed = _json_list(params["output_properties"], "output_properties")
        if isinstance(parsed, str):
            return parsed
        out = parsed
    return EngageQuery(
        path,
        is_group,
        params.get("where") or "",
        frozenset(ids) if ids is not None else None,
        tuple(out) if out is not None else None,
    )


def _shape(rec: dict[str, Any], q: EngageQuery) -> dict[str, Any]:
    props = rec.get("$properties")
    if not isinstance(props, dict):
        props = {}
    if q.output_properties is not None:
        props = {k: props[k] for k in q.output_properties if k in props}
    if q.is_group:  # group rows keep their key/id and gain $distinct_id = $group_id
        shaped = {"$distinct_id": rec.get("$distinct_id", rec.get("$group_id"))}
        shaped.update({k: v for k, v in rec.items() if k not in ("$distinct_id", "$properties")})
        shaped["$properties"] = props
        return shaped
    return {"$distinct_id": rec.get("$distinct_id"), "$properties": props}


def scan_page(
    q: EngageQuery, where: Callable[[Callable[[str], Any]], bool] | None, page: int, size: int, count_all: bool
) -> tuple[list[dict[str, Any]], int]:
    """The page's rows and the number of matches seen (all of them when ``count_all``)."""
    if not q.path.exists():
        return [], 0
    skip, rows, matched = page * size, [], 0
    with gzip.open(q.path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            if q.distinct_ids is not None:
                ident = rec.get("$distinct_id", rec.get("$group_id"))
                if str(ident) not in q.distinct_ids:
                    continue
            if where is not None:
                props = rec.get("$properties")
                props = props if isinstance(props, dict) else {}
                if not where(props.get):
                    continue
            matched += 1
            if skip < matched <= skip + size:
                rows.append(_shape(rec, q))
            elif matched > skip + size and not count_all:
                break
    return rows, matched


async def handle_engage(request: web.Request) -> web.Response:
    state: EmulatorState = request.app[STATE_KEY]
    params: dict[str, str] = dict(request.query)
    if request.method == "POST":
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    state.stats["engage_requests"] += 1
    who = authenticate(
        state.config, state.project_id, request.headers.get("Authorization"), params.get("project_id")
    )
    if isinstance(who, AuthFailure):
        return query_error(request, who.status, who.message)
    q = parse_engage(params, state)
    if isinstance(q, str):
        return query_error(request, 400, q)
    where = None
    if q.where_text:
        try:
            # the expression's own date strings in the project's zone; profile date
            # properties are UTC (reference 5.5 and 3.6), whatever that zone
            where = compile_where(q.where_text, ZoneInfo(state.where_timezone), _UTC)
        except WhereError as exc:
            return query_error(request, 400, f"invalid where expression: {exc}")
    try:
        page = int(params.get("page") or 0)
    except ValueError:
        page = -1
    if page < 0:
        return query_error(request, 400, f"page must be a non-negative integer, got {params.get('page')!r}")
    sessions = request.app[SESSIONS_KEY]
    sid = params.get("session_id") or ""
    if page > 0:
        if not sid:
            return query_error(request, 400, "session_id is required when page is above 0")
        if sessions.get(sid) is None:
            return query_error(request, 400, f"session_id {sid!r} is unknown or expired; start again at page 0")
        if sessions.get(sid) != q.key():
            return query_error(request, 400, "session_id belongs to a different query; repeat the same parameters")
    slot = state.query_limiter.try_acquire()
    if isinstance(slot, Refusal):
        return query_error(
            request, 429, f"Query rate limit exceeded: this project allows {slot.reason}",
            **{"Retry-After": str(slot.retry_after)},
        )
    try:
        size = state.config.engage_page_size
        rows, total = await asyncio.get_running_loop().run_in_executor(
            None, scan_page, q, where, page, size, page == 0
        )
    except (OSError, EOFError, zlib.error) as exc:
        return query_error(request, 500, f"{q.path.parent.name}/{q.path.name} is unreadable: {exc}")
    except WhereError as exc:  # evaluation overflowed: the expression's fault, not the server's
        return query_error(request, 400, f"invalid where expression: {exc}")
    finally:
        slot.release()
    if page == 0:
        sid = sessions.open(q.key())
    body: dict[str, Any] = {"page": page, "page_size": size, "session_id": sid, "status": "ok"}
    if page == 0:
        body["total"] = total
    body["results"] = rows
    return json_response(body)
