"""Helpers of the config and command-line tests (importable as ``config_kit``, as
``shared_kit`` is). Not a test module: it defines no tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mp2amp.config import load_config
from mp2amp.errors import ConfigError
from shared_kit import SECRET_ENV

MP2AMP = str(Path(sys.executable).parent / "mp2amp")
EVENT = ('{"event": "a", "properties": {"time": 1700000000, "distinct_id": "u1", '
         '"$insert_id": "i1"}}\n')


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``mp2amp`` in ``cwd`` with no secret from the machine, ``env`` added."""
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    return subprocess.run([MP2AMP, *args], cwd=cwd, env={**clean, **env}, text=True,
                          capture_output=True, timeout=60)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems ``load_config`` lists for a config file holding ``text``."""
    path = tmp_path / "mp2amp.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value.problems
