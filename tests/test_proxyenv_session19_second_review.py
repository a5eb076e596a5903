"""Session 19, second review of 9b90550 (proxyenv): NO_PROXY entries (``*``, CIDR with a
port, trailing dots), the loopback rule, the httpoxy warning, and the ~/.netrc warnings.
Requests go over real loopback sockets to a fake forward proxy where the route matters.

The five defects the review pinned as strict xfails are fixed; the tests after "fixes"
below pin the edges of those fixes. What curl 7.88 does was checked on this machine with a
fake proxy (``curl -v`` names the proxy variable it used).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

import mp2amp.proxyenv as proxyenv
from mp2amp.load import Uploader, UploadSettings
from mp2amp.proxyenv import PROXY_VARIABLES, bypass_proxy_for_loopback, proxy_for

PROXY = "http://proxy.corp.example:3128"
AMPLITUDE_OK = b'{"code":200,"events_ingested":1}'


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy, no CGI environment, an empty ~/.netrc, the once-only warnings unsaid."""
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    monkeypatch.setattr(proxyenv, "_http_proxy_ignored", set())
    monkeypatch.setattr(proxyenv, "_unreadable_netrc", set())


def no_proxy(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("http_proxy", PROXY)
    monkeypatch.setenv("NO_PROXY", value)
    monkeypatch.setenv("no_proxy", value)


class Server:
    """A loopback HTTP server answering every request 200 with Amplitude's success body,
    recording the request heads: used both as the "proxy" and as the direct host."""

    def __init__(self) -> None:
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
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(AMPLITUDE_OK), AMPLITUDE_OK))
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


async def upload_one(host: str) -> Any:
    up = Uploader(UploadSettings(api_key="k", api_host=host, concurrency=1, gzip=False,
                                 max_retries=2, backoff_base=0.01))
    async with up:
        await up.submit({"event_type": "v", "device_id": "device-1", "insert_id": "n1",
                         "time": 1_700_000_000_000}, ("s", 1))
        return await up.close()


# --- loopback is never proxied ---------------------------------------------------------------


@pytest.mark.parametrize(("upper", "lower"), [
    ("corp.example,*", "corp.example,*"),  # '*' in a list: curl and urllib ignore it
    (" *", " *"),  # '*' with a space: not the whole value either
    ("*", "corp.example"),  # both set: urllib and curl read the lower-case one
])
def test_loopback_never_goes_through_the_proxy_whatever_no_proxy_holds(
        monkeypatch: pytest.MonkeyPatch, upper: str, lower: str) -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        async with Server() as proxy, Server() as emulator:
            url = f"http://127.0.0.1:{proxy.port}"
            monkeypatch.setenv("HTTPS_PROXY", url)
            monkeypatch.setenv("http_proxy", url)
            monkeypatch.setenv("NO_PROXY", upper)
            monkeypatch.setenv("no_proxy", lower)
            bypass_proxy_for_loopback()  # as the `mp2amp` command does at its start
            await upload_one(f"http://127.0.0.1:{emulator.port}")
            return proxy.heads, emulator.heads

    via_proxy, direct = asyncio.run(asyncio.wait_for(main(), 20))
    assert via_proxy == [] and len(direct) == 1, (via_proxy, direct)


def test_loopback_with_a_port_entry_in_no_proxy_still_bypasses_every_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard: ``localhost:8080`` in NO_PROXY does not narrow the loopback rule."""
    no_proxy(monkeypatch, "localhost:8080,127.0.0.1:8080")
    bypass_proxy_for_loopback()
    assert proxy_for("http://localhost:9090/batch") is None
    assert proxy_for("http://127.0.0.1:9090/batch") is None
    assert proxy_for("http://[::1]:9090/batch") is None
    assert proxy_for("https://api2.amplitude.com/batch") == PROXY


# --- NO_PROXY entries ------------------------------------------------------------------------


def test_a_cidr_entry_with_a_port_matches_that_range_on_that_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy(monkeypatch, "10.0.0.0/8:8080,[fd00::]/16:8080")
    assert proxy_for("http://10.1.2.3:8080/batch") is None
    assert proxy_for("http://[fd00::5]:8080/batch") is None


@pytest.mark.parametrize(("entry", "url"), [
    ("api2.amplitude.com.", "https://api2.amplitude.com/2/httpapi"),
    ("amplitude.com.", "https://api2.amplitude.com/2/httpapi"),
    ("api2.amplitude.com", "https://api2.amplitude.com./2/httpapi"),
])
def test_a_trailing_dot_is_ignored_as_curl_does(monkeypatch: pytest.MonkeyPatch, entry: str,
                                                url: str) -> None:
    no_proxy(monkeypatch, entry)
    assert proxy_for(url) is None


def test_no_proxy_entries_with_spaces_upper_case_and_suffix_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard: spaces and case are ignored, a suffix entry with a port matches that port."""
    no_proxy(monkeypatch, " corp.example , API2.AMPLITUDE.COM , .mixpanel.com:443 ")
    assert proxy_for("https://api2.amplitude.com/2/httpapi") is None
    assert proxy_for("https://data.mixpanel.com/api/2.0/export") is None
    assert proxy_for("https://data.mixpanel.com:8443/api/2.0/export") == PROXY


# --- upper-case HTTP_PROXY under REQUEST_METHOD (httpoxy) ------------------------------------


def test_the_httpoxy_warning_says_where_requests_go_with_a_socks_all_proxy(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("HTTP_PROXY", "http://ops:s3cret@proxy.corp.example:3128")
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    assert proxy_for("http://amplitude.example/2/httpapi") is None  # direct
    assert "s3cret" not in caplog.text
    assert "go directly, without a proxy" in caplog.text, caplog.text


def test_the_httpoxy_warning_is_said_once_and_never_holds_the_proxy_url(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Guard: once per process (engage asks proxy_for on every request), no value shown."""
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("HTTP_PROXY", "http://ops:s3cret@proxy.corp.example:3128")
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    for _ in range(5):
        assert proxy_for("http://amplitude.example/2/httpapi") is None
    assert len(caplog.records) == 1, caplog.text
    assert "proxy.corp.example" not in caplog.text and "s3cret" not in caplog.text


# --- ~/.netrc --------------------------------------------------------------------------------


def test_an_unreadable_netrc_warning_never_shows_a_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    path = tmp_path / "netrc"
    path.write_text("machine git.corp.example login me password correct horse-battery\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    assert proxy_for("https://api2.amplitude.com/2/httpapi") == PROXY
    assert str(path) in caplog.text, caplog.text  # the warning is said ...
    assert "horse-battery" not in caplog.text, caplog.text  # ... without the password


# --- fixes: the edges ------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://localhost:9090/batch", "http://localhost.:9090/batch", "http://127.0.0.5/batch",
    "http://[::1]:9090/batch", "http://[::ffff:127.0.0.1]:9090/batch",
])
def test_proxy_for_never_proxies_loopback_even_without_the_no_proxy_merge(
        monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    no_proxy(monkeypatch, "corp.example,*")  # bypass_proxy_for_loopback not called
    monkeypatch.setenv("ALL_PROXY", PROXY)
    assert proxy_for(url) is None
    assert proxy_for("http://localhost.example/batch") == PROXY  # not loopback


@pytest.mark.parametrize(("env", "expected"), [
    # urllib reads no_proxy: loopback goes there, the NO_PROXY that is exactly '*' stays
    ({"NO_PROXY": "*", "no_proxy": "corp.example"},
     {"NO_PROXY": "*", "no_proxy": "corp.example,localhost,127.0.0.1,::1"}),
    # a '*' inside a list matches nothing for urllib and curl: dropped, loopback added
    ({"NO_PROXY": "corp.example, *"},
     {"NO_PROXY": "corp.example,localhost,127.0.0.1,::1",
      "no_proxy": "corp.example,localhost,127.0.0.1,::1"}),
    # the value urllib reads is exactly '*': nothing to add, nothing changed
    ({"NO_PROXY": "corp.example", "no_proxy": "*"}, {"NO_PROXY": "corp.example", "no_proxy": "*"}),
])
def test_bypass_proxy_for_loopback_skips_only_a_whole_star_that_urllib_reads(
        env: dict[str, str], expected: dict[str, str]) -> None:
    env = {"HTTPS_PROXY": PROXY, **env}
    bypass_proxy_for_loopback(env)
    assert env == {"HTTPS_PROXY": PROXY, **expected}


def test_a_cidr_entry_with_a_port_leaves_other_ports_and_unreadable_ports_proxied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy(monkeypatch, "10.0.0.0/8:8080,[fd00::]/16,192.168.0.0/16:http")
    assert proxy_for("http://10.1.2.3:9090/batch") == PROXY  # another port
    assert proxy_for("http://10.1.2.3/batch") == PROXY  # port 80
    assert proxy_for("https://10.1.2.3:8080/batch") is None  # the port, whatever the scheme
    assert proxy_for("http://[fd00::9]/batch") is None  # bracketed range, every port
    assert proxy_for("http://192.168.1.1/batch") == PROXY  # a port that is no number


def test_a_trailing_dot_entry_still_matches_whole_labels_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    no_proxy(monkeypatch, "amplitude.com.,.mixpanel.com.:443")
    assert proxy_for("https://notamplitude.com/2/httpapi") == PROXY
    assert proxy_for("https://data.mixpanel.com./api/2.0/export") is None
    assert proxy_for("https://data.mixpanel.com:8443/api/2.0/export") == PROXY


def test_no_proxy_entries_are_read_from_the_spelling_urllib_reads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lower-case no_proxy, when set, is the whole list (urllib, curl): a CIDR range
    only in NO_PROXY is not honoured then, as no host only there is."""
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,internal.corp")
    monkeypatch.setenv("no_proxy", "corp.example")
    assert proxy_for("http://10.1.2.3/batch") == PROXY
    assert proxy_for("http://internal.corp/batch") == PROXY
    monkeypatch.delenv("no_proxy")
    assert proxy_for("http://10.1.2.3/batch") is None


def test_the_httpoxy_warning_says_all_proxy_when_an_http_all_proxy_is_used(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    monkeypatch.setenv("HTTP_PROXY", "http://ops:s3cret@proxy.corp.example:3128")
    monkeypatch.setenv("ALL_PROXY", "proxy.corp.example:3128")  # no scheme: http://
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    assert proxy_for("http://amplitude.example/2/httpapi") == PROXY
    assert "go through ALL_PROXY" in caplog.text and "s3cret" not in caplog.text, caplog.text


def test_a_netrc_parse_error_names_the_file_and_line_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Python's netrc counts the line after a token that ends its line: hence "near"."""
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    path = tmp_path / "netrc"
    path.write_text("machine a.example login a password b\n"
                    "machine git.corp.example login me password correct horse-battery\n")
    monkeypatch.setenv("NETRC", str(path))
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    assert proxy_for("https://api2.amplitude.com/2/httpapi") == PROXY
    assert caplog.messages == [
        f"cannot read {path} (not valid netrc syntax near line 3): no proxy login is "
        "taken from it; the proxy is asked without one"]


def test_a_netrc_that_is_not_text_is_a_warning_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import locale
    if locale.getencoding().lower().replace("-", "") != "utf8":
        pytest.skip("the locale's encoding reads any byte: netrc falls back to it")
    caplog.set_level(logging.WARNING, logger="mp2amp.proxy")
    path = tmp_path / "netrc"
    path.write_bytes(b"machine proxy.corp.example login me password \xff\xfe\n")
    monkeypatch.setenv("NETRC", str(path))
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    assert proxy_for("https://api2.amplitude.com/2/httpapi") == PROXY
    assert caplog.messages == [
        f"cannot read {path} (it is not text in UTF-8 or the locale's encoding): no proxy "
        "login is taken from it; the proxy is asked without one"]
