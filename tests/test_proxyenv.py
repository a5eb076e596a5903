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
    assert env["NO_PROXY"] == "corp.example,localhost,127.0.0.1,::1"
    assert env["no_proxy"] == "localhost,127.0.0.1,::1"
    bypass_proxy_for_loopback(env)
    assert env["NO_PROXY"] == "corp.example,localhost,127.0.0.1,::1"
