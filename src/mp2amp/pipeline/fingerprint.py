"""The run's fingerprint (what must not change between a run and its resume), with a
digest of every setting that decides which events a window emits.

Why: a resumed run cuts each window into batches again and skips those the ledger has as
done, by their ids (window, number). Those ids name the same events only if the transform
emits the same events: a privacy rule, tracking plan, excluded-users file, time zone or
session gap changed between a run and its resume shifted the cuts, so that a done batch id
could skip events never sent, or send others twice (the end-of-run check then found the
windows unbalanced, after the mixed data had gone out). The run's fingerprint holds this
digest, so such a resume is refused up front.

Files the settings name (plan, excluded users, the identity table) count by their
content; the hash salt by a digest of it (the ledger never holds a secret). Settings that only tune speed or the
connection (workers, memory, hosts, credentials, Export API limits) are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import orjson

from mp2amp.config import Config
from mp2amp.config.sections import Secret
from mp2amp.load.settings import UploadSettings
from mp2amp.transform.insert_id import SCHEME as INSERT_ID_SCHEME

# [mixpanel] fields that change what is read or how times are read
_MIXPANEL_FIELDS = ("project_id", "timezone", "legacy_time", "timezone_changes", "id_merge")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _content(path: Path) -> str | None:
    """A file's content digest, read 1 MiB at a time (an identity table may be gigabytes:
    never held whole); a folder's by its files' names and sizes (reading every byte of a
    folder of tables on each run would cost minutes); None for what cannot be read here
    (missing: the config check reports it; s3:// and gs:// tables: their location counts)."""
    try:
        if path.is_dir():
            listing = sorted((str(p.relative_to(path)), p.stat().st_size)
                             for p in path.rglob("*") if p.is_file())
            return "folder:" + _digest(orjson.dumps(listing))
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        return sha.hexdigest()[:16]
    except OSError:
        return None


def _canonical(value: Any) -> Any:
    """JSON-ready, with files as their content's digest and secrets as a digest."""
    if isinstance(value, Secret):
        return "secret:" + _digest(b"mp2amp-fingerprint\x00" + value.reveal().encode())
    if isinstance(value, Path):
        # by content alone when it can be read: the same plan moved elsewhere is the same
        content = _content(value)
        return {"file": str(value)} if content is None else {"content": content}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def events_fingerprint(config: Config) -> str:
    doc = {
        "mixpanel": {name: _canonical(getattr(config.mixpanel, name))
                     for name in _MIXPANEL_FIELDS},
        "transform": _canonical(config.transform),
        "privacy": _canonical(config.privacy),
        # by its content, as the files [transform] and [privacy] name (None: no table, the
        # same digest as before the table's content counted)
        "identity_table": None if config.source.identity_table is None
        else _canonical(Path(config.source.identity_table)),
    }
    return _digest(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str))


def run_fingerprint(config: Config, upload: UploadSettings) -> dict[str, Any]:
    """What must not change between a run and its resume (batch ids depend on it)."""
    return {
        "source": {"files": list(config.source.files),
                   "from_date": str(config.source.from_date),
                   "to_date": str(config.source.to_date),
                   **({"export_window_days": config.source.export_window_days}
                      if config.source.export_window_days != 1 else {})},
        "id_merge": config.mixpanel.id_merge,
        "endpoint": upload.endpoint,
        "concurrency": upload.concurrency,
        "max_events": upload.max_events,
        "max_bytes": upload.limits.max_bytes,
        "output_dir": config.amplitude.output_dir,
        # what decides which events each window emits, and so where its batches are cut
        # (a changed privacy rule or plan would shift them under the same batch ids)
        "events": events_fingerprint(config),
        # how insert_ids are made: a resume under another scheme would resend in-flight
        # batches under new ids (duplicates), so a run started by an mp2amp that recorded
        # none (scheme 1) is refused too
        "insert_ids": INSERT_ID_SCHEME,
    }


FINGERPRINT_NAMES = {
    "insert_ids": f"the insert_id scheme (this mp2amp makes scheme-{INSERT_ID_SCHEME} ids; the "
                  "run was started by an earlier version: finish it with that version)",
    "events": "the [mixpanel] time and project settings, [transform], [privacy] or the files "
              "they name",
}


def changed_keys(known: str, now: dict[str, Any]) -> list[str] | None:
    """The fingerprint keys that differ, None when they all match. A run started by an
    older mp2amp lacks the newer keys: those are not compared (it could not resume)."""
    try:
        was = orjson.loads(known)
    except orjson.JSONDecodeError:
        return ["fingerprint"]
    if not isinstance(was, dict):
        return ["fingerprint"]
    now = orjson.loads(orjson.dumps(now))  # the stored form: tuples as lists, and so on
    was.setdefault("insert_ids", 1)  # runs that recorded none made scheme-1 ids
    changed = sorted(k for k in was.keys() | now.keys()
                     if k in was and was[k] != now.get(k))
    return changed or None
