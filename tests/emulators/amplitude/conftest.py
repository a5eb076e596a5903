"""Fixtures: an Amplitude emulator on a real loopback socket (restartable), a movable clock."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test modules import the helpers module

from amplitude_emulator_helpers import API_KEY, SECRET, Api, Clock

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def start_emulator(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Api]]:
    """Start an emulator (several may run, e.g. to restart on the same data directory)."""
    running: list[AbstractContextManager[str]] = []

    def start(**settings: Any) -> Api:
        settings.setdefault("data_dir", tmp_path / "amplitude")
        emulator = AmplitudeEmulator(AmplitudeConfig(api_key=API_KEY, secret_key=SECRET,
                                                     now=clock, **settings))
        ctx = emulator.running()
        url = ctx.__enter__()
        running.append(ctx)
        return Api(url, emulator)

    yield start
    for ctx in reversed(running):
        ctx.__exit__(None, None, None)


@pytest.fixture
def api(start_emulator: Callable[..., Api]) -> Api:
    return start_emulator()
