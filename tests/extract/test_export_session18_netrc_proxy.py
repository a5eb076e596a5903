"""Session 18, second review: a ~/.netrc entry never replaces or breaks the Mixpanel
credentials (Export and Engage), and a run that never reached Mixpanel names the proxy it
went through; the 1 s waits between refused connections are jittered."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import mp2amp.extract.export as export
from mp2amp.errors import TerminalError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.export import WindowFile, fetch_windows, refused_wait
from mp2amp.extract.ratelimit import RateLimiter
from mp2amp.proxyenv import PROXY_VARIABLES, proxy_for
from shared_kit import free_port, serve_routes

DAY = date(2024, 1, 1)
RECORD = {"event": "Viewed", "properties": {"time": 1704067200, "$insert_id": "a",
                                            "distinct_id": "u"}}
OURS = "Basic " + base64.b64encode(b"svc:pw").decode()


def settings(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01, **kw}
    return MixpanelSettings(**opts)


def fetch(base: str, workdir: Path, **kw: Any) -> list[WindowFile]:
    async def main() -> list[WindowFile]:
        limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
        return [w async for w in fetch_windows(settings(base, **kw), [DAY], workdir,
                                               limiter=limiter)]
    return asyncio.run(asyncio.wait_for(main(), 30))


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["default", "machine 127.0.0.1"])
def netrc(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "netrc"
    path.write_text(f"{request.param} login someone password elsewhere\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))


@pytest.mark.usefixtures("netrc", "no_proxy_env")
def test_export_sends_its_own_credentials_beside_a_netrc_entry(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(text=json.dumps(RECORD) + "\n")

    async def main() -> list[WindowFile]:
        async with serve_routes({("GET", "/api/2.0/export"): handle}) as base:
            limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
            return [w async for w in fetch_windows(settings(base), [DAY], tmp_path,
                                                   limiter=limiter)]

    (window,) = asyncio.run(asyncio.wait_for(main(), 30))
    assert window.record_count == 1 and seen == [OURS]


@pytest.mark.usefixtures("netrc", "no_proxy_env")
def test_engage_sends_its_own_credentials_beside_a_netrc_entry() -> None:
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"results": [{"$distinct_id": "u", "$properties": {}}],
                                  "page": 0, "page_size": 1000, "session_id": "s",
                                  "total": 1, "status": "ok"})

    async def main() -> list[Any]:
        async with serve_routes({("POST", "/api/query/engage"): handle}) as base:
            return [r async for r in EngagePager(settings(base, max_attempts=1)).records()]

    records = asyncio.run(asyncio.wait_for(main(), 30))
    assert [r.record["$distinct_id"] for r in records] == ["u"] and seen == [OURS]


@pytest.mark.usefixtures("no_proxy_env")
def test_a_proxy_that_is_down_is_named_when_mixpanel_was_never_reached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = f"http://ops:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HTTP_PROXY", proxy)
    target = "http://mixpanel-behind-a-proxy.invalid"
    with pytest.raises(TerminalError) as stopped:
        fetch(target, tmp_path, max_attempts=50)
    said = str(stopped.value)
    assert said.startswith(f"cannot connect to Mixpanel at {target}/api/2.0/export through "
                           f"the proxy http://***@127.0.0.1:")
    assert "check that proxy (HTTPS_PROXY / HTTP_PROXY" in said
    assert "hunter2" not in said


@pytest.mark.usefixtures("no_proxy_env")
def test_no_proxy_is_named_for_a_host_that_goes_around_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxy_for("https://data.mixpanel.com/api/2.0/export") == \
        "http://proxy.example:3128"
    assert proxy_for("http://data.mixpanel.com/api/2.0/export") is None
    monkeypatch.setenv("NO_PROXY", "mixpanel.com")
    assert proxy_for("https://data.mixpanel.com/api/2.0/export") is None


def test_the_waits_between_refused_connections_are_jittered() -> None:
    waits = [refused_wait() for _ in range(50)]
    assert all(0.8 <= w <= 1.2 for w in waits) and len(set(waits)) > 40
    assert 0.9 < sum(waits) / len(waits) < 1.1  # five attempts still stop in ~5 s


@pytest.mark.usefixtures("no_proxy_env")
def test_a_run_never_reaching_mixpanel_waits_the_jittered_delay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    def wait() -> float:
        slept.append(0.01)
        return 0.01

    monkeypatch.setattr(export, "refused_wait", wait)
    with pytest.raises(TerminalError, match="never since this run started"):
        fetch(f"http://127.0.0.1:{free_port()}", tmp_path, backoff_base=5.0)
    assert slept == [0.01] * 4
