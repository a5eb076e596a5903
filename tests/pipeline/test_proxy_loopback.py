"""`mp2amp migrate` with a corporate proxy in the environment and Amplitude on loopback:
the uploader honours HTTPS_PROXY / HTTP_PROXY (trust_env), and loopback bypasses them."""

from __future__ import annotations

import os
from pathlib import Path

from migrate_kit import API_KEY, Project, amplitude, assert_exactly_once, mp2amp, write_toml


def test_migrate_reaches_a_loopback_amplitude_past_an_unreachable_proxy(
        project: Project, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(AMPLITUDE_API_KEY=API_KEY, HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9")  # nothing listens on port 9
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, tmp_path / "work", url)
        done = mp2amp("migrate", "-c", str(cfg), "--quiet", env=env)
        assert done.returncode == 0
        assert_exactly_once(url, project.expected)
