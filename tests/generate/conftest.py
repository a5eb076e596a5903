"""Small generated projects shared by the generator tests (each built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test modules import generate_kit

from generate_kit import Project, build


@pytest.fixture(scope="session")
def simplified(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build(tmp_path_factory.mktemp("gen") / "simplified", users=200, days=3, seed=7, dirty=0.02)


@pytest.fixture(scope="session")
def original(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build(tmp_path_factory.mktemp("gen") / "original", users=200, days=3, seed=11,
                 dirty=0.02, id_merge="original", legacy_time=True)
