"""Session 14 adversarial review of the Mixpanel emulator's ingestion endpoints.

Checks of reference ``mixpanel-api.md`` §3 (``/track``, ``/engage``, ``/groups``,
``/import``) that the other tests of this folder do not make, over loopback sockets and,
where the behaviour is a client's, through the official ``mixpanel`` Python SDK. A test
marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong, what the
reference says and where to fix it.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from mp2amp.emulators.mixpanel import read_received

TOKEN = "tok-123"
PID = "4242"
SA_AUTH = ("sa-user", "sa-secret")
NOW = 1_710_000_000  # the conftest's fake clock


def event(name: str, **props: Any) -> dict[str, Any]:
    base = {"token": TOKEN, "distinct_id": "u1", "time": NOW - 60, "$insert_id": f"id-{name}"}
    return {"event": name, "properties": {**base, **props}}


@pytest.fixture
def project(kit: Any, tmp_path: Path) -> Path:
    return kit.build_project(tmp_path / "p")


def _import(url: str, body: bytes, **headers: str) -> requests.Response:
    return requests.post(
        f"{url}/import", params={"strict": "1", "project_id": PID}, data=body, auth=SA_AUTH,
        headers={"Content-Type": "application/x-ndjson", **headers}, timeout=10,
    )


# --- defects ------------------------------------------------------------------------------


def test_multi_member_gzip_without_header_keeps_every_member(project: Path, serve: Any) -> None:
    body = b"".join(gzip.compress(json.dumps(event(n)).encode() + b"\n") for n in ("A", "B"))
    with serve(project) as (url, _):
        with_header = _import(url, body, **{"Content-Encoding": "gzip"})
        assert with_header.json() == {"code": 200, "num_records_imported": 2, "status": "OK"}
        bare = _import(url, body)
    assert bare.json() == {"code": 200, "num_records_imported": 2, "status": "OK"}, bare.text
    assert [e["event"] for e in read_received(project, "import")] == ["A", "B", "A", "B"]


@pytest.mark.parametrize("path", ["/import", "/track", "/engage/", "/groups"])
def test_bad_gzip_with_content_encoding_is_a_400_not_a_crash(project: Path, serve: Any, path: str) -> None:
    with serve(project) as (url, _):
        r = requests.post(
            f"{url}{path}", params={"strict": "1", "project_id": PID, "verbose": "1"},
            data=b'[{"event":"not gzip at all"}]', auth=SA_AUTH,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=10,
        )
    assert r.status_code < 500, r.text
    assert r.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("path", ["/track", "/engage", "/groups/"])
def test_verbose_failure_for_an_empty_batch_names_the_error(project: Path, serve: Any, path: str) -> None:
    with serve(project) as (url, _):
        r = requests.post(f"{url}{path}", data={"data": "[]", "verbose": "1"}, timeout=10)
    body = r.json()
    assert body["status"] == 0
    assert isinstance(body["error"], str) and body["error"], body


_NESTED = {
    "array of 255 elements": {"items": list(range(255))},
    "object of 255 keys": {"cart": {f"k{i}": i for i in range(255)}},
    "objects nested 4 deep": {"a": {"b": {"c": {"d": 1}}}},
}


@pytest.mark.parametrize("case", list(_NESTED))
def test_track_refuses_nested_values_past_the_documented_limits(
    kit: Any, tmp_path: Path, serve: Any, case: str
) -> None:
    mixpanel = pytest.importorskip("mixpanel")
    data = kit.build_project(tmp_path / "p")
    with serve(data, clock=time.time) as (url, _):
        consumer = mixpanel.Consumer(events_url=f"{url}/track", request_timeout=5, retry_limit=0)
        mp = mixpanel.Mixpanel(TOKEN, consumer=consumer)
        mp.track("u1", "Fine", {"items": list(range(254)), "a": {"b": {"c": 1}}})
        with pytest.raises(mixpanel.MixpanelException):
            mp.track("u1", "Too Big", _NESTED[case])
    assert [e["event"] for e in read_received(data, "track")] == ["Fine"]


def test_raw_json_body_with_a_data_url_in_a_property_is_not_taken_for_a_form(
    project: Path, serve: Any
) -> None:
    plain = event("Plain", **{"$current_url": "https://shop.example.com/?page=2"})
    url_prop = event("Url", **{"$current_url": "https://shop.example.com/?page=2&data=x"})
    with serve(project) as (url, _):
        for rec in (plain, url_prop):
            r = requests.post(f"{url}/track?verbose=1", data=json.dumps([rec]).encode(),
                              headers={"Content-Type": "text/plain"}, timeout=10)
            assert r.json() == {"status": 1, "error": None}, (rec["event"], r.text)
    assert [e["event"] for e in read_received(project, "track")] == ["Plain", "Url"]


# --- behaviour pinned (passing) -------------------------------------------------------------


def test_strict_import_insert_id_and_distinct_id_edges(project: Path, serve: Any) -> None:
    # Reference §3.2: "$insert_id must be <= 36 bytes and contain only alphanumerics or -.
    # The same disallowed values apply"; "Empty string distinct_id = event not associated
    # with any user" (accepted).
    batch = [
        event("Max", **{"$insert_id": "a" * 36}),
        event("Over", **{"$insert_id": "a" * 37}),
        event("ZeroUuid", **{"$insert_id": "00000000-0000-0000-0000-000000000000"}),
        event("Underscore", **{"$insert_id": "abc_def"}),
        event("NoUser", distinct_id=""),
        event("Undefined", distinct_id="undefined"),
        event("Future", time=NOW + 2 * 3600),
        event("SoonMs", time=(NOW + 1800) * 1000 + 7),
    ]
    with serve(project) as (url, _):
        r = requests.post(f"{url}/import", params={"strict": "1", "project_id": PID}, json=batch,
                          auth=SA_AUTH, timeout=10)
    assert r.status_code == 400
    body = r.json()
    assert body["num_records_imported"] == 3
    assert [(f["index"], f["field"]) for f in body["failed_records"]] == [
        (1, "properties.$insert_id"), (2, "properties.$insert_id"), (3, "properties.$insert_id"),
        (5, "properties.distinct_id"), (6, "properties.time")]
    assert body["failed_records"][1]["$insert_id"] == "00000000-0000-0000-0000-000000000000"
    stored = read_received(project, "import")
    assert [e["event"] for e in stored] == ["Max", "NoUser", "SoonMs"]
    assert stored[2]["properties"]["time"] == (NOW + 1800) * 1000 + 7  # ms kept as sent


def test_python_sdk_sees_the_five_day_refusal_and_float_time_is_kept(
    kit: Any, tmp_path: Path, serve: Any
) -> None:
    # Reference §3.1: /track "Last 5 days only"; §3.7: the SDK raises unless status == 1,
    # with the error text from response["error"]; its time is float seconds (ms fraction).
    mixpanel = pytest.importorskip("mixpanel")
    data = kit.build_project(tmp_path / "p")
    with serve(data, clock=time.time) as (url, _):
        consumer = mixpanel.Consumer(events_url=f"{url}/track", request_timeout=5, retry_limit=0)
        mp = mixpanel.Mixpanel(TOKEN, consumer=consumer)
        with pytest.raises(mixpanel.MixpanelException, match="older than 5 days"):
            mp.track("u1", "Old", {"time": time.time() - 6 * 86400})
        mp.track("u1", "Recent", {"time": 1_700_000_000.123 + (time.time() - 1_700_000_000) // 1})
    [recent] = read_received(data, "track")
    assert recent["event"] == "Recent"
    assert isinstance(recent["properties"]["time"], float)
    assert round(recent["properties"]["time"] % 1, 3) == 0.123
    assert [e["event"] for e in read_received(data, "rejected")] == ["Old"]


@pytest.mark.parametrize("path", ["/engage", "/engage/", "/groups", "/groups/"])
def test_profile_updates_by_get_with_base64_data_and_2000_cap(
    project: Path, serve: Any, path: str
) -> None:
    # Reference §3.3/3.4: "a JSON list of objects as the data parameter of an ... POST or
    # GET request"; "2000 updates per request".
    import base64

    kind = path.strip("/")
    rec: dict[str, Any] = {"$token": TOKEN, "$set": {"plan": "pro"}}
    rec.update({"$distinct_id": "u1"} if kind == "engage" else {"$group_key": "company", "$group_id": "c1"})
    with serve(project) as (url, _):
        encoded = base64.b64encode(json.dumps([rec]).encode()).decode()
        r = requests.get(f"{url}{path}", params={"data": encoded, "verbose": "1"}, timeout=10)
        assert r.json() == {"status": 1, "error": None}
        r = requests.post(f"{url}{path}", json=[rec] * 2001, timeout=30)
        assert r.status_code == 400 and "the maximum is 2000 per request" in r.json()["error"]
    assert read_received(project, kind) == [rec]
