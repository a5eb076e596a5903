"""What the ingestion endpoints received, appended to ``DIR/received/<kind>.jsonl``.

One line per accepted record: ``{"record": <as sent>, "endpoint", "wire" (``json-body``,
``ndjson-body``, ``form:json``, ``form:base64``, ``query:json``, ``query:base64``), "gzip",
"batch" (records in the request), "received_at", "ip", "geolocate", "auth"}``. Records refused by validation go to ``rejected.jsonl`` with the
reason. Tests, and later the dual-write proxy's tests, read them back with
``read_received``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

KINDS: tuple[str, ...] = ("track", "import", "engage", "groups", "rejected")


class ReceivedStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def append(self, kind: str, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        payload = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        with open(self.root / f"{kind}.jsonl", "ab") as fh:
            fh.write(payload)
        self.counts[kind] += len(entries)


def iter_received(root: Path, kind: str) -> Iterator[dict[str, Any]]:
    """Stream the entries stored for ``kind`` (one of ``KINDS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {list(KINDS)}")
    path = root / f"{kind}.jsonl"
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def read_received(data_dir: Path, kind: str, *, received_dir: Path | None = None) -> list[dict[str, Any]]:
    """The records (``entry["record"]``) an emulator stored for ``kind``, oldest first."""
    root = received_dir if received_dir is not None else Path(data_dir) / "received"
    return [entry["record"] for entry in iter_received(root, kind)]
