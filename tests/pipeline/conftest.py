"""Fixtures of the migrate tests: one small generated project per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test modules import migrate_kit

from migrate_kit import TIMEZONE, Project, mp2amp, transform_outcome


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    mp2amp("generate", "--out", str(root / "p"), "--users", "150", "--days", "3",
           "--seed", "5", "--timezone", TIMEZONE)
    events = root / "p" / "events"
    return Project(root / "p", events, *transform_outcome(events, root / "transform"))
