"""Injected faults (seeded), restart persistence, and the control endpoints."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, Api, Clock, event

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import InputError


def statuses(api: Api, n: int) -> list[int]:
    return [api.send([event(i)])[0] for i in range(n)]


def test_fail_rate_answers_5xx_deterministically(start_emulator: Callable[..., Api]) -> None:
    first = start_emulator(fail_rate=0.5, seed=7)
    second = start_emulator(fail_rate=0.5, seed=7,
                            data_dir=first.emulator.config.data_dir.parent / "second")
    seen = statuses(first, 30)
    assert seen == statuses(second, 30)
    assert set(seen) - {200} <= {500, 502, 503, 504}
    assert {200, 500, 502, 503, 504} & set(seen) - {200}
    status, body = first.send([event(99)])
    assert body["code"] == status
    assert first.stats()["events_stored"] == seen.count(200) + (status == 200)


def test_drop_after_ingest_stores_then_closes(api: Api) -> None:
    status, body = api.post_json("/_emulator/faults", {"drop_after_ingest_rate": 1.0})
    assert (status, body["drop_after_ingest_rate"]) == (200, 1.0)
    url = urlparse(api.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    payload = orjson.dumps({"api_key": API_KEY, "events": [event(1)]})
    conn.request("POST", "/batch", payload, {"Content-Type": "application/json"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()
    api.post_json("/_emulator/faults", {"drop_after_ingest_rate": 0})
    assert api.stats()["events_stored"] == 1
    assert api.stats()["requests"] == {"dropped": 1}
    assert api.send([event(1)])[0] == 200  # the retry is deduplicated
    assert api.stats()["events_stored"] == 1


def test_fault_settings_are_checked(api: Api) -> None:
    status, body = api.post_json("/_emulator/faults", {"fail_rate": 2, "colour": "red"})
    assert status == 400
    assert "fail_rate" in body["error"] and "colour" in body["error"]
    status, body = api.post_json("/_emulator/faults", {"eps_limit": 5, "latency_ms": 1})
    assert (status, body["eps_limit"], body["latency_ms"]) == (200, 5, 1.0)
    status, body = api.send([event(n, device_id="device-x1") for n in range(151)])
    assert (status, body["eps_threshold"]) == (429, 5)


def test_everything_survives_a_restart(start_emulator: Callable[..., Api], clock: Clock) -> None:
    first = start_emulator()
    first.send([event(1, user_id="user-00001", user_properties={"plan": "pro"}),
                event(2, device_id="device-anon-1")])
    first.form("/groupidentify", {"api_key": API_KEY, "identification": orjson.dumps(
        {"group_type": "org", "group_value": "acme", "group_properties": {"size": 3}}).decode()})
    before = sorted(first.exported_rows(), key=lambda r: r["$insert_id"])
    first.request("POST", "/api/2/deletions/users", orjson.dumps({"user_ids": ["user-00001"]}),
                  {"Content-Type": "application/json"}, auth=(API_KEY, "test-secret"))
    first.emulator.save()  # what stop() does; the second instance reads the same directory
    second = start_emulator(data_dir=first.emulator.config.data_dir)
    assert sorted(second.exported_rows(), key=lambda r: r["$insert_id"]) == before
    assert second.send([event(1, user_id="user-00001")])[0] == 200
    assert second.stats()["events_stored"] == 2  # the dedup index came back too
    second.send([event(3, user_id="user-00001", device_id="device-9", groups={"org": "acme"})])
    (row,) = [r for r in second.exported_rows() if r["$insert_id"] == "insert-000003"]
    assert row["amplitude_id"] == before[0]["amplitude_id"]
    assert row["user_properties"] == {"plan": "pro"}
    assert row["group_properties"] == {"org": {"acme": {"size": 3}}}
    clock.advance(1)
    _, jobs = second.get_json("/api/2/deletions/users?start_day=2026-01-01&end_day=2026-01-31")
    assert [j["status"] for j in jobs] == ["staging"]


def test_unreadable_state_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "broken"
    data.mkdir()
    (data / "state.json").write_text("{oops")
    with pytest.raises(InputError, match=r"state\.json: not valid JSON"):
        AmplitudeEmulator(AmplitudeConfig(data_dir=data))
    (data / "state.json").write_text("[]")
    with pytest.raises(InputError, match="expected a JSON object"):
        AmplitudeEmulator(AmplitudeConfig(data_dir=data))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="cannot use it"):
        AmplitudeEmulator(AmplitudeConfig(data_dir=a_file))


def test_amplitude_ids_survive_a_kill_between_snapshots(start_emulator: Callable[..., Api]) -> None:
    first = start_emulator(save_every_s=3600)
    first.send([event(1, user_id="user-00001")])
    first.emulator.save()
    first.send([event(2, user_id="user-00002"), event(3, device_id="device-x9")])
    # No save: as if the process were killed here. The ID journal has the new people.
    data = first.emulator.config.data_dir
    assert (data / "ids.log").exists()
    second = start_emulator(data_dir=data)
    second.send([event(4, user_id="user-00003"), event(5, user_id="user-00002")])
    rows = {r["$insert_id"]: r["amplitude_id"] for r in second.exported_rows()}
    assert rows["insert-000005"] == rows["insert-000002"]
    assert len({rows[k] for k in ("insert-000001", "insert-000002", "insert-000003",
                                  "insert-000004")}) == 4  # no amplitude_id handed out twice
