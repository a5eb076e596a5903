"""Session-16 fixes of the Amplitude emulator's persistence: a kill -9 at any point of a
request's writes leaves the request wholly stored (events and the IDs they name) or wholly
absent (its retry then stored, not taken for a duplicate); the periodic state.json save
survives a failed write."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, SECRET, T0, Api, event

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude.store import EventStore, write_atomic

WRITER = "mp2amp.emulators.amplitude.server.write_atomic"  # the one state.json's save calls

FIRST = [event(1, user_id="user-00001", device_id="device-0001",
               user_properties={"$add": {"n": 1}})]
SECOND = [event(2, user_id="user-00001", device_id="device-0001",
                user_properties={"$add": {"n": 1}}),
          event(3, user_id="user-00002", device_id="device-0002"),
          event(4, device_id="device-0003")]
SECOND_IDS = {e["insert_id"] for e in SECOND}

# Ingests FIRST, then SECOND with the store's file handles wrapped so that the process
# SIGKILLs itself at the k-th write/flush call ("half": after landing half of that write).
_KILLER = """
import os, signal, sys
from pathlib import Path
import orjson
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator

data, mode, k = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
first, second = orjson.loads(sys.argv[4]), orjson.loads(sys.argv[5])
emu = AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=sys.argv[6], save_every_s=3600,
                                        now=lambda: float(sys.argv[7])))

def ingest(events):
    body = orjson.dumps({"api_key": sys.argv[6], "events": events})
    assert emu.ingestor.handle(orjson.loads(body), "batch", body)[0] == 200

ingest(first)
calls = [0]

class Killer:
    def __init__(self, real):
        self.real = real

    def _call(self, name, *args):
        calls[0] += 1
        if calls[0] == k:
            if mode == "half" and name in ("write", "writelines"):
                data = b"".join(args[0]) if name == "writelines" else bytes(args[0])
                self.real.write(data[: len(data) // 2])
                self.real.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return getattr(self.real, name)(*args)

    def write(self, data):
        return self._call("write", data)

    def writelines(self, parts):
        return self._call("writelines", parts)

    def flush(self):
        return self._call("flush")

    def close(self):
        self.real.close()

store = emu.store
handles = store._handles
store._handles = lambda hour: tuple(Killer(fh) for fh in handles(hour))
store._ids_fh = Killer(store._ids_fh)
ingest(second)
print(calls[0])
"""


def _run_killed(data: Path, mode: str, k: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KILLER, str(data), mode, str(k), orjson.dumps(FIRST).decode(),
         orjson.dumps(SECOND).decode(), API_KEY, str(T0)],
        capture_output=True, text=True, timeout=60, check=False)


def _restart(data: Path) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY, secret_key=SECRET,
                                             save_every_s=3600, now=lambda: T0 + 60))


def _ingest(emu: AmplitudeEmulator, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = orjson.dumps({"api_key": API_KEY, "events": events})
    status, answer = emu.ingestor.handle(orjson.loads(body), "batch", body)
    assert status == 200, answer
    return answer


def _assert_ids_name_every_stored_event(emu: AmplitudeEmulator) -> list[dict[str, Any]]:
    ids = emu.ids
    stored = list(emu.store.iter_events())
    for e in stored:
        person = ids.canonical(e["_a"])
        assert e["_a"] < ids.next_id, f"{e['insert_id']}: its amplitude_id can be handed out again"
        if e.get("user_id"):
            assert e["user_id"] in ids.users, f"{e['insert_id']}: its user is unknown"
            assert ids.canonical(ids.users[e["user_id"]]) == person
        if e.get("device_id"):
            assert e["device_id"] in ids.devices, f"{e['insert_id']}: its device is unknown"
            assert ids.canonical(ids.devices[e["device_id"]]) == person
    return stored


def _assert_consistent_after_restart(data: Path) -> str:
    """The request is wholly there or wholly absent; returns which."""
    emu = _restart(data)
    try:
        stored = _assert_ids_name_every_stored_event(emu)
        assert emu.ingestor.events_stored == len(stored)
        landed = {e["insert_id"] for e in stored} & SECOND_IDS
        assert landed in (set(), SECOND_IDS), f"only part of the request is stored: {landed}"
        outcome = "present" if landed else "absent"
        answer = _ingest(emu, SECOND)  # the client's retry (it never saw a 200)
        assert answer["events_ingested"] == len(SECOND)
        stored = _assert_ids_name_every_stored_event(emu)
        assert {e["insert_id"] for e in stored} == {e["insert_id"] for e in FIRST + SECOND}
        assert len(stored) == len(FIRST) + len(SECOND), "the retry is stored once, not twice"
        aid = emu.ids.lookup_user("user-00001")
        assert aid is not None and emu.ids.user_props[aid] == {"n": 2}
        # somebody new is not given an amplitude_id a stored event already names
        _ingest(emu, [event(5, user_id="user-00003", device_id="device-0005")])
        new = emu.ids.lookup_user("user-00003")
        assert new not in {emu.ids.canonical(e["_a"]) for e in stored}
        _assert_ids_name_every_stored_event(emu)
        return outcome
    finally:
        emu.store.close()


def _kill_points(tmp_path: Path) -> int:
    """How many write/flush calls SECOND makes (a run that is never killed)."""
    done = _run_killed(tmp_path / "count", "before", 10_000)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_a_kill_9_at_any_write_leaves_the_request_whole_or_absent(tmp_path: Path) -> None:
    calls = _kill_points(tmp_path)
    assert calls >= 3  # events, dedup and the ID journal at least
    outcomes = set()
    for k in range(1, calls + 1):
        for mode in ("before", "half"):
            data = tmp_path / f"{mode}-{k}"
            killed = _run_killed(data, mode, k)
            assert killed.returncode == -9, killed.stderr
            outcomes.add(_assert_consistent_after_restart(data))
    assert outcomes == {"absent"}  # the client never had its 200: nothing half-kept


def test_a_request_never_killed_is_kept_whole(tmp_path: Path) -> None:
    _kill_points(tmp_path)
    assert _assert_consistent_after_restart(tmp_path / "count") == "present"


class _Recorder:
    """A store file handle that notes which file each write went to, in order."""

    def __init__(self, real: Any, order: list[str]) -> None:
        self.real, self.order = real, order

    def write(self, data: Any) -> Any:
        self.order.append(self.real.name)
        return self.real.write(data)

    def writelines(self, parts: Any) -> None:
        self.order.append(self.real.name)
        self.real.writelines(parts)

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


def test_a_torn_request_on_disk_is_taken_back_on_start(start_emulator: Callable[..., Api]) -> None:
    """What a kill leaves when the request's last write did not land: the restart keeps
    neither its events nor its IDs, and the retry is stored."""
    first = start_emulator(save_every_s=3600)
    assert first.send(FIRST)[0] == 200
    data = first.emulator.config.data_dir
    sizes = {p: p.stat().st_size for p in data.rglob("*") if p.is_file()}
    store = first.emulator.store
    order: list[str] = []
    handles = store._handles
    def recorded(hour: str) -> tuple[Any, Any]:
        events_fh, dedup_fh = handles(hour)
        return _Recorder(events_fh, order), _Recorder(dedup_fh, order)

    store._handles = recorded  # type: ignore[method-assign]
    store._ids_fh = _Recorder(store._ids_fh, order)
    try:
        assert first.send(SECOND)[0] == 200
    finally:
        store._handles = handles  # type: ignore[method-assign]
        store._ids_fh = store._ids_fh.real
    last = Path(order[-1])  # a kill just before this write leaves the others landed
    with open(last, "r+b") as fh:
        fh.truncate(sizes.get(last, 0))
    assert _assert_consistent_after_restart(data) == "absent"


# --- the periodic state.json save -------------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_failed_periodic_save_is_logged_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = write_atomic
    failures = [0]

    def full_disk_twice(path: Path, data: bytes) -> None:
        if failures[0] < 2:
            failures[0] += 1
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(WRITER, full_disk_twice)
    data = tmp_path / "amp"
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY, save_every_s=0.05,
                                            now=lambda: T0))
    caplog.set_level(logging.ERROR)
    with emu.running() as url:
        api = Api(url, emu)
        assert api.send(FIRST)[0] == 200
        assert _wait_for(lambda: failures[0] == 2)
        assert _wait_for(lambda: (data / "state.json").exists()), "the saver stopped saving"
        assert not (data / "ids.log").exists()  # the save went through, journal reset
        assert api.send(SECOND)[0] == 200
        assert _wait_for(lambda: not (data / "ids.log").exists())  # still saving
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(messages) == 2 and all("state.json" in m for m in messages), messages
    state = orjson.loads((data / "state.json").read_bytes())
    assert {"user-00001", "user-00002"} <= state["ids"]["users"].keys()


def test_the_final_save_is_made_after_periodic_saves_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = write_atomic
    broken = [True]

    def full_disk(path: Path, data: bytes) -> None:
        if broken[0]:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(WRITER, full_disk)
    data = tmp_path / "amp"
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY, save_every_s=0.05,
                                            now=lambda: T0))
    with emu.running() as url:
        assert Api(url, emu).send(FIRST)[0] == 200
        time.sleep(0.3)  # a few failed periodic saves
        assert not (data / "state.json").exists()
        broken[0] = False  # the disk has room again by shutdown
    state = orjson.loads((data / "state.json").read_bytes())
    assert "user-00001" in state["ids"]["users"]
    assert not (data / "ids.log").exists()


def test_a_failed_final_save_keeps_the_journal_for_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(WRITER, full_disk)
    data = tmp_path / "amp"
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY, save_every_s=3600,
                                            now=lambda: T0))
    caplog.set_level(logging.ERROR)
    with emu.running() as url:
        assert Api(url, emu).send(FIRST)[0] == 200
    assert any("ids.log" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    again = _restart(data)
    try:
        assert again.ids.lookup_user("user-00001") is not None
        assert again.ingestor.events_stored == 1
    finally:
        again.store.close()
    assert os.path.exists(data / "ids.log")


def test_events_rewritten_by_a_deletion_are_not_taken_for_a_torn_request(tmp_path: Path) -> None:
    """A deletion shrinks an events file under the last request's journal line: a restart
    (before the state was saved) keeps the rest of that request, its dedup keys included."""
    store = EventStore(tmp_path)
    body = orjson.dumps({"api_key": API_KEY, "events": [event(1, user_id="user-00001")]})
    annotation = {"t": int(T0 * 1000), "p": "0" * 24, "r": None, "a": [100_000_000_001],
                  "u": [None], "g": {}}
    store.append(body, annotation, ["device-0001\x1finsert-000001"], int(T0 * 1000),
                 [["u", "user-00001", 100_000_000_001]])
    assert store.rewrite_without({100_000_000_001}, lambda aid: aid) == 1
    store.close()
    restarted = EventStore(tmp_path)
    restarted.repair()
    restarted.load_dedup(int(T0 * 1000))
    assert "device-0001\x1finsert-000001" in restarted.seen  # a retry is still a duplicate
    assert ["u", "user-00001", 100_000_000_001] in restarted.read_ids()
