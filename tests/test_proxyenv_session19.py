"""Session 19, proxyenv: NO_PROXY ``host:port`` entries, upper-case HTTP_PROXY under a CGI
environment (httpoxy), and the stop for a proxy's 407 after a ~/.netrc login was sent.
The 407 tests go over real loopback sockets to a fake forward proxy."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import date
from pathlib import Path

import pytest

import mp2amp.extract.export as export
import mp2amp.proxyenv as proxyenv
from mp2amp.errors import Mp2AmpError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.engage import EngagePager
from mp2amp.extract.export import fetch_windows
from mp2amp.extract.ratelimit import RateLimiter
from mp2amp.load import Uploader, UploadSettings
from mp2amp.proxyenv import PROXY_VARIABLES, proxy_fix, proxy_for

PROXY = "http://proxy.corp.example:3128"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy, no CGI environment, an empty ~/.netrc, the once-only warnings unsaid."""
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    monkeypatch.setattr(proxyenv, "_http_proxy_ignored", set())
    monkeypatch.setattr(export, "refused_wait", lambda: 0.01)


def no_proxy(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("http_proxy", PROXY)
    monkeypatch.setenv("NO_PROXY", value)
    monkeypatch.setenv("no_proxy", value)


# --- NO_PROXY host:port -------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "url", "bypassed"), [
    ("api2.amplitude.com:443", "https://api2.amplitude.com/2/httpapi", True),
    ("api2.amplitude.com:443", "https://API2.amplitude.com:443/batch", True),
    ("api2.amplitude.com:443", "http://api2.amplitude.com/2/httpapi", False),  # port 80
    ("api2.amplitude.com:443", "https://api2.amplitude.com:8443/2/httpapi", False),
    (".amplitude.com:443", "https://api2.amplitude.com/2/httpapi", True),  # a suffix
    ("other.example:443,10.1.2.3:8080", "http://10.1.2.3:8080/batch", True),
    ("10.1.2.3:8080", "http://10.1.2.3:9090/batch", False),
    ("10.1.2.3:8080", "http://10.1.2.3/batch", False),
    ("[fd00::1]:8080", "http://[fd00::1]:8080/batch", True),
    ("[fd00::1]:8080", "http://[fd00::1]:9090/batch", False),
    ("[fd00::1]", "http://[fd00::1]:9090/batch", True),  # no port: every port
])
def test_a_no_proxy_host_port_entry_matches_that_host_on_that_port_only(
        monkeypatch: pytest.MonkeyPatch, entry: str, url: str, bypassed: bool) -> None:
    no_proxy(monkeypatch, entry)
    assert proxy_for(url) == (None if bypassed else PROXY)


def test_a_no_proxy_entry_without_a_port_still_matches_every_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy(monkeypatch, "api2.amplitude.com,fd00::2,10.0.0.0/8")
    assert proxy_for("https://api2.amplitude.com:8443/batch") is None
    assert proxy_for("http://[fd00::2]:8080/batch") is None
    assert proxy_for("http://10.9.8.7:8080/batch") is None
    assert proxy_for("https://api.amplitude.com/batch") == PROXY


# --- upper-case HTTP_PROXY in a CGI environment ---------------------------------------------


def test_http_proxy_under_request_method_is_not_used_and_a_warning_says_why_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("HTTP_PROXY", "http://ops:s3cret@proxy.corp.example:3128")
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    assert proxy_for("http://amplitude.example/2/httpapi") is None
    assert proxy_for("http://amplitude.example/batch") is None
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "HTTP_PROXY is not used for http:// URLs (amplitude.example) because REQUEST_METHOD "
        "is set: there it may come from a web request's Proxy: header (httpoxy). Requests "
        "to http:// hosts go directly, without a proxy; to use that proxy, set it in the "
        "lower-case http_proxy, or unset REQUEST_METHOD"], said


def test_http_proxy_under_request_method_falls_back_to_all_proxy_saying_so(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("HTTP_PROXY", "http://injected.example:80")
    monkeypatch.setenv("ALL_PROXY", PROXY)
    monkeypatch.setenv("REQUEST_METHOD", "POST")
    assert proxy_for("http://amplitude.example/2/httpapi") == PROXY
    assert "go through ALL_PROXY" in caplog.text, caplog.text


def test_lower_case_http_proxy_and_https_proxy_are_used_under_request_method(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    assert proxy_for("https://api2.amplitude.com/2/httpapi") == PROXY
    monkeypatch.setenv("http_proxy", PROXY)
    monkeypatch.setenv("HTTP_PROXY", "http://injected.example:80")
    assert proxy_for("http://amplitude.example/2/httpapi") == PROXY
    assert caplog.records == []


def test_http_proxy_outside_a_cgi_environment_is_used_without_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    assert proxy_for("http://amplitude.example/2/httpapi") == PROXY
    assert caplog.records == []


# --- a 407 after a ~/.netrc login ----------------------------------------------------------


def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "proxy-netrc"
    path.write_text("machine 127.0.0.1 login ops password s3cret-netrc\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    return path


def test_proxy_fix_names_the_netrc_host_and_file_when_its_login_was_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = netrc(tmp_path, monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    proxy = proxy_for("https://api2.amplitude.com/2/httpapi")
    assert proxy == "http://ops:s3cret-netrc@127.0.0.1:3128"
    assert proxy_fix(407, "api2.amplitude.com", proxy) == (
        f"It refused the login {path} keeps for the proxy host 127.0.0.1 (sent because the "
        "proxy's URL has none): correct that machine entry's login and password, or write "
        "user:password@ before the host in the proxy's URL in HTTPS_PROXY / HTTP_PROXY "
        "(that login is then used instead)")
    # a login written in the URL is the user's own: the usual advice
    assert proxy_fix(407, "api2.amplitude.com", "http://ops:s3cret-netrc@127.0.0.1:3129") \
        .startswith("It wants credentials, or refused the ones given")


async def refusing_proxy(heads: list[bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(Exception):
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def mixpanel(base: str) -> MixpanelSettings:
    return MixpanelSettings(project_id=42, api_host=base, service_account="svc:pw",
                            per_hour=1000, per_second=1000, backoff_base=0.01, max_attempts=2)


async def ask(client: str, base: str) -> None:
    if client == "export":
        limiter = RateLimiter(per_hour=1000, per_second=1000, max_concurrent=10)
        _ = [w async for w in fetch_windows(mixpanel(base), [date(2024, 1, 1)],
                                            Path("unused-work"), limiter=limiter)]
    elif client == "engage":
        _ = [r async for r in EngagePager(mixpanel(base)).records()]
    else:
        up = Uploader(UploadSettings(api_key="k", api_host=base, concurrency=1, gzip=False,
                                     max_retries=2, backoff_base=0.01))
        async with up:
            await up.submit({"event_type": "v", "device_id": "device-1", "insert_id": "n1",
                             "time": 1_700_000_000_000}, ("s", 1))
            await up.close()


def refused(monkeypatch: pytest.MonkeyPatch, client: str, base: str,
            login: str = "") -> tuple[str, list[bytes]]:
    """What ``client`` said asked for ``base`` through a proxy (written with ``login``)
    that answers 407 to everything, and the heads the proxy was sent."""
    heads: list[bytes] = []

    async def main() -> str:
        server = await refusing_proxy(heads)
        proxy = f"http://{login}127.0.0.1:{server.sockets[0].getsockname()[1]}"
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        monkeypatch.setenv("http_proxy", proxy)
        try:
            await ask(client, base)
        except Mp2AmpError as exc:
            return str(exc)
        finally:
            server.close()
            await server.wait_closed()
        return ""

    return asyncio.run(asyncio.wait_for(main(), 30)), heads


@pytest.mark.parametrize("client", ["export", "engage", "uploader"])
@pytest.mark.parametrize("scheme", ["https", "http"])  # a CONNECT, or the request itself
def test_a_407_to_a_netrc_login_names_the_netrc_entry_not_the_proxy_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str, scheme: str) -> None:
    path = netrc(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    said, heads = refused(monkeypatch, client, f"{scheme}://behind-a-proxy.invalid")
    assert len(heads) == 1 and b"Proxy-Authorization: Basic" in heads[0], heads
    assert f"It refused the login {path} keeps for the proxy host 127.0.0.1" in said, said
    assert "correct that machine entry's login and password, or write user:password@" in said
    assert "It wants credentials" not in said and "s3cret" not in said, said


@pytest.mark.parametrize("client", ["export", "engage", "uploader"])
def test_a_407_to_a_login_in_the_proxy_url_keeps_the_usual_advice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    netrc(tmp_path, monkeypatch)  # there, but the URL's own login wins
    monkeypatch.chdir(tmp_path)
    said, heads = refused(monkeypatch, client, "https://behind-a-proxy.invalid", "me:mine@")
    assert len(heads) == 1, heads
    assert "It wants credentials, or refused the ones given" in said, said
    assert "netrc" not in said and "mine" not in said, said
