"""proxyenv.proxy_for: the proxy every client (Export API, Engage, Amplitude) goes through,
read from the environment as curl reads it, with a ~/.netrc login for the proxy's host."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import mp2amp.proxyenv as proxyenv
from mp2amp.errors import ConfigError, redact_userinfo
from mp2amp.proxyenv import PROXY_VARIABLES, proxy_for

URL = "https://data.mixpanel.com/api/2.0/export"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (*PROXY_VARIABLES, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty-netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))


def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "netrc"
    path.write_text(text)
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    return path


@pytest.mark.parametrize(("given", "used"), [
    ("proxy.corp:3128", "http://proxy.corp:3128"),
    ("ops:pw@proxy.corp:3128", "http://ops:pw@proxy.corp:3128"),
    ("http://proxy.corp:3128", "http://proxy.corp:3128"),
    ("https://proxy.corp:3129", "https://proxy.corp:3129"),
])
def test_a_proxy_without_a_scheme_is_http_as_for_curl(
        monkeypatch: pytest.MonkeyPatch, given: str, used: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", given)
    assert proxy_for(URL) == used


def test_all_proxy_is_used_when_the_schemes_own_is_not_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:3128")
    assert proxy_for(URL) == "http://all.corp:3128"
    assert proxy_for("http://api2.amplitude.com/batch") == "http://all.corp:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://https.corp:3128")
    assert proxy_for(URL) == "http://https.corp:3128"
    monkeypatch.setenv("NO_PROXY", "mixpanel.com")
    assert proxy_for(URL) is None


def test_a_socks_proxy_stops_the_run_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5h://ops:s3cret@127.0.0.2:1080")
    with pytest.raises(ConfigError) as stopped:
        proxy_for(URL)
    said = str(stopped.value)
    assert "socks5h://" in said and "NO_PROXY" in said and "s3cret" not in said


def test_a_machine_wide_socks_all_proxy_is_left_to_other_tools(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5h://127.0.0.2:1080")  # a developer's SSH tunnel
    assert proxy_for(URL) is None


def test_a_netrc_login_for_the_proxy_host_is_the_proxys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc(tmp_path, monkeypatch, "machine proxy.corp login o@ps password p:w/d\n"
                                 "default login mixpanel password secret\n")
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    assert proxy_for(URL) == "http://o%40ps:p%3Aw%2Fd@proxy.corp:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://own:login@proxy.corp:3128")
    assert proxy_for(URL) == "http://own:login@proxy.corp:3128"  # its own login wins
    monkeypatch.setenv("HTTPS_PROXY", "http://other.corp:3128")
    assert proxy_for(URL) == "http://other.corp:3128"  # a 'default' login is not the proxy's


def test_a_netrc_that_cannot_be_read_is_said_once_and_the_proxy_asked_without_a_login(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = netrc(tmp_path, monkeypatch, "machine proxy.corp nonsense\n")  # unparsable
    monkeypatch.setattr(proxyenv, "_unreadable_netrc", set())
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    with caplog.at_level(logging.WARNING):
        assert [proxy_for(URL) for _ in range(3)] == ["http://proxy.corp:3128"] * 3
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and str(path) in said[0], said


def test_a_proxy_login_without_a_scheme_is_redacted() -> None:
    said = "proxy ops:s3cret@127.0.0.1:3128 refused; URL('a:b@h') and http://u:p@h/x"
    assert redact_userinfo(said) == \
        "proxy ***@127.0.0.1:3128 refused; URL('***@h') and http://***@h/x"
    assert redact_userinfo("write to ops@example.com at 12:30") == \
        "write to ops@example.com at 12:30"
