"""Session-16 third review of 1659203: the Amplitude emulator's deletions journal (``f`` and
``c`` lines in ids.log, the ``[]`` closing line at start) and the uploader's count of a
throttled user across its devices.

Each ``xfail(strict=True)`` test pins one defect and asserts the correct behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, SECRET, Api, Clock, event

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude import store as store_module
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.errors import InputError

WRITER = "mp2amp.emulators.amplitude.server.write_atomic"  # the one state.json's save calls
REWRITER = "mp2amp.emulators.amplitude.store.write_atomic"  # rewrite_without's


class _Killed(BaseException):
    """Stands for a kill -9: nothing after it runs, nothing is saved."""


# --- helpers ----------------------------------------------------------------------------


def _emu(data: Path, now: Any, **kw: Any) -> AmplitudeEmulator:
    return AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY, secret_key=SECRET,
                                             save_every_s=3600, now=now, **kw))


def _ingest(emu: AmplitudeEmulator, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = orjson.dumps({"api_key": API_KEY, "events": events})
    status, answer = emu.ingestor.handle(orjson.loads(body), "batch", body)
    assert status == 200, answer
    return answer


def _stored_ids(emu: AmplitudeEmulator) -> set[str]:
    return {e["insert_id"] for e in emu.store.iter_events()}


def _full_disk(*args: Any) -> None:
    raise OSError(28, "No space left on device")


def _two_hours_of_two_users(data: Path, clock: Clock) -> AmplitudeEmulator:
    """user-A (to be deleted) and user-B, each with an event in two hour files; user-A's
    deletion is submitted (one advance away from done)."""
    emu = _emu(data, clock)
    _ingest(emu, [event(1, user_id="user-A", device_id="device-A"),
                  event(2, user_id="user-B", device_id="device-B")])
    clock.advance(3600)
    _ingest(emu, [event(3, user_id="user-A", device_id="device-A"),
                  event(4, user_id="user-B", device_id="device-B")])
    emu.save()
    emu.jobs.create({"user_ids": ["user-A"]}, emu.ids)
    emu.jobs.advance(emu.ids, emu.store)  # staging -> submitted
    assert len(list(emu.store.hour_files())) == 2
    return emu


def _advance_over_http(emu: AmplitudeEmulator) -> tuple[int, Any]:
    with emu.running() as url:
        status, body = Api(url, emu).post_json("/_emulator/deletions/advance", {})
    return status, body


# --- a deletion interrupted part-way ----------------------------------------------------


def test_a_deletion_killed_part_way_keeps_the_stored_count_true(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, clock = tmp_path / "amp", Clock()
    emu = _two_hours_of_two_users(data, clock)
    calls = [0]
    write = store_module.write_atomic

    def killed_on_the_second_file(path: Path, payload: bytes) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise _Killed
        write(path, payload)

    monkeypatch.setattr(REWRITER, killed_on_the_second_file)
    with pytest.raises(_Killed):
        emu.jobs.advance(emu.ids, emu.store)  # submitted -> done, killed in the rewrite
    emu.store.close()
    monkeypatch.undo()
    # restarted: the job is still submitted; the next advance finishes it
    again = _emu(data, clock)
    assert again.jobs.jobs[0]["status"] == "submitted"
    status, _ = _advance_over_http(again)
    assert status == 200 and again.jobs.jobs[0]["status"] == "done"
    assert _stored_ids(again) == {"insert-000002", "insert-000004"}
    assert again.ingestor.events_stored == 2, "events_stored still counts erased events"


def test_a_deletion_whose_rewrite_failed_part_way_keeps_the_stored_count_true(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, clock = tmp_path / "amp", Clock()
    emu = _two_hours_of_two_users(data, clock)
    calls = [0]
    write = store_module.write_atomic

    def full_on_the_second_file(path: Path, payload: bytes) -> None:
        calls[0] += 1
        if calls[0] == 2:
            _full_disk()
        write(path, payload)

    try:
        with emu.running() as url:
            api = Api(url, emu)
            monkeypatch.setattr(REWRITER, full_on_the_second_file)
            status, _ = api.request("POST", "/_emulator/deletions/advance", b"")
            assert status == 500
            monkeypatch.undo()  # room again: the same advance once more
            status, _ = api.post_json("/_emulator/deletions/advance", {})
            assert status == 200 and emu.jobs.jobs[0]["status"] == "done"
            assert _stored_ids(emu) == {"insert-000002", "insert-000004"}
            assert api.stats()["events_stored"] == 2, "events_stored still counts erased events"
    finally:
        emu.store.close()


# --- the order of ids.log: what the forgetting must come after ---------------------------


def test_ids_pending_from_a_failed_request_are_not_replayed_after_the_deletion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, clock = tmp_path / "amp", Clock()
    emu = _emu(data, clock)
    _ingest(emu, [event(1, user_id="user-A", device_id="device-A")])
    erased = emu.ids.lookup_user("user-A")
    emu.jobs.create({"user_ids": ["user-A"]}, emu.ids)
    emu.jobs.advance(emu.ids, emu.store)  # staging -> submitted
    emu.save()
    # the disk fills: user-A's request from a new device is answered 500, nothing stored
    # (the new device's amplitude_id is kept in memory, journaled with the next line)
    monkeypatch.setattr(EventStore, "append", _full_disk)
    body = orjson.dumps({"api_key": API_KEY, "events": [
        event(2, user_id="user-A", device_id="device-A2")]})
    with pytest.raises(OSError):
        emu.ingestor.handle(orjson.loads(body), "batch", body)
    monkeypatch.undo()
    assert emu.ids.devices["device-A2"] == erased
    with emu.running() as url:
        api = Api(url, emu)
        monkeypatch.setattr(WRITER, _full_disk)  # state.json cannot be written either
        assert api.post_json("/_emulator/deletions/advance", {})[0] == 200  # done
        assert "device-A2" not in emu.ids.devices  # forgotten, in memory
    monkeypatch.undo()
    again = _emu(data, clock)
    try:
        assert again.ids.lookup_user("user-A") is None
        assert "device-A2" not in again.ids.devices, "the erased person's device is back"
        # so an anonymous event of that device is a new person, not the erased one
        _ingest(again, [event(3, device_id="device-A2")])
        assert [e["_a"] for e in again.store.iter_events()] != [erased]
    finally:
        again.store.close()


# --- the closing line each start writes --------------------------------------------------


def test_a_start_on_a_full_disk_still_serves_what_was_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, clock = tmp_path / "amp", Clock()
    first = _emu(data, clock)
    _ingest(first, [event(1, user_id="user-A")])
    first.store.close()  # stopped on a full disk: state.json's save failed, ids.log kept
    assert (data / "ids.log").read_bytes().rstrip().endswith(b"]]]")  # the request's marker
    # restarted (to export what it holds) with the disk still full
    monkeypatch.setattr(EventStore, "append_ids", _full_disk)
    try:
        again = _emu(data, clock)
    except InputError:
        return  # a clear refusal would do as well
    try:
        assert _stored_ids(again) == {"insert-000001"}
        assert again.ids.lookup_user("user-A") is not None
    finally:
        again.store.close()


def test_a_deletion_whose_jobs_file_save_failed_still_counts_the_erased_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, clock = tmp_path / "amp", Clock()
    emu = _two_hours_of_two_users(data, clock)
    try:
        with emu.running() as url:
            api = Api(url, emu)
            monkeypatch.setattr("mp2amp.emulators.amplitude.privacy.write_atomic", _full_disk)
            api.request("POST", "/_emulator/deletions/advance", b"")
            monkeypatch.undo()
            # the events are gone and the job is done (in memory), whatever the answer was
            assert _stored_ids(emu) == {"insert-000002", "insert-000004"}
            assert emu.jobs.jobs[0]["status"] == "done"
            assert api.stats()["events_stored"] == 2, "events_stored still counts erased events"
    finally:
        emu.store.close()


def test_a_user_deleted_returning_and_deleted_again_replays_to_the_same_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two f lines in one ids.log (no state.json save ever succeeds), the returning user
    # first anonymous on the same device (inheriting its new amplitude_id) in between
    data, clock = tmp_path / "amp", Clock()
    emu = _emu(data, clock)
    monkeypatch.setattr(WRITER, _full_disk)
    with emu.running() as url:
        api = Api(url, emu)
        for first in (1, 3):
            assert api.send([event(first, device_id="device-X")])[0] == 200
            assert api.send([event(first + 1, device_id="device-X", user_id="user-A",
                                   user_properties={"n": first})])[0] == 200
            clock.advance(2)
            assert api.request("POST", "/api/2/deletions/users",
                               orjson.dumps({"user_ids": ["user-A"]}),
                               {"Content-Type": "application/json"},
                               auth=(API_KEY, SECRET))[0] == 200
            api.post_json("/_emulator/deletions/advance", {})
            assert api.post_json("/_emulator/deletions/advance", {})[1]["events_erased"] == 2
        assert api.send([event(5, device_id="device-Y", user_id="user-B")])[0] == 200
        ids = emu.ids
        before = (ids.users, ids.devices, ids.user_props, emu.ingestor.events_stored)
    monkeypatch.undo()
    again = _emu(data, clock)
    try:
        ids = again.ids
        assert (ids.users, ids.devices, ids.user_props, again.ingestor.events_stored) == before
        assert _stored_ids(again) == {"insert-000005"}
    finally:
        again.store.close()


# --- behaviour the fixes above changed ---------------------------------------------------


def test_a_restart_after_a_deletion_killed_part_way_counts_the_stored_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no c line after the f: the count is taken from the files, before any further advance
    data, clock = tmp_path / "amp", Clock()
    emu = _two_hours_of_two_users(data, clock)
    write = store_module.write_atomic
    calls = [0]

    def killed_on_the_second_file(path: Path, payload: bytes) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise _Killed
        write(path, payload)

    monkeypatch.setattr(REWRITER, killed_on_the_second_file)
    with pytest.raises(_Killed):
        emu.jobs.advance(emu.ids, emu.store)
    emu.store.close()
    monkeypatch.undo()
    again = _emu(data, clock)
    try:
        assert again.ingestor.events_stored == len(list(again.store.iter_events())) == 3
        assert again.ids.lookup_user("user-A") is None  # the f line was replayed
    finally:
        again.store.close()


def test_a_failed_rewrite_answers_json_and_moves_no_other_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, clock = tmp_path / "amp", Clock()
    emu = _two_hours_of_two_users(data, clock)
    emu.jobs.create({"user_ids": ["user-B"]}, emu.ids)  # a second job, in staging
    assert [j["status"] for j in emu.jobs.jobs] == ["submitted", "staging"]
    try:
        with emu.running() as url:
            api = Api(url, emu)
            monkeypatch.setattr(REWRITER, _full_disk)
            status, raw = api.request("POST", "/_emulator/deletions/advance", b"")
            monkeypatch.undo()
            answer = orjson.loads(raw)
            assert status == 500 and answer["code"] == 500
            assert "No space left on device" in answer["error"]
            assert "advance again" in answer["error"]
            # the staging job did not move: advancing again moves each job one step
            assert [j["status"] for j in emu.jobs.jobs] == ["submitted", "staging"]
            status, body = api.post_json("/_emulator/deletions/advance", {})
            assert status == 200 and body["events_erased"] == 2
            assert [j["status"] for j in emu.jobs.jobs] == ["done", "submitted"]
            assert api.stats()["events_stored"] == 2
    finally:
        emu.store.close()


def test_a_deletions_file_save_that_failed_is_made_again_at_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    data, clock = tmp_path / "amp", Clock()
    emu = _two_hours_of_two_users(data, clock)
    with emu.running() as url:
        api = Api(url, emu)
        monkeypatch.setattr("mp2amp.emulators.amplitude.privacy.write_atomic", _full_disk)
        status, body = api.post_json("/_emulator/deletions/advance", {})
        assert status == 200 and body["events_erased"] == 2  # the work was done
        monkeypatch.undo()
        assert any("deletions.json" in r.getMessage() for r in caplog.records)
        saved = orjson.loads((data / "deletions.json").read_bytes())
        assert saved[0]["status"] == "submitted"  # not saved yet
    # stop() saves it
    assert orjson.loads((data / "deletions.json").read_bytes())[0]["status"] == "done"
    again = _emu(data, clock)
    try:
        assert again.jobs.jobs[0]["status"] == "done"
        assert again.ingestor.events_stored == 2
    finally:
        again.store.close()


def test_a_start_on_a_full_disk_logs_the_line_it_could_not_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    data, clock = tmp_path / "amp", Clock()
    first = _emu(data, clock)
    _ingest(first, [event(1, user_id="user-A")])
    first.store.close()
    monkeypatch.setattr(EventStore, "append_ids", _full_disk)
    again = _emu(data, clock)
    again.store.close()
    monkeypatch.undo()
    assert any("ids.log" in r.getMessage() and "starts all the same" in r.getMessage()
               for r in caplog.records)
    # the next start (with room) checks that request again and keeps it whole
    third = _emu(data, clock)
    try:
        assert _stored_ids(third) == {"insert-000001"}
        assert third.ingestor.events_stored == 1
    finally:
        third.store.close()
