"""Helpers for identity tests (a ``kit`` fixture: build records, run both passes)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mp2amp.identity import IdentityGraph


class Kit:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.counter = itertools.count(1)
        self.graphs: list[IdentityGraph] = []

    def ev(self, event: str, props: dict[str, Any], t: float | None = None) -> dict[str, Any]:
        """A Mixpanel export record; ``t`` defaults to an increasing time."""
        properties = dict(props)
        properties["time"] = t if t is not None else 1_700_000_000 + next(self.counter)
        return {"event": event, "properties": properties}

    def build(self, mode: str, records: Iterable[dict[str, Any]], **kwargs: Any) -> IdentityGraph:
        sub = self.workdir / f"g{len(self.graphs)}"
        graph = IdentityGraph(mode, sub, **kwargs)
        self.graphs.append(graph)
        for record in records:
            graph.observe(record)
        graph.finish()
        return graph

    @staticmethod
    def ids(graph: IdentityGraph, record: dict[str, Any]) -> tuple[str | None, str | None]:
        resolved = graph.resolve(record["properties"])
        return resolved.user_id, resolved.device_id


@pytest.fixture
def kit(tmp_path: Path) -> Iterable[Kit]:
    made = Kit(tmp_path)
    yield made
    for graph in made.graphs:
        graph.close()
