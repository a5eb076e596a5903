"""Session-16 second review of the fixes made an hour before (12b3f08, 8bb4518): the
Amplitude emulator's request journal (ids.log markers and the take-back on start), its
export (1024 cuts, tracked groups' properties) and the uploader's shrink on a rate 429.

Each ``xfail(strict=True)`` test pins one defect and asserts the correct behaviour."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, SECRET, T0, Api, Clock, event

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.load import Uploader, UploadSettings
from mp2amp.load.observer import Submitted
from mp2amp.load.responses import Verdict
from mp2amp.load.sender import Sender
from mp2amp.load.uploader import Lane

EVENT_MS = int(T0 * 1000) - 3_600_000
WRITER = "mp2amp.emulators.amplitude.server.write_atomic"  # the one state.json's save calls


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


# --- the uploader against the emulator's throttle (8bb4518) ------------------------------


async def _upload_to_emulator(tmp_path: Path, events: list[dict[str, Any]],
                              seconds: float) -> tuple[int, Any]:
    """Upload through /2/httpapi to an emulator whose clock runs 1000x (a 30 s throttle
    pause is 0.03 s); returns the events it stored and the report (None: still stuck
    after ``seconds``)."""
    started = time.monotonic()
    emu = _emu(tmp_path / "amp", lambda: T0 + (time.monotonic() - started) * 1000)
    url = await emu.start()
    settings = UploadSettings(api_key=API_KEY, api_host=url, endpoint="httpapi",
                              concurrency=1, backoff_base=0.005, backoff_cap=0.05,
                              throttle_wait=0.03)
    report = None
    try:
        up = Uploader(settings)
        await up.start()
        try:
            for i, e in enumerate(events):
                await up.submit(e, ("src.jsonl", i + 1), batch_key="w")
            report = await asyncio.wait_for(up.close(), seconds)
        except TimeoutError:
            await up.abort()
    finally:
        await emu.stop()
    return emu.ingestor.events_stored, report


def test_a_user_over_its_30_s_budget_in_one_request_still_gets_through(tmp_path: Path) -> None:
    # one user, two devices, 500 events each, in one /2/httpapi request: 1000 events of
    # that user > 30 eps x 30 s = 900, so the emulator throttles the *user* every time;
    # README: a 429 makes a lane's requests smaller "when one device or user had more
    # events in that one request than Amplitude lets it send in the 30 s"
    events = [{"event_type": "view", "user_id": "user-hot", "device_id": f"device-{i % 2}",
               "time": EVENT_MS + i, "insert_id": f"ins-{i:06d}"} for i in range(1000)]
    stored, report = asyncio.run(_upload_to_emulator(tmp_path, events, seconds=2.5))
    assert report is not None, "still throttled after 2.5 s (2500 s emulated, ~80 rounds)"
    assert stored == 1000


def test_a_device_over_its_30_s_budget_in_one_request_gets_through(tmp_path: Path) -> None:
    # the same budget reading on both sides: 1000 events of one device in one request
    # are throttled by the emulator (> 900) and the uploader halves until they pass
    events = [{"event_type": "view", "user_id": "user-hot", "device_id": "device-hot",
               "time": EVENT_MS + i, "insert_id": f"ins-{i:06d}"} for i in range(1000)]
    stored, report = asyncio.run(_upload_to_emulator(tmp_path, events, seconds=4))
    assert report is not None and report.throttles >= 1
    assert stored == 1000


# --- the request journal: take-back on start (12b3f08) -----------------------------------


def test_a_week_old_last_request_survives_two_restarts_in_a_row(tmp_path: Path) -> None:
    data = tmp_path / "amp"
    first = _emu(data, lambda: T0)
    _ingest(first, [event(1, user_id="user-00001")])  # answered 200: stored
    first.store.close()  # killed: no save, so ids.log keeps the request's marker
    # restarted a week later (the dedup file of that hour is past the 7-day window and is
    # deleted by load_dedup); killed again before anything made it save
    later = T0 + 8 * 86400
    second = _emu(data, lambda: later)
    assert _stored_ids(second) == {"insert-000001"}
    second.store.close()
    third = _emu(data, lambda: later)
    try:
        assert _stored_ids(third) == {"insert-000001"}, "an acknowledged event was erased"
        assert third.ids.lookup_user("user-00001") is not None
    finally:
        third.store.close()


def test_a_deletion_stays_done_when_the_save_after_it_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    emu = _emu(tmp_path / "amp", clock)
    with emu.running() as url:
        api = Api(url, emu)
        assert api.send([event(1, user_id="user-00001",
                               user_properties={"plan": "gold"})])[0] == 200
        clock.advance(2)
        status, raw = api.request("POST", "/api/2/deletions/users",
                                  orjson.dumps({"user_ids": ["user-00001"]}),
                                  {"Content-Type": "application/json"}, auth=(API_KEY, SECRET))
        assert status == 200, raw
        assert api.post_json("/_emulator/deletions/advance", {})[0] == 200  # submitted

        def full_disk(path: Path, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(WRITER, full_disk)  # state.json only (deletions.json is written)
        api.request("POST", "/_emulator/deletions/advance", b"")  # done: events erased
        assert emu.ingestor.events_stored == 0
        assert emu.ids.lookup_user("user-00001") is None
    # stopped with the disk still full (or killed): state.json was never written
    monkeypatch.undo()
    again = _emu(tmp_path / "amp", clock)
    try:
        assert again.jobs.jobs[0]["status"] == "done"
        assert not _stored_ids(again)
        assert again.ids.lookup_user("user-00001") is None, "the erased user is back"
        assert again.ingestor.events_stored == 0
    finally:
        again.store.close()


# --- behaviour around the fixes, not pinned above ----------------------------------------


def _items(n: int, device: Any, user: Any) -> list[Submitted]:
    return [Submitted(b"{}", ("s", i), "b", device(i), user(i), 0, 0, i) for i in range(n)]


def _shrunk_cap(items: list[Submitted], devices: set[str], users: set[str]) -> int:
    lane = Lane(0, cap_events=2000, cap_bytes=1 << 20)
    verdict = Verdict("sort", 429, throttled=frozenset(range(len(items))),
                      throttled_devices=frozenset(devices), throttled_users=frozenset(users))
    Sender._shrink_for_rate(lane, items, verdict, 30)
    return lane.cap_events


def test_a_throttled_id_is_counted_as_the_429_named_it() -> None:
    # a named user over its 900 across two devices; a named device over its 900 across users
    assert _shrunk_cap(_items(1000, lambda i: f"d{i % 2}", lambda i: "u"), set(), {"u"}) == 500
    assert _shrunk_cap(_items(1000, lambda i: "d", lambda i: f"u{i % 2}"), {"d"}, set()) == 500
    # listed by index only: counted by device, or by user when it has none
    assert _shrunk_cap(_items(1000, lambda i: "d", lambda i: None), set(), set()) == 500
    assert _shrunk_cap(_items(1000, lambda i: None, lambda i: "u"), set(), set()) == 500
    # under the budget in this request (over its rate over time): requests keep their size
    assert _shrunk_cap(_items(800, lambda i: f"d{i % 2}", lambda i: "u"), set(), {"u"}) == 2000
    assert _shrunk_cap(_items(1000, lambda i: f"d{i % 2}", lambda i: f"u{i % 2}"),
                       {"d0", "d1"}, {"u0", "u1"}) == 2000


def test_a_start_checks_the_last_request_once_and_a_kill_is_still_taken_back(
        tmp_path: Path) -> None:
    data = tmp_path / "amp"
    first = _emu(data, lambda: T0)
    _ingest(first, [event(1, user_id="user-00001")])
    first.store.close()
    second = _emu(data, lambda: T0)  # checked: landed whole, and the journal says so
    second.store.close()
    assert (data / "ids.log").read_bytes().endswith(b"\n[]\n")
    third = _emu(data, lambda: T0)
    try:
        _ingest(third, [event(2, user_id="user-00002")])
    finally:
        third.store.close()
    # killed after its journal line, before its events line: taken back on the next start
    events = next((data / "events").glob("*.jsonl"))
    whole = events.read_bytes()
    events.write_bytes(whole[:whole.rstrip(b"\n").rfind(b"\n") + 1])
    fourth = _emu(data, lambda: T0)
    try:
        assert _stored_ids(fourth) == {"insert-000001"}
        assert fourth.ids.lookup_user("user-00002") is None
        assert fourth.ingestor.events_stored == 1
    finally:
        fourth.store.close()


def test_a_deletion_whose_save_fails_answers_200_and_a_returning_user_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    emu = _emu(tmp_path / "amp", clock)
    with emu.running() as url:
        api = Api(url, emu)
        assert api.send([event(1, user_id="user-00001")])[0] == 200
        clock.advance(2)
        status, raw = api.request("POST", "/api/2/deletions/users",
                                  orjson.dumps({"user_ids": ["user-00001"]}),
                                  {"Content-Type": "application/json"}, auth=(API_KEY, SECRET))
        assert status == 200, raw
        assert api.post_json("/_emulator/deletions/advance", {})[0] == 200

        def full_disk(path: Path, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(WRITER, full_disk)
        status, body = api.post_json("/_emulator/deletions/advance", {})
        assert status == 200 and body["events_erased"] == 1
        # the same user comes back after the deletion: a new person, journaled after it
        assert api.send([event(2, user_id="user-00001")])[0] == 200
        back = emu.ids.lookup_user("user-00001")
        assert back is not None
    monkeypatch.undo()
    again = _emu(tmp_path / "amp", clock)
    try:
        assert again.ids.lookup_user("user-00001") == back
        assert _stored_ids(again) == {"insert-000002"}
        assert again.ingestor.events_stored == 1
    finally:
        again.store.close()
