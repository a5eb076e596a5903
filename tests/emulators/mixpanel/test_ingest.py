"""Ingestion endpoints as the SDKs really call them; what lands is read back from DIR/received."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from mp2amp.emulators.mixpanel import read_received

TOKEN = "tok-123"
NOW = 1_710_000_000  # the fake clock


@pytest.fixture
def project(kit: Any, tmp_path: Path) -> Path:
    return kit.build_project(tmp_path / "p")


def event(name: str = "Clicked", t: float = NOW - 60, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"token": TOKEN, "distinct_id": "u1", "time": t, "$insert_id": f"id-{name}-{int(t)}", **props}}


def b64(obj: Any) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_track_in_every_wire_format(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        # Python SDK: form body, raw JSON, verbose and ip in the body
        r = requests.post(f"{url}/track", data={"data": json.dumps(event("Py")), "verbose": 1, "ip": 0}, timeout=10)
        assert r.json() == {"status": 1, "error": None}
        # JS SDK to a proxy host: base64 batch in a form body, verbose/ip in the query string
        r = requests.post(f"{url}/track/", params={"verbose": 1, "ip": 1, "_": "1710000000000"},
                          data={"data": b64([event("Js1"), event("Js2")])}, timeout=10)
        assert r.json() == {"status": 1, "error": None}
        # legacy GET with data= in the query string, unpadded base64: plain-text "1"
        r = requests.get(f"{url}/track", params={"data": b64(event("Get")).rstrip("=")}, timeout=10)
        assert (r.text, r.headers["Content-Type"].split(";")[0]) == ("1", "text/plain")
        # sendBeacon: a data= body sent as text/plain
        r = requests.post(f"{url}/track/", data="data=" + json.dumps(event("Beacon")),
                          headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=10)
        assert r.text == "1"
        # OpenAPI: a gzipped JSON array body
        r = requests.post(f"{url}/track", data=gzip.compress(json.dumps([event("Gz")]).encode()),
                          headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=10)
        assert r.text == "1"
    got = read_received(project, "track")
    assert [e["event"] for e in got] == ["Py", "Js1", "Js2", "Get", "Beacon", "Gz"]
    entries = [json.loads(x) for x in (project / "received" / "track.jsonl").read_text().splitlines()]
    assert [e["geolocate"] for e in entries[:3]] == [False, True, True]
    assert [(e["wire"], e["gzip"], e["batch"]) for e in entries] == [
        ("form:json", False, 1), ("form:base64", False, 2), ("form:base64", False, 2), ("query:base64", False, 1),
        ("form:json", False, 1), ("json-body", True, 1)]
    assert entries[1]["endpoint"] == "/track/" and entries[0]["ip"] == "127.0.0.1"


def test_track_refusals(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        assert requests.post(f"{url}/track", data={"data": "{nope"}, timeout=10).text == "0"
        r = requests.post(f"{url}/track", data={"data": "{nope", "verbose": 1}, timeout=10)
        assert r.json()["status"] == 0 and r.json()["error"].startswith("could not decode data")
        r = requests.post(f"{url}/track", data={"data": json.dumps({"properties": {}}), "verbose": "1"}, timeout=10)
        assert r.json() == {"status": 0, "error": "'event' is required and must be a non-empty string"}
        old = event("Old", t=NOW - 6 * 86400)
        r = requests.post(f"{url}/track", data={"data": json.dumps(old), "verbose": "1"}, timeout=10)
        assert r.json()["status"] == 0 and "use /import for historical events" in r.json()["error"]
        merge = {"event": "$merge", "properties": {"$distinct_ids": ["a", "b"], "token": TOKEN}}
        assert requests.post(f"{url}/track", data={"data": json.dumps(merge)}, timeout=10).text == "0"
        # strict: 400 with the failed records, the valid ones still land
        r = requests.post(f"{url}/track?strict=1", data={"data": json.dumps([event("Ok"), {"event": ""}])}, timeout=10)
        assert r.status_code == 400
        body = r.json()
        assert body["num_records_imported"] == 1 and body["failed_records"][0]["index"] == 1
        # another project's token: "1" (the API says nothing about tokens) but nothing stored
        other = event("Other")
        other["properties"]["token"] = "someone-else"
        assert requests.post(f"{url}/track", data={"data": json.dumps(other)}, timeout=10).text == "1"
    assert [e["event"] for e in read_received(project, "track")] == ["Ok"]
    assert len(read_received(project, "rejected")) == 4


def test_import_strict_failed_records(project: Path, serve: Any) -> None:
    batch = [event("A"), event("B", **{"$insert_id": "has spaces!"}), event("C", t=10), event("D", distinct_id="undefined")]
    with serve(project) as (url, _):
        r = requests.post(f"{url}/import", params={"strict": "1", "project_id": "4242"}, json=batch,
                          auth=("sa-user", "sa-secret"), timeout=10)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 400 and body["status"] == "Bad Request" and body["num_records_imported"] == 1
    assert body["error"] == "some data points in the request failed validation"
    assert [(f["index"], f["field"]) for f in body["failed_records"]] == [
        (1, "properties.$insert_id"), (2, "properties.time"), (3, "properties.distinct_id")]
    assert body["failed_records"][1]["$insert_id"] == "id-C-10"
    assert [e["event"] for e in read_received(project, "import")] == ["A"]


def test_import_bodies_and_auth(project: Path, serve: Any) -> None:
    ndjson = gzip.compress(b"".join(json.dumps(event(n, t=NOW - 90 * 86400)).encode() + b"\n" for n in "XYZ"))
    with serve(project) as (url, _):
        r = requests.post(f"{url}/import?strict=1&project_id=4242", data=ndjson, auth=("sa-user", "sa-secret"),
                          headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}, timeout=10)
        assert r.json() == {"code": 200, "num_records_imported": 3, "status": "OK"}
        for auth in (("tok-123", ""), ("api-secret-1", "")):  # project token, legacy API secret
            r = requests.post(f"{url}/import?strict=1", json=[event("T")], auth=auth, timeout=10)
            assert r.status_code == 200, r.text
        for auth in (None, ("wrong", ""), ("sa-user", "bad")):
            r = requests.post(f"{url}/import?strict=1&project_id=4242", json=[event("T")], auth=auth, timeout=10)
            assert r.status_code == 401
            assert r.json() == {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
    assert [e["event"] for e in read_received(project, "import")] == ["X", "Y", "Z", "T", "T"]


def test_request_size_count_and_volume_limits(project: Path, serve: Any, clock: Any) -> None:
    sa = ("sa-user", "sa-secret")
    with serve(project, import_max_bytes=2000, ingest_events_per_minute=5) as (url, _):
        big = [event("Big", pad="x" * 3000)]
        r = requests.post(f"{url}/import?project_id=4242", json=big, auth=sa, timeout=10)
        assert r.status_code == 413
        assert r.json() == {"code": 413, "error": "request exceeds max limit of 2000 bytes", "status": "Request Entity Too Large"}
        r = requests.post(f"{url}/track", data=gzip.compress(json.dumps(big).encode()),
                          headers={"Content-Encoding": "gzip"}, timeout=10)
        assert r.status_code == 413  # the limit is on the uncompressed size
        assert requests.post(f"{url}/import?project_id=4242", json=[event("A")] * 4, auth=sa, timeout=10).status_code == 200
        r = requests.post(f"{url}/import?project_id=4242", json=[event("B")] * 2, auth=sa, timeout=10)
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        assert r.json() == {"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.",
                            "status": "Too Many Requests"}
        clock.advance(60)
        assert requests.post(f"{url}/import?project_id=4242", json=[event("B")] * 2, auth=sa, timeout=10).status_code == 200
    with serve(project, max_records_per_request=3) as (url, _):
        r = requests.post(f"{url}/track", json=[event("A")] * 4, timeout=10)
        assert r.status_code == 400 and "the maximum is 3 per request" in r.json()["error"]


def test_engage_and_groups_updates(project: Path, serve: Any) -> None:
    people = [{"$token": TOKEN, "$distinct_id": "u1", "$set": {"plan": "pro"}},
              {"$token": TOKEN, "$distinct_id": "u2", "$unset": ["plan"]},
              {"$token": TOKEN, "$distinct_id": "u3", "$add": {"n": "x"}}]
    group = {"$token": TOKEN, "$group_key": "company_id", "$group_id": "c1", "$set_once": {"name": "Acme"}}
    with serve(project) as (url, _):
        r = requests.post(f"{url}/engage", params={"verbose": "2"}, json=people, timeout=10)
        assert r.json() == {"status": 1, "error": None}
        r = requests.post(f"{url}/groups/", data={"data": b64([group]), "verbose": "1"}, timeout=10)
        assert r.json() == {"status": 1, "error": None}
        r = requests.post(f"{url}/groups", data={"data": json.dumps({"$token": TOKEN, "$group_key": "k"}), "verbose": 1}, timeout=10)
        assert r.json() == {"status": 0, "error": "'$group_id' is required"}
    assert [p["$distinct_id"] for p in read_received(project, "engage")] == ["u1", "u2"]
    assert read_received(project, "groups") == [group]


def test_jsonp_pixel_cors_and_read_back_endpoint(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        r = requests.get(f"{url}/track/", params={"data": b64(event("J")), "callback": "cb", "verbose": "1"}, timeout=10)
        assert r.text == 'cb({"status":1,"error":null});' and r.headers["Content-Type"].startswith("text/javascript")
        r = requests.get(f"{url}/track/", params={"data": b64(event("P")), "img": "1"}, timeout=10)
        assert r.headers["Content-Type"] == "image/gif" and r.content.startswith(b"GIF89a")
        origin = {"Origin": "https://shop.example.com", "Access-Control-Request-Headers": "content-type"}
        r = requests.options(f"{url}/track/", headers=origin, timeout=10)
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        r = requests.get(f"{url}/_emulator/received/track", timeout=10)
        assert [json.loads(x)["record"]["event"] for x in r.text.splitlines()] == ["J", "P"]
        assert requests.get(f"{url}/_emulator/received/nope", timeout=10).status_code == 404
