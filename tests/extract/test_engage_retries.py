"""The Engage pager against a scripted local server: throttling is waited out without using
up ``max_attempts``, real failures still stop it, endless throttling stops it clearly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.ratelimit import RetriesSpent
from shared_kit import serve_routes

PROFILES = [{"$distinct_id": f"u{i}", "$properties": {"n": i}} for i in range(5)]


async def run(script: list[str], **settings: Any) -> tuple[list[Any], list[str]]:
    """Page through PROFILES (2 a page); the server answers each request with the next
    step of ``script`` ("429", "500"), then with the page. Returns records and steps."""
    answered: list[str] = []

    async def engage(request: web.Request) -> web.Response:
        step = script.pop(0) if script else "ok"
        answered.append(step)
        if step == "429":
            return web.Response(status=429, text="Query rate limit exceeded",
                                headers={"Retry-After": "0.01"})
        if step == "500":
            return web.Response(status=500, text="internal error")
        if step == "400-rate":  # the limit reported in the body of a 400 (Airbyte, §1.7)
            return web.json_response({"error": "Query rate limit exceeded: 60 queries/hour"},
                                     status=400, headers={"Retry-After": "0.01"})
        form = await request.post()
        page = int(str(form.get("page", "0")))
        return web.json_response({"results": PROFILES[page * 2:page * 2 + 2], "page": page,
                                  "page_size": 2, "session_id": "s1", "total": len(PROFILES),
                                  "status": "ok"})

    async with serve_routes({("POST", "/api/query/engage"): engage}) as base:
        opts: dict[str, Any] = {"project_id": 42, "api_host": base,
                                "service_account": "svc:pw", "backoff_base": 0.01,
                                "query_per_hour": 1000, **settings}
        pager = EngagePager(MixpanelSettings(**opts))
        return [r.record async for r in pager.records()], answered


def test_a_rate_limit_in_a_400_body_is_waited_out_as_the_export_does() -> None:
    records, answered = asyncio.run(run(["400-rate"] * 3, max_attempts=2))
    assert records == PROFILES and answered[:4] == ["400-rate"] * 3 + ["ok"]


def test_throttling_does_not_use_up_the_attempts() -> None:
    records, answered = asyncio.run(run(["429"] * 4 + ["500"], max_attempts=2))
    assert records == PROFILES
    assert answered[:5] == ["429", "429", "429", "429", "500"]


def test_real_failures_still_stop_at_max_attempts() -> None:
    with pytest.raises(RetriesSpent, match=r"engage page 0 failed 2 times"):
        asyncio.run(run(["500", "500", "500"], max_attempts=2))


def test_endless_throttling_stops_with_the_rate_limit_error() -> None:
    with pytest.raises(RetriesSpent, match=r"engage page 0 was throttled 3 times"):
        asyncio.run(run(["429"] * 5, max_rate_limited=3))
