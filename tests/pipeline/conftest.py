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
    # seed 41: dirty (duplicates, a reused $insert_id, junk and short IDs, deep nesting,
    # type changes) but with no split or malformed line, as tests that cut day files into
    # parts of alternate lines need (a split record's halves would land in two parts)
    mp2amp("generate", "--out", str(root / "p"), "--users", "150", "--days", "3",
           "--seed", "41", "--timezone", TIMEZONE)
    events = root / "p" / "events"
    return Project(root / "p", events, *transform_outcome(events, root / "transform"))
