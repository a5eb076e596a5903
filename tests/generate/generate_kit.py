"""Helpers of the generator tests: build a project, read its records back (joining split lines)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mp2amp.generate import GenerateConfig, GenerateResult, generate_project


@dataclass
class Project:
    root: Path
    result: GenerateResult

    def json(self, rel: str) -> Any:
        return orjson.loads((self.root / rel).read_bytes())

    def jsonl(self, rel: str) -> list[Any]:
        with gzip.open(self.root / rel, "rb") as fh:
            return [orjson.loads(line) for line in fh]

    def truth_rows(self) -> list[list[str]]:
        with gzip.open(self.root / "truth/event_person.tsv.gz", "rt", encoding="utf-8") as fh:
            return [line.rstrip("\n").split("\t") for line in fh]


@dataclass
class Line:
    file: str
    line: int           # 1-based line where the record starts
    record: dict[str, Any] | None
    kind: str           # "ok" | "split" | "malformed"
    raw: bytes


def read_lines(root: Path) -> Iterator[Line]:
    """Every record of every day file; a split record is joined with the next line."""
    for path in sorted((root / "events").glob("*.jsonl*")):
        rel = f"events/{path.name}"
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            lines = fh.read().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        i = 0
        while i < len(lines):
            raw = lines[i]
            try:
                yield Line(rel, i + 1, orjson.loads(raw), "ok", raw)
                i += 1
                continue
            except orjson.JSONDecodeError:
                pass
            if i + 1 < len(lines):
                try:
                    joined = orjson.loads(raw + lines[i + 1])
                    yield Line(rel, i + 1, joined, "split", raw + lines[i + 1])
                    i += 2
                    continue
                except orjson.JSONDecodeError:
                    pass
            yield Line(rel, i + 1, None, "malformed", raw)
            i += 1


def build(root: Path, **kwargs: Any) -> Project:
    return Project(root, generate_project(GenerateConfig(out=root, **kwargs)))
