"""The emulator's mutable state, shared by the route handlers of one server."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from mp2amp.emulators.mixpanel.config import MixpanelConfig, ProjectInfo
from mp2amp.emulators.mixpanel.faults import FaultInjector
from mp2amp.emulators.mixpanel.ratelimit import RateLimiter, VolumeLimiter
from mp2amp.emulators.mixpanel.store import ReceivedStore


@dataclass
class EmulatorState:
    config: MixpanelConfig
    project: ProjectInfo
    export_limiter: RateLimiter
    query_limiter: RateLimiter
    lexicon_limiter: RateLimiter
    ingest_limiter: VolumeLimiter
    faults: FaultInjector
    store: ReceivedStore
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def project_id(self) -> int:
        return self.config.project_id if self.config.project_id is not None else self.project.project_id

    @property
    def timezone(self) -> str:
        """The timezone of export's ``from_date``/``to_date``: the project's for a project
        created before 2023 (``legacy_time``), UTC for a newer one (reference 1.6);
        ``--timezone`` overrides."""
        if self.config.timezone:
            return self.config.timezone
        return self.project.timezone if self.project.legacy_time else "UTC"

    @property
    def where_timezone(self) -> str:
        """The timezone a ``where`` expression's datetime strings are read in: the
        project's (or ``--timezone``)."""
        return self.config.timezone or self.project.timezone


STATE_KEY = web.AppKey("mixpanel_state", EmulatorState)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def query_error(request: web.Request, status: int, message: str, **headers: str) -> web.Response:
    """Error body of the query endpoints (export, engage): ``{"error", "request"}``."""
    return json_response({"error": message, "request": request.path_qs}, status, headers or None)
