"""Session 18, fourth review of proxies and credentials (17b4168, 8ba6ba9, 14cc7a2):
proxyenv.proxy_for, the Export API / Engage / uploader requests through a proxy, and
errors.redact_userinfo on the messages naming that proxy. Requests go over real loopback
sockets to a fake forward proxy.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong. Each
was checked to fail for that reason with ``--runxfail``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

import pytest

import mp2amp.extract.export as export
from mp2amp.errors import Mp2AmpError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import WindowFile, fetch_windows
from mp2amp.extract.ratelimit import RateLimiter
from mp2amp.load import Uploader, UploadSettings
from mp2amp.proxyenv import PROXY_VARIABLES, proxy_for

DAY = date(2024, 1, 1)
AMPLITUDE_OK = b'{"code":200,"events_ingested":1}'
RECORD = json.dumps({"event": "Viewed", "properties": {
    "time": 1704067200000, "$insert_id": "id-0", "distinct_id": "user-0"}}).encode()


def mixpanel(base: str, **kw: Any) -> MixpanelSettings:
    opts: dict[str, Any] = {"project_id": 42, "api_host": base, "service_account": "svc:pw",
                            "per_hour": 1000, "per_second": 1000, "backoff_base": 0.01,
                            "max_attempts": 2, **kw}
    return MixpanelSettings(**opts)


async def fetch(settings: MixpanelSettings, workdir: Path) -> list[WindowFile]:
    limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
    return [w async for w in fetch_windows(settings, [DAY], workdir, limiter=limiter)]


async def upload_one(host: str) -> Any:
    up = Uploader(UploadSettings(api_key="k", api_host=host, concurrency=1, gzip=False,
                                 max_retries=2, backoff_base=0.01))
    async with up:
        await up.submit({"event_type": "v", "device_id": "device-1", "insert_id": "n1",
                         "time": 1_700_000_000_000}, ("s", 1))
        return await up.close()


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy unless a test sets one; an empty ~/.netrc; no 1 s waits between refusals."""
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    monkeypatch.setattr(export, "refused_wait", lambda: 0.01)


Answer = Callable[[bytes], tuple[int, bytes]]


class FakeProxy:
    """A forward proxy on loopback: records each request's head and answers it with
    ``answer(head) -> (status, body)``."""

    REASONS: ClassVar[dict[int, bytes]] = {
        200: b"OK", 403: b"Forbidden", 407: b"Proxy Authentication Required",
        502: b"Bad Gateway"}

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            status, body = self.answer(head)
            ctype = b"application/json" if body.startswith(b'{"code"') else b"text/plain"
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s"
                         % (status, self.REASONS[status], ctype, len(body), body))
            await writer.drain()
        writer.close()

    def logins(self) -> list[str]:
        """The Proxy-Authorization logins the proxy was sent, decoded."""
        out = []
        for head in self.heads:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"proxy-authorization: basic "):
                    out.append(base64.b64decode(line.split()[-1]).decode("latin1"))
        return out

    async def __aenter__(self) -> FakeProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


def run(coro: Awaitable[Any], limit: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit))  # type: ignore[arg-type]


def refused_by_proxy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, client: str,
                     userinfo: str) -> tuple[str, list[str]]:
    """What the client said when a proxy at HTTP_PROXY=http://<userinfo>@127.0.0.1 answers
    407 to everything, and the logins the proxy was sent."""
    async def main() -> tuple[str, list[str]]:
        async with FakeProxy(lambda head: (407, b"")) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://{userinfo}@127.0.0.1:{proxy.port}")
            try:
                if client == "export":
                    await fetch(mixpanel("http://mixpanel-behind-a-proxy.invalid"), tmp_path)
                else:
                    await upload_one("http://amplitude-behind-a-proxy.invalid")
            except Mp2AmpError as exc:
                return str(exc), proxy.logins()
            return "", proxy.logins()

    return run(main())


# --- credentials in messages --------------------------------------------------------------


@pytest.mark.parametrize("client", ["export", "uploader"])
def test_a_proxy_login_that_is_an_email_address_keeps_its_password_out_of_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        client: str) -> None:
    caplog.set_level(logging.DEBUG)
    said, logins = refused_by_proxy(monkeypatch, tmp_path, client,
                                    "jane.doe@corp.example:Tr0ub4dor")
    # the login is taken as written (as curl and urllib split it: at the last '@') ...
    assert logins and set(logins) == {"jane.doe@corp.example:Tr0ub4dor"}, logins
    assert "407" in said, said
    # ... but the password must never be shown
    assert "Tr0ub4dor" not in said + caplog.text, said


@pytest.mark.parametrize("client", ["export", "uploader"])
def test_a_proxy_password_with_an_unencoded_at_sign_stays_out_of_messages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        client: str) -> None:
    caplog.set_level(logging.DEBUG)
    said, logins = refused_by_proxy(monkeypatch, tmp_path, client, "ops:s3cr@tXYZ")
    assert logins and set(logins) == {"ops:s3cr@tXYZ"}, logins  # sent as written
    assert "407" in said, said
    assert "tXYZ" not in said + caplog.text, said


def test_special_characters_of_a_netrc_proxy_login_reach_the_proxy_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard: with_netrc_login percent-quotes the login into the proxy URL and aiohttp
    decodes it once; a percent-encoded password in HTTPS_PROXY is decoded once too."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login jane@corp.example password p@ss:w/r#d%41\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    async def main() -> list[str]:
        async with FakeProxy(lambda head: (407, b"")) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            with suppress(Mp2AmpError):
                await upload_one("http://amplitude-behind-a-proxy.invalid")
            monkeypatch.setenv("HTTP_PROXY", f"http://ops:a%40b%25c@127.0.0.1:{proxy.port}")
            with suppress(Mp2AmpError):
                await upload_one("http://amplitude-behind-a-proxy.invalid")
            return proxy.logins()

    assert run(main()) == ["jane@corp.example:p@ss:w/r#d%41", "ops:a@b%c"]


# --- NO_PROXY as curl honours it --------------------------------------------------------


def test_a_cidr_no_proxy_entry_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,.corp.example")
    monkeypatch.setenv("no_proxy", "10.0.0.0/8,.corp.example")
    assert proxy_for("https://data.corp.example/api") is None  # a suffix is honoured
    assert proxy_for("http://10.20.30.40:8040/2/httpapi") is None


# --- a netrc login for the proxy ----------------------------------------------------------


def test_a_netrc_machine_spelled_as_the_proxy_url_gives_its_login(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine Proxy.Corp.example login ops password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTPS_PROXY", "http://Proxy.Corp.example:3128")
    proxy = proxy_for("https://data.mixpanel.com/api/2.0/export")
    assert proxy is not None
    parts = urllib.parse.urlsplit(proxy)
    assert (parts.username, parts.password, parts.port) == ("ops", "s3cret", 3128), proxy


# --- a proxy URL that cannot be parsed ----------------------------------------------------


@pytest.mark.parametrize("client", ["export", "uploader"])
def test_a_proxy_password_with_an_unencoded_hash_stops_naming_the_proxy_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        client: str) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> str:
        async with FakeProxy(lambda head: (200, AMPLITUDE_OK)) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://ops:p#ss1234@127.0.0.1:{proxy.port}")
            try:
                if client == "export":
                    await fetch(mixpanel("http://mixpanel-behind-a-proxy.invalid"), tmp_path)
                else:
                    await upload_one("http://amplitude-behind-a-proxy.invalid")
            except Mp2AmpError as exc:
                return str(exc)
            return ""

    said = run(main())
    assert said, "a request went through an unparseable proxy URL"
    assert "ss1234" not in said + caplog.text, said
    assert "HTTP_PROXY" in said, said  # what to fix: the variable holding the proxy URL
