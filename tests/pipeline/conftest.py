"""Fixtures of the migrate tests: one small generated project per session."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test modules import migrate_kit

from migrate_kit import TIMEZONE, Key, Project, mp2amp, transform_outcome

from mp2amp.config import Config, load_config
from mp2amp.transform.offline import transform_files


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


@pytest.fixture(scope="session")
def scheme_3_expected(project: Project, tmp_path_factory: pytest.TempPathFactory,
                      ) -> frozenset[Key]:
    """What the transform emits for the project under scheme 3 (the offline transform,
    its settings' scheme set to 3)."""
    work = tmp_path_factory.mktemp("scheme3")
    config = load_config(None, {"mixpanel.timezone": TIMEZONE, "run.workdir": str(work)})
    made = Config.transform_settings
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, "transform_settings",
                      lambda self: dataclasses.replace(made(self), insert_id_scheme=3))
        out, rejects = io.BytesIO(), io.BytesIO()
        transform_files(config, [str(project.events)], out, rejects)
    return frozenset((e.get("device_id") or e.get("user_id"), e["insert_id"])
                     for e in map(orjson.loads, out.getvalue().splitlines()))
