"""The ID journal (ids.log) in the all-or-nothing store: a request whose journal line fails is
taken back whole (events, dedup, journal), and a failed or short journal write never leaves a
torn line for the next one to be glued to."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from amplitude_emulator_helpers import API_KEY, Api, event

from mp2amp.emulators.amplitude.store import EventStore


class _HalfWritten:
    """An append handle whose write lands half its bytes, then fails (the disk is full)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        self.real.write(bytes(data)[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


class _Short:
    """A raw handle that lands at most 5 bytes per write (as a raw write may)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        return int(self.real.write(bytes(data)[:5]))

    def close(self) -> None:
        self.real.close()


def _batch(api: Api, events: list[dict[str, Any]]) -> int:
    status, raw = api.request("POST", "/batch",
                              orjson.dumps({"api_key": API_KEY, "events": events}),
                              {"Content-Type": "application/json"})
    if status == 500:  # the emulator's own answer, not a crash
        assert "nothing was stored, send the request again" in orjson.loads(raw)["error"]
    return status


def test_a_failed_journal_write_leaves_nothing_for_a_restart_to_replay(
        start_emulator: Callable[..., Api]) -> None:
    first = start_emulator(save_every_s=3600)
    assert first.send([event(1, user_id="user-00001", user_properties={"$add": {"n": 1}})])[0] == 200
    store = first.emulator.store
    real = store._ids_fh
    store._ids_fh = _HalfWritten(real)
    retried = [event(2, user_id="user-00001", user_properties={"$add": {"n": 1}}),
               event(3, user_id="user-00002")]
    try:
        assert _batch(first, retried) == 500
    finally:
        store._ids_fh = real
    events = [line for path in (store.root / "events").glob("*.jsonl")
              for line in path.read_bytes().splitlines()]
    assert len(events) == 1  # the events line was cut back with the journal's
    # a kill now: the journal holds neither the failed request's properties nor its counts
    second = start_emulator(data_dir=store.root, save_every_s=3600)
    aid = second.emulator.ids.lookup_user("user-00001")
    assert aid is not None and second.emulator.ids.user_props[aid] == {"n": 1}
    assert second.stats()["events_stored"] == 1
    assert second.send(retried)[0] == 200  # the client's retry is not a duplicate
    rows = {r["$insert_id"]: r["user_properties"] for r in second.exported_rows()}
    assert sorted(rows) == ["insert-000001", "insert-000002", "insert-000003"]
    assert rows["insert-000002"] == {"n": 2}


def test_a_failed_events_write_leaves_the_earlier_journal_alone(
        start_emulator: Callable[..., Api]) -> None:
    first = start_emulator(save_every_s=3600)
    assert first.send([event(1, user_id="user-00001")])[0] == 200
    # restarted without a save: ids.log still holds the first request, not yet opened here
    second = start_emulator(data_dir=first.emulator.store.root, save_every_s=3600)
    store = second.emulator.store
    handles = store._handles

    def disk_full(hour: str) -> tuple[Any, Any]:
        events_fh, dedup_fh = handles(hour)
        return _HalfWritten(events_fh), dedup_fh

    store._handles = disk_full  # type: ignore[method-assign]
    try:
        assert _batch(second, [event(2, user_id="user-00002")]) == 500
    finally:
        store._handles = handles  # type: ignore[method-assign]
    assert second.send([event(2, user_id="user-00002")])[0] == 200
    third = start_emulator(data_dir=store.root, save_every_s=3600)
    assert {"user-00001", "user-00002"} <= third.emulator.ids.users.keys()


def test_a_short_journal_write_is_completed(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    store.append_ids([["u", "user-00001", 100_000_000_001]])
    store._ids_fh = _Short(store._ids_fh)
    store.append_ids([["u", "user-00002", 100_000_000_002], ["c", 2, 0]])
    store.close()
    assert store.read_ids() == [["u", "user-00001", 100_000_000_001],
                                ["u", "user-00002", 100_000_000_002], ["c", 2, 0]]


def test_a_failed_journal_write_is_cut_back_for_the_next_line(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    store.append_ids([["u", "user-00001", 100_000_000_001]])
    real = store._ids_fh
    store._ids_fh = _HalfWritten(real)
    try:
        store.append_ids([["u", "user-00002", 100_000_000_002]])
    except OSError:
        pass
    else:
        raise AssertionError("the write should have failed")
    store._ids_fh = real
    store.append_ids([["u", "user-00002", 100_000_000_002]])
    store.close()
    assert (tmp_path / "ids.log").read_bytes().count(b"\n") == 2
    assert store.read_ids() == [["u", "user-00001", 100_000_000_001],
                                ["u", "user-00002", 100_000_000_002]]
