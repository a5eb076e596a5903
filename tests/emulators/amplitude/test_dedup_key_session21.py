"""Session 21: one dedup key for a user-only event and its hashed device (reference 1.6),
read the same from a data folder an older emulator wrote with its own user-only keys; and
a missing ``events`` answered before a wrong API key (README's order)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
from amplitude_emulator_helpers import API_KEY, SECRET, T0, Api, Clock

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator

USER = "user-00001"
HASHED = hashlib.md5(USER.encode()).hexdigest()  # the device_id the export shows
USER_ONLY = {"event_type": "E", "user_id": USER, "insert_id": "same", "time": int(T0 * 1000)}
WITH_DEVICE = {**USER_ONLY, "device_id": HASHED}
LEGACY_KEY = f"\x00{USER}\x1fsame"  # what an emulator before session 21 wrote for USER_ONLY
DAY = 86_400


@contextmanager
def running(data: Path, clock: Clock) -> Iterator[Api]:
    emulator = AmplitudeEmulator(AmplitudeConfig(data_dir=data, api_key=API_KEY,
                                                 secret_key=SECRET, now=clock))
    with emulator.running() as url:
        yield Api(url, emulator)


def dedup_line(at: float, *keys: str) -> bytes:
    return orjson.dumps([int(at * 1000), list(keys)]) + b"\n"


def dedup_file(data: Path, at: float) -> Path:
    return data / "dedup" / (datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H") + ".jsonl")


def test_a_restart_on_an_old_folder_dedups_its_user_only_keys_as_the_hashed_device(
        tmp_path: Path) -> None:
    data, clock = tmp_path / "amp", Clock()
    with running(data, clock) as api:
        assert api.send([USER_ONLY])[0] == 200
    # the folder as the old emulator left it: the same request, keyed on the user_id
    dedup_file(data, T0).write_bytes(dedup_line(T0, LEGACY_KEY))
    clock.advance(3600)
    with running(data, clock) as api:
        for sent in (WITH_DEVICE, USER_ONLY):
            assert api.send([sent])[0] == 200
        assert (api.emulator.ingestor.events_stored, api.emulator.ingestor.duplicates) == (1, 2)


def test_insert_id_counts_count_a_user_only_event_and_its_hashed_device_as_one_key(
        tmp_path: Path) -> None:
    clock = Clock()
    with running(tmp_path / "amp", clock) as api:
        assert api.send([USER_ONLY])[0] == 200
        clock.advance(8 * DAY)  # past the window: stored again, the same event twice
        assert api.send([WITH_DEVICE])[0] == 200
        status, counts = api.get_json("/_emulator/insert_ids", auth=None)
    assert status == 200 and counts == [[USER, "same", 2]]


def test_http_v2_reports_a_missing_events_field_before_a_wrong_api_key(tmp_path: Path) -> None:
    with running(tmp_path / "amp", Clock()) as api:
        status, body = api.post_json("/2/httpapi", {"api_key": "not-the-key"})
        assert (status, body.get("missing_field")) == (400, "events"), body
        status, body = api.post_json("/2/httpapi", {"api_key": "not-the-key", "events": []})
        assert status == 400 and body["error"].startswith("Invalid API key:"), body
