"""Fixtures for the extract tests: a local S3 server (moto, real sockets) and helpers."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest


class ExportServer:
    """A small Raw Export server that follows the reference (mixpanel-api.md §1), for the
    client's own tests: days of JSON lines, a fault script per day, a request log.

    ``script[day]`` lists what the next requests for that day get, in order: ``"429"``,
    ``"500"``, ``"drop"`` (connection cut mid-body), ``"terminated"`` (a ``terminated
    early`` line after two records) or ``"ok"``; when the list is used up, ``"ok"``.
    """

    def __init__(self, days: dict[str, list[bytes]], *, account: str = "user:pw",
                 secret: str = "sekret", project_id: int = 42) -> None:
        self.days = days
        self.account = account
        self.secret = secret
        self.project_id = project_id
        self.script: dict[str, list[str]] = {}
        self.split: set[str] = set()  # days whose second record is split across two lines
        self.retry_after = "0.2"
        self.log: list[dict[str, Any]] = []
        self.base_url = ""
        self.chunk_delay = 0.0  # seconds between body chunks, so requests overlap
        self.in_flight = 0
        self.max_in_flight = 0

    def _authorized(self, request: Any) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        user_pass = base64.b64decode(header[6:]).decode()
        if user_pass == self.account:
            return request.query.get("project_id") == str(self.project_id)
        return user_pass == f"{self.secret}:"

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        day = request.query.get("from_date", "")
        self.log.append({"t": time.monotonic(), "day": day, "query": dict(request.query),
                         "gzip": "gzip" in request.headers.get("Accept-Encoding", ""),
                         "host": request.host})
        if not self._authorized(request):
            return web.Response(status=400, text="Unable to authenticate request")
        if day != request.query.get("to_date"):
            return web.Response(status=400, text="one day per request in these tests")
        steps = self.script.get(day, [])
        step = steps.pop(0) if steps else "ok"
        if step == "429":
            return web.Response(status=429, text="Query rate limit exceeded",
                                headers={"Retry-After": self.retry_after})
        if step == "500":
            return web.Response(status=500, text="internal error")
        lines = list(self.days.get(day, []))
        if day in self.split and len(lines) > 1:
            cut = len(lines[1]) // 2
            lines[1:2] = [lines[1][:cut], lines[1][cut:]]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._stream(request, step, lines)
        finally:
            self.in_flight -= 1

    async def _stream(self, request: Any, step: str, lines: list[bytes]) -> Any:
        from aiohttp import web

        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            resp.enable_compression(web.ContentCoding.gzip)
        await resp.prepare(request)
        body = b"".join(line + b"\n" for line in lines[:2] if step != "ok") if step != "ok" else \
            b"".join(line + b"\n" for line in lines)
        for i in range(0, len(body), 7):  # chunks that ignore line boundaries
            await resp.write(body[i:i + 7])
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        if step == "terminated":
            await resp.write(b"terminated early\n")
        elif step == "drop":
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        async with serve_export(self.handle) as base_url:
            self.base_url = base_url
            yield base_url


@asynccontextmanager
async def serve_export(handle: Any) -> AsyncIterator[str]:
    """``handle`` serving GET /api/2.0/export on a free loopback port; yields its base URL."""
    from shared_kit import serve_routes

    async with serve_routes({("GET", "/api/2.0/export"): handle}) as url:
        yield url


@pytest.fixture
def export_server() -> ExportServer:
    """An ExportServer; start it inside the test's loop with ``async with srv.running()``."""
    return ExportServer({})
