"""The Mixpanel emulator: one aiohttp app with every route, and its in-process handle."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import orjson
from aiohttp import web

from mp2amp.emulators.mixpanel.config import MixpanelConfig, load_project
from mp2amp.emulators.mixpanel.engage import SESSIONS_KEY, Sessions, data_group_id, handle_engage
from mp2amp.emulators.mixpanel.export import handle_export
from mp2amp.emulators.mixpanel.faults import FaultError, FaultInjector
from mp2amp.emulators.mixpanel.ingest import handle_ingest, handle_preflight
from mp2amp.emulators.mixpanel.ratelimit import RateLimiter, VolumeLimiter
from mp2amp.emulators.mixpanel.schemas import handle_schemas
from mp2amp.emulators.mixpanel.state import STATE_KEY, EmulatorState, json_response
from mp2amp.emulators.mixpanel.store import KINDS, ReceivedStore, iter_received
from mp2amp.emulators.runner import AppServer, run_in_thread
from mp2amp.errors import InputError


def _export_windows(cfg: MixpanelConfig) -> list[tuple[int | None, float, str]]:
    return [(cfg.export_per_second, 1.0, "second"), (cfg.export_per_hour, 3600.0, "hour")]


def build_state(config: MixpanelConfig) -> EmulatorState:
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise InputError(f"{config.data_dir} is not a directory: point --data at a generated project")
    project = load_project(config.data_dir)
    try:  # what the ingestion endpoints write: found unusable now, not at the first /track
        config.received_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{config.received_path}: cannot keep received ingestion data there "
                         f"({exc.strerror or exc}); point --data at a writable project "
                         "folder") from None
    clock = config.clock
    return EmulatorState(
        config=config,
        project=project,
        export_limiter=RateLimiter(_export_windows(config), config.export_concurrent, clock),
        query_limiter=RateLimiter([(config.query_per_hour, 3600.0, "hour")], config.query_concurrent, clock),
        lexicon_limiter=RateLimiter([(config.lexicon_per_minute, 60.0, "minute")], None, clock),
        ingest_limiter=VolumeLimiter(config.ingest_events_per_minute, clock, config.ingest_bytes_per_minute),
        faults=FaultInjector(config.fail_rate, config.seed, config.fault_kinds, config.fault_after_lines),
        store=ReceivedStore(config.received_path),
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from None


async def faults_get(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].faults.describe())


async def faults_post(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        state.faults.configure(await _json_body(request))
    except FaultError as exc:
        return json_response({"error": str(exc)}, 400)
    return json_response(state.faults.describe())


async def limits_post(request: web.Request) -> web.Response:
    """Change or reset the export / query limits at runtime (null disables one)."""
    state = request.app[STATE_KEY]
    body = await _json_body(request)
    fields = ("export_per_hour", "export_per_second", "export_concurrent", "query_per_hour", "query_concurrent")
    if not isinstance(body, dict) or set(body) - {*fields, "reset"}:
        return json_response({"error": f"expected a JSON object with fields from {[*fields, 'reset']}"}, 400)
    for name in fields:
        if name in body:
            value = body[name]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                return json_response({"error": f"{name} must be a non-negative integer or null"}, 400)
            setattr(state.config, name, value)
    cfg = state.config
    state.export_limiter.configure(_export_windows(cfg), cfg.export_concurrent)
    state.query_limiter.configure([(cfg.query_per_hour, 3600.0, "hour")], cfg.query_concurrent)
    if body.get("reset"):
        state.export_limiter.reset()
        state.query_limiter.reset()
    return json_response({name: getattr(cfg, name) for name in fields})


async def stats_get(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return json_response(
        {
            "requests": dict(state.stats),
            "received": dict(state.store.counts),
            "export_in_flight": state.export_limiter.in_flight,
            "faults_injected": dict(state.faults.injected),
        }
    )


async def info_get(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return json_response(
        {
            "project_id": state.project_id,
            "timezone": state.timezone,
            "project_timezone": state.project.timezone,
            "legacy_time": state.project.legacy_time,
            "data_group_ids": {k: data_group_id(k) for k in state.project.group_keys},
        }
    )


async def received_get(request: web.Request) -> web.StreamResponse:
    """The stored entries of one kind as JSONL (streamed)."""
    state = request.app[STATE_KEY]
    kind = request.match_info["kind"]
    if kind not in KINDS:
        return json_response({"error": f"unknown kind {kind!r}; one of {list(KINDS)}"}, 404)
    resp = web.StreamResponse()
    resp.content_type = "application/x-ndjson"
    with suppress(ConnectionError):  # the client left: no aiohttp traceback
        await resp.prepare(request)
        for entry in iter_received(state.store.root, kind):
            await resp.write(orjson.dumps(entry) + b"\n")
        await resp.write_eof()
    return resp


def build_app(state: EmulatorState) -> web.Application:
    cfg = state.config
    # url-encoding a JSON form (the Python SDK's data=) can almost triple it: the JSON
    # limit is checked once decoded (payload.py)
    app = web.Application(client_max_size=max(cfg.import_max_bytes * 3, 4 * 1024 * 1024))
    app[STATE_KEY] = state
    app[SESSIONS_KEY] = Sessions()
    r = app.router
    for path in ("/api/2.0/export", "/api/2.0/export/"):
        r.add_get(path, handle_export, allow_head=False)
    for path in ("/api/2.0/engage", "/api/2.0/engage/", "/api/query/engage", "/api/query/engage/"):
        r.add_get(path, handle_engage, allow_head=False)
        r.add_post(path, handle_engage)
    for path in (
        "/api/app/projects/{project_id}/schemas",
        "/api/app/projects/{project_id}/schemas/{entity_type}",
        "/api/app/projects/{project_id}/schemas/{entity_type}/{name}",
    ):
        r.add_get(path, handle_schemas, allow_head=False)
    for path in ("/{kind:track|engage|groups|import}", "/{kind:track|engage|groups|import}/"):
        r.add_get(path, handle_ingest, allow_head=False)
        r.add_post(path, handle_ingest)
        r.add_route("OPTIONS", path, handle_preflight)
    r.add_get("/_emulator/faults", faults_get)
    r.add_post("/_emulator/faults", faults_post)
    r.add_post("/_emulator/limits", limits_post)
    r.add_get("/_emulator/stats", stats_get)
    r.add_get("/_emulator/info", info_get)
    r.add_get("/_emulator/received/{kind}", received_get)
    return app


class MixpanelEmulator:
    """A local Mixpanel API (export, engage, lexicon schemas, ingestion) on loopback."""

    def __init__(self, config: MixpanelConfig) -> None:
        self.config = config
        self.state = build_state(config)
        self._server = AppServer(build_app(self.state), config.host, config.port)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self) -> str:
        await self._server.start()
        return self.base_url

    async def stop(self) -> None:
        await self._server.stop()

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve from a thread with its own loop; yields the base URL."""
        with run_in_thread(self.start, self.stop, name="mixpanel-emulator") as url:
            yield url
