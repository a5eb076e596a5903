"""Review of 792ffd8: the Amplitude API key bound on resume (recorded with the first batch
sent, dropped when Amplitude refused the key outright, ``--new-api-key``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mp2amp.config import Config, load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.api_key_binding import API_KEY_META
from mp2amp.pipeline.migrate import migrate
from shared_kit import free_port as _free_port
from shared_kit import stored_by_source_id as _stored

KEY, WRONG, OTHER = "review-e-key-a", "review-e-key-typo", "review-e-key-b"
T0 = 1709251200
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}


class Crash(Exception):
    """Stands for a crash (kill -9, OOM) at a chosen moment."""



def _emulator(data: Path, key: str, port: int = 0, **kw: Any) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=key, port=port, **kw))



def _write_days(folder: Path, days: int = 2, per_day: int = 30, users: int = 0) -> set[str]:
    """``users``: that many users share a day's events (0: one user per event)."""
    folder.mkdir(parents=True)
    ids = set()
    for d in range(1, days + 1):
        ids |= {f"ev-{d}-{i}" for i in range(per_day)}
        (folder / f"2024-03-0{d}.jsonl").write_text("".join(json.dumps({
            "event": "Played", "properties": {
                "time": T0 + d * 86400 + i * 60,
                "distinct_id": f"user-{i % users if users else f'{d}-{i}'}",
                "$insert_id": f"ev-{d}-{i}"}}) + "\n" for i in range(per_day)))
    return ids


def _config(tmp_path: Path, host: str, key: str, **extra: Any) -> Config:
    overrides = {"source.files": [str(tmp_path / "events")], "amplitude.api_host": host,
                 "run.workdir": str(tmp_path / "work"), "run.concurrency": 2, **extra}
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": key})


def _meta(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "work" / "ledger.sqlite") as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _crash_at_batch(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    done = Ledger.batch_done
    calls: list[int] = []

    def crash(self: Ledger, batch_id: str, **counts: int) -> str:
        calls.append(1)
        if len(calls) == n:
            raise Crash("stopped here")
        return done(self, batch_id, **counts)

    monkeypatch.setattr(Ledger, "batch_done", crash)


# --- --new-api-key with a key Amplitude refuses -------------------------------------------


def test_new_api_key_refused_outright_leaves_the_original_key_usable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_days(tmp_path / "events")
    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    with _emulator(tmp_path / "amp", KEY, port).running() as url:
        _crash_at_batch(monkeypatch, 2)
        with pytest.raises(Crash):
            migrate(_config(tmp_path, host, KEY), upload_overrides=FAST)
        monkeypatch.undo()
        assert API_KEY_META in _meta(tmp_path)
        # the user thinks the key was regenerated and pastes a wrong one: 400 Invalid API key
        with pytest.raises(TerminalError, match="refused the API key"):
            migrate(_config(tmp_path, host, WRONG), resume=True, new_api_key=True,
                    upload_overrides=FAST)
        # nothing went in under WRONG (every answer a 400): the run is A's as before
        result = migrate(_config(tmp_path, host, KEY), resume=True, upload_overrides=FAST)
        assert result.exit_code == 0
        assert set(_stored(url)) == {f"ev-{d}-{i}" for d in (1, 2) for i in range(30)}


# --- a first attempt that never reached Amplitude ------------------------------------------


def test_a_key_refused_outright_after_a_run_that_never_connected_stays_correctable(
        tmp_path: Path) -> None:
    _write_days(tmp_path / "events")
    port = _free_port()  # nothing listens there yet: connection refused
    host = f"http://127.0.0.1:{port}"
    with pytest.raises(TerminalError, match="cannot connect to Amplitude"):
        migrate(_config(tmp_path, host, WRONG), upload_overrides=FAST)
    with _emulator(tmp_path / "amp", KEY, port).running() as url:
        with pytest.raises(TerminalError, match="refused the API key"):
            migrate(_config(tmp_path, host, WRONG), resume=True, upload_overrides=FAST)
        assert _stored(url) == {}
        # the user sets the right key: nothing ever went in anywhere
        result = migrate(_config(tmp_path, host, KEY), resume=True, upload_overrides=FAST)
        assert result.exit_code == 0
        assert len(_stored(url)) == 60


# --- parked events replayed under a run not bound yet --------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


def test_parked_events_replayed_bind_the_run_before_they_leave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_days(tmp_path / "events", days=1, per_day=30, users=1)
    clock = _Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 1, "max_events": 10}
    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    with _emulator(tmp_path / "amp", KEY, port, daily_quota=25, now=clock).running():
        first = migrate(_config(tmp_path, host, KEY), upload_overrides=upload)
        assert first.totals["parked"] > 0
        # a ledger an earlier mp2amp wrote: no key digest
        with sqlite3.connect(tmp_path / "work" / "ledger.sqlite") as db:
            db.execute("DELETE FROM meta WHERE key = ?", (API_KEY_META,))
        clock.offset += 25 * 3600
        resolve = Ledger.resolve_parked

        def crash(self: Ledger, origin: str, outcome: str) -> None:
            if outcome == "accepted":
                raise Crash("killed right after Amplitude's 200")
            resolve(self, origin, outcome)

        monkeypatch.setattr(Ledger, "resolve_parked", crash)
        with pytest.raises(Crash):
            migrate(_config(tmp_path, host, KEY), resume=True, upload_overrides=upload)
        monkeypatch.undo()
    # the parked events went into KEY's project: the run must be bound to KEY now
    with _emulator(tmp_path / "amp-b", OTHER).running() as other, \
            pytest.raises(TerminalError, match="not the key this run started with"):
        migrate(_config(tmp_path, other, OTHER), resume=True, upload_overrides=upload)
