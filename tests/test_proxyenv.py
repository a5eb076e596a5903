"""Loopback is never sent to a proxy from the environment."""

from __future__ import annotations

from mp2amp.proxyenv import bypass_proxy_for_loopback


def test_without_a_proxy_nothing_changes() -> None:
    env = {"PATH": "/bin"}
    bypass_proxy_for_loopback(env)
    assert env == {"PATH": "/bin"}


def test_loopback_is_added_to_both_spellings_of_no_proxy_once() -> None:
    env = {"https_proxy": "http://proxy.corp:3128", "NO_PROXY": "corp.example, localhost"}
    bypass_proxy_for_loopback(env)
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,localhost,127.0.0.1,::1"
    bypass_proxy_for_loopback(env)
    assert env["NO_PROXY"] == env["no_proxy"] == "corp.example,localhost,127.0.0.1,::1"


def test_the_hosts_of_the_list_read_are_kept() -> None:
    """The lower-case list is the one urllib and curl read when it is set: a host only
    the upper-case one names (127.0.0.2) still goes through the proxy (session 19)."""
    env = {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": "127.0.0.2",
           "no_proxy": "internal.corp"}
    bypass_proxy_for_loopback(env)
    assert env["no_proxy"] == env["NO_PROXY"] == "internal.corp,localhost,127.0.0.1,::1"


def test_a_star_is_left_alone() -> None:
    env = {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": "*"}
    bypass_proxy_for_loopback(env)
    assert env == {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": "*"}
