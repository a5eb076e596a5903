"""Session 18 fixes of the Mixpanel read clients beside the pinned review tests: retry
warnings name the window once, and both clients go through HTTP(S)_PROXY."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.export import WindowFile, fetch_windows
from mp2amp.extract.ratelimit import RateLimiter
from shared_kit import free_port, serve_routes

DAY = date(2024, 1, 1)
RECORD = {"event": "Viewed", "properties": {"time": 1704067200, "$insert_id": "a",
                                            "distinct_id": "u"}}


def settings(base: str, **kw: Any) -> MixpanelSettings:
    return MixpanelSettings(project_id=42, api_host=base, service_account="svc:pw",
                            per_hour=1000, per_second=1000, backoff_base=0.01, **kw)


def fetch(base: str, workdir: Path, **kw: Any) -> list[WindowFile]:
    async def main() -> list[WindowFile]:
        limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
        return [w async for w in fetch_windows(settings(base, **kw), [DAY], workdir,
                                               limiter=limiter)]
    return asyncio.run(asyncio.wait_for(main(), 30))


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("status", [429, 500])
def test_retry_warning_names_the_day_once(tmp_path: Path, status: int,
                                          caplog: pytest.LogCaptureFixture) -> None:
    answers = [status]

    async def export(request: web.Request) -> web.Response:
        if answers:
            return web.Response(status=answers.pop(), text="busy")
        return web.Response(text=json.dumps(RECORD) + "\n")

    async def main() -> list[WindowFile]:
        async with serve_routes({("GET", "/api/2.0/export"): export}) as base:
            limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
            return [w async for w in fetch_windows(settings(base), [DAY], tmp_path,
                                                   limiter=limiter)]

    with caplog.at_level(logging.WARNING, logger="mp2amp.extract"):
        (window,) = asyncio.run(asyncio.wait_for(main(), 30))
    assert window.record_count == 1
    (said,) = retry_warnings(caplog)
    assert said.count("2024-01-01") == 1, said
    assert str(status) in said and "request 2 in" in said


def test_connection_refused_warning_names_the_day_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # nothing listens on the port: every attempt is refused until the run stops
    with caplog.at_level(logging.WARNING, logger="mp2amp.extract"), \
            pytest.raises(Exception, match="never since this run started"):
        fetch(f"http://127.0.0.1:{free_port()}", tmp_path)
    said = retry_warnings(caplog)
    assert len(said) == 4
    assert all(s.startswith("export of 2024-01-01: ") and s.count("2024-01-01") == 1
               for s in said), said


class Proxy:
    """A forward proxy stand-in: answers requests sent to it for any host (absolute-form
    request targets), recording the hosts it was asked for."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def export(self, request: web.Request) -> web.Response:
        self.hosts.append(request.host)
        return web.Response(text=json.dumps(RECORD) + "\n")

    async def engage(self, request: web.Request) -> web.Response:
        self.hosts.append(request.host)
        return web.json_response({"results": [{"$distinct_id": "u", "$properties": {}}],
                                  "page": 0, "page_size": 1000, "session_id": "s",
                                  "total": 1, "status": "ok"})


def _via_proxy(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY",
                 "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)


# A host that exists nowhere: reached only through the proxy.
UNRESOLVABLE = "http://mixpanel-behind-a-proxy.invalid"


def test_export_goes_through_the_environments_proxy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Proxy()

    async def main() -> list[WindowFile]:
        async with serve_routes({("GET", "/api/2.0/export"): proxy.export}) as base:
            _via_proxy(monkeypatch, base)
            limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
            return [w async for w in fetch_windows(settings(UNRESOLVABLE, max_attempts=1),
                                                   [DAY], tmp_path, limiter=limiter)]

    (window,) = asyncio.run(asyncio.wait_for(main(), 30))
    assert window.record_count == 1
    assert proxy.hosts == ["mixpanel-behind-a-proxy.invalid"]


def test_engage_goes_through_the_environments_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Proxy()

    async def main() -> list[Any]:
        async with serve_routes({("POST", "/api/query/engage"): proxy.engage}) as base:
            _via_proxy(monkeypatch, base)
            pager = EngagePager(settings(UNRESOLVABLE, max_attempts=1))
            return [r async for r in pager.records()]

    records = asyncio.run(asyncio.wait_for(main(), 30))
    assert [r.record["$distinct_id"] for r in records] == ["u"]
    assert proxy.hosts == ["mixpanel-behind-a-proxy.invalid"]
