"""Session-21 review of both sides of Amplitude's ingestion contract (reference
amplitude-api.md §1.5-1.8, §2.3, §8.3): the emulator's /batch and /2/httpapi answers, and
mp2amp's response classifier on body shapes the emulator never produces.

The defects this review found (fixed since) keep their tests as regressions; the guards
pin behaviour checked in this review and not pinned elsewhere.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.load.responses import classify

KEY = "review-key"
T0 = 1_767_268_800.0  # 2026-01-01 12:00 UTC


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[tuple[str, AmplitudeEmulator]]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            secret_key="s", now=Clock()))
    with emu.running() as url:
        yield url, emu


def post(url: str, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + path, data=orjson.dumps(payload), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, orjson.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


# --- defects (fixed in session 21) ------------------------------------------------------


@pytest.mark.parametrize("path", ["/batch", "/2/httpapi"])
def test_a_user_only_event_and_its_hashed_device_share_one_dedup_key(emulator, path):
    url, emu = emulator
    user = "user-00001"
    hashed = hashlib.md5(user.encode()).hexdigest()  # what the export shows as its device
    first = {"event_type": "E", "user_id": user, "insert_id": "same", "time": int(T0 * 1000)}
    again = {**first, "device_id": hashed}
    assert post(url, path, {"api_key": KEY, "events": [first]})[0] == 200
    assert post(url, path, {"api_key": KEY, "events": [again]})[0] == 200
    # Amplitude: the key is (device_id, or the hash of user_id when absent, insert_id):
    # both events have device hashed and insert_id "same" -> the second is ignored
    assert emu.ingestor.events_stored == 1 and emu.ingestor.duplicates == 1


def test_a_missing_events_field_is_reported_before_a_wrong_api_key(emulator):
    url, _ = emulator
    status, body = post(url, "/batch", {"api_key": "not-the-key"})
    assert (status, body.get("missing_field")) == (400, "events"), body


# --- guards ---------------------------------------------------------------------------


IDS = [(f"dev-{i}", f"user-{i}") for i in range(4)]


def test_the_documented_400_and_429_examples_settle_every_event_once():
    # reference §1.8 silenced example (indices 3..6 of a 7-event request) and §2.3's 429
    ids = [(f"d{i}", f"u{i}") for i in range(7)]
    silenced = {"code": 400, "eps_threshold": 100, "error": "Events silenced for device_id",
                "exceeded_daily_quota_devices": {}, "silenced_devices": ["d5"],
                "silenced_events": [5, 6], "throttled_devices": {"d3": 0, "d4": 100},
                "throttled_events": [3, 4]}
    v = classify(400, orjson.dumps(silenced), ids=ids)
    assert v.kind == "sort" and set(v.dead) == {5, 6} and v.throttled == {3, 4}
    assert not v.parked
    quota = {"code": 429, "error": "Too many requests for some devices and users",
             "eps_threshold": 1000, "throttled_devices": {"dev-1": 4000},
             "throttled_users": {"user-1": 4000}, "exceeded_daily_quota_users": {"user-1": 1},
             "exceeded_daily_quota_devices": {"dev-1": 1}, "throttled_events": [1, 1, 9]}
    v = classify(429, orjson.dumps(quota), ids=IDS)
    assert v.parked == {1} and not v.throttled and not v.dead
