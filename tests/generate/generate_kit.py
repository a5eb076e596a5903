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


def tree_difference(first: Path, second: Path) -> str:
    """What differs between two generated trees, for an assertion message: the files, and
    for a gzip file whether its records differ or only its compressed bytes (a flaky
    same-seed comparison once showed only a different ``identity/mappings.jsonl.gz`` sha)."""
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    a, b = files(first), files(second)
    notes = [f"only in {first.name}: {name}" for name in sorted(a.keys() - b.keys())]
    notes += [f"only in {second.name}: {name}" for name in sorted(b.keys() - a.keys())]
    for name in sorted(a.keys() & b.keys()):
        if a[name] == b[name]:
            continue
        left, right = a[name], b[name]
        if name.endswith(".gz"):
            left, right = gzip.decompress(left), gzip.decompress(right)
            if left == right:
                notes.append(f"{name}: same records, different gzip bytes")
                continue
        lines_a, lines_b = left.split(b"\n"), right.split(b"\n")
        at = next((i for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)) if x != y),
                  min(len(lines_a), len(lines_b)))
        notes.append(f"{name}: {len(lines_a)} vs {len(lines_b)} lines, first difference at line "
                     f"{at + 1}: {lines_a[at:at + 1]!r} vs {lines_b[at:at + 1]!r}")
    return "; ".join(notes) or "no difference"
