"""Small Mixpanel projects in the generator's on-disk layout (contracts §1), and a server."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

SA_USER, SA_SECRET = "sa-user", "sa-secret"
API_SECRET = "api-secret-1"
TOKEN = "tok-123"
PROJECT_ID = 4242


class FakeClock:
    """An injectable wall clock: tests move it instead of sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _gz_lines(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        for row in rows:
            fh.write(row.encode() if isinstance(row, str) else orjson.dumps(row))
            fh.write(b"\n")


def build_project(
    root: Path,
    *,
    events: dict[str, list[Any]] | None = None,
    users: list[dict[str, Any]] | None = None,
    groups: dict[str, list[dict[str, Any]]] | None = None,
    schema: list[dict[str, Any]] | None = None,
    timezone: str = "America/Los_Angeles",
    legacy_time: bool = False,
    project_id: int = PROJECT_ID,
) -> Path:
    """Write a project as `mp2amp generate` lays it out; a str row is written verbatim."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "project_id": project_id, "timezone": timezone, "legacy_time": legacy_time,
        "id_merge": "simplified", "start": min(events or {"2024-01-01": []}), "days": len(events or {}),
        "seed": 1, "users": len(users or []), "industries": ["ecommerce"], "dirty": 0.0,
        "group_keys": sorted(groups or {}), "events_written": sum(len(v) for v in (events or {}).values()),
    }
    (root / "project.json").write_bytes(orjson.dumps(meta))
    for day, rows in (events or {}).items():
        _gz_lines(root / "events" / f"{day}.jsonl.gz", rows)
    _gz_lines(root / "profiles" / "users.jsonl.gz", users or [])
    for key, rows in (groups or {}).items():
        _gz_lines(root / "profiles" / "groups" / f"{key}.jsonl.gz", rows)
    (root / "schema.json").write_bytes(orjson.dumps({"status": "ok", "results": schema or []}))
    return root


def ev(name: str, t: float, did: str = "u1", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": t, "distinct_id": did, "$insert_id": f"i{t}{name[:3]}", **props}}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_710_000_000.0)  # 2024-03-09T16:00:00Z


Serve = Callable[..., Any]


@pytest.fixture
def serve(clock: FakeClock) -> Iterator[Callable[..., Any]]:
    """``with serve(data_dir, **config) as (url, emulator):`` runs an emulator in a thread."""

    @contextmanager
    def _serve(data_dir: Path, **overrides: Any) -> Iterator[tuple[str, MixpanelEmulator]]:
        settings: dict[str, Any] = {
            "data_dir": data_dir, "service_account": f"{SA_USER}:{SA_SECRET}", "api_secret": API_SECRET,
            "token": TOKEN, "clock": clock, "export_per_hour": None, "export_per_second": None,
            "query_per_hour": None, "lexicon_per_minute": None,
        }
        settings.update(overrides)
        emulator = MixpanelEmulator(MixpanelConfig(**settings))
        with emulator.running() as url:
            yield url, emulator

    yield _serve


SA_AUTH = (SA_USER, SA_SECRET)
SA_PARAMS = {"project_id": str(PROJECT_ID)}


class Kit:
    """The helpers above, handed to tests as a fixture (test dirs are not packages)."""

    SA_AUTH = SA_AUTH
    SA_PARAMS = SA_PARAMS
    SA_USER = SA_USER
    SA_SECRET = SA_SECRET
    API_SECRET = API_SECRET
    TOKEN = TOKEN
    PROJECT_ID = PROJECT_ID
    build_project = staticmethod(build_project)
    ev = staticmethod(ev)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
