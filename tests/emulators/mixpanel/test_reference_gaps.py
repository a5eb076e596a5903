"""Claims of the reference (mixpanel-api.md) the emulator once got wrong, one test each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

SA_AUTH = ("sa-user", "sa-secret")
DAY = "2024-01-10"
BASE = 1_704_888_000  # 2024-01-10T12:00Z


def _row(i: int, size: int) -> str:
    """An export line of exactly ``size`` bytes (newline excluded)."""
    head = f'{{"event":"E","properties":{{"time":{BASE + i},"pad":"'
    return head + "x" * (size - len(head) - 3) + '"}}'


def _export(url: str, encoding: str) -> requests.Response:
    return requests.get(
        f"{url}/api/2.0/export",
        params={"project_id": "4242", "from_date": DAY, "to_date": DAY},
        auth=SA_AUTH, headers={"Accept-Encoding": encoding}, stream=True, timeout=10,
    )


@pytest.mark.parametrize(("rows", "gzipped"), [(14, False), (15, True)])
def test_gzip_threshold_is_the_body_size_not_the_chunk_size(
    kit: Any, tmp_path: Path, serve: Any, rows: int, gzipped: bool
) -> None:
    # Reference 1.3: "If set to gzip and the response body is > 1400 bytes, the response
    # will be compressed with gzip". 14 lines of 100 bytes are exactly 1400 bytes; 15 are
    # 1500. The emulator sends the body in 64-byte chunks here: the decision must not
    # depend on how many chunks the body takes.
    data = kit.build_project(tmp_path / "p", events={DAY: [_row(i, 99) for i in range(rows)]}, timezone="UTC")
    with serve(data, chunk_bytes=64) as (url, _):
        resp = _export(url, "gzip")
        assert resp.status_code == 200
        assert (resp.headers.get("Content-Encoding") == "gzip") is gzipped
        body = resp.content  # requests gunzips
        assert len(body) == rows * 100 and body.count(b"\n") == rows
        plain = _export(url, "identity")
        assert "Content-Encoding" not in plain.headers and plain.content == body


def _event(name: str, pad: int = 0) -> dict[str, Any]:
    props = {"token": "tok-123", "distinct_id": "u1", "time": 1_710_000_000 - 60, "$insert_id": f"id-{name}"}
    return {"event": name, "properties": {**props, "pad": "x" * pad}}


def test_ingestion_volume_limit_counts_bytes_too(kit: Any, tmp_path: Path, serve: Any, clock: Any) -> None:
    # Reference 3.2: "Rate limit: 2GB of uncompressed JSON/minute or ~30k events per
    # second, measured on a rolling 1 minute basis". The emulator only counted events, so
    # a few events carrying a lot of bytes were never throttled.
    from mp2amp.emulators.mixpanel import MixpanelConfig

    assert MixpanelConfig(data_dir=tmp_path).ingest_bytes_per_minute == 2 * 1024**3
    project = kit.build_project(tmp_path / "p")
    sa = ("sa-user", "sa-secret")
    with serve(project, ingest_bytes_per_minute=5000) as (url, _):
        body = [_event("Big", pad=2000)]
        for _ in range(2):
            r = requests.post(f"{url}/import?project_id=4242", json=body, auth=sa, timeout=10)
            assert r.status_code == 200, r.text
        r = requests.post(f"{url}/import?project_id=4242", json=body, auth=sa, timeout=10)
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        assert r.json()["error"] == "Project exceeded rate limits. Please retry the request with exponential backoff."
        r = requests.post(f"{url}/track", data={"data": json.dumps(body)}, timeout=10)
        assert r.status_code == 429  # /track shares the limits of /import
        clock.advance(60)
        assert requests.post(f"{url}/import?project_id=4242", json=body, auth=sa, timeout=10).status_code == 200


def test_track_engage_groups_refuse_a_record_over_1_mb(kit: Any, tmp_path: Path, serve: Any) -> None:
    # Reference 3.1 (/track): "each event < 1 MB uncompressed JSON"; 3.3/3.4 (/engage,
    # /groups): "2000 updates per request, each <= 1 MB". The emulator accepted any size
    # up to the 10 MB request limit.
    from mp2amp.emulators.mixpanel import read_received

    project = kit.build_project(tmp_path / "p")
    big = 1024 * 1024
    user = {"$token": "tok-123", "$distinct_id": "u1", "$set": {"note": "x" * big}}
    group = {"$token": "tok-123", "$group_key": "company", "$group_id": "c1", "$set": {"note": "x" * big}}
    with serve(project) as (url, _):
        r = requests.post(f"{url}/track", data={"data": json.dumps(_event("Huge", pad=big)), "verbose": "1"}, timeout=10)
        assert r.json()["status"] == 0 and "under 1048576 bytes" in r.json()["error"]
        for kind, rec in (("engage", user), ("groups", group)):
            r = requests.post(f"{url}/{kind}", data={"data": json.dumps(rec), "verbose": "1"}, timeout=10)
            assert r.json()["status"] == 0 and "at most 1048576 bytes" in r.json()["error"], kind
        # just under the limit is fine
        r = requests.post(f"{url}/track", data={"data": json.dumps(_event("Large", pad=big - 500)), "verbose": "1"}, timeout=10)
        assert r.json() == {"status": 1, "error": None}
    assert [e["event"] for e in read_received(project, "track")] == ["Large"]
    assert read_received(project, "engage") == [] and read_received(project, "groups") == []


def test_track_takes_fewer_than_255_properties(kit: Any, tmp_path: Path, serve: Any) -> None:
    # Reference 3.1 (/track): "each event < 1 MB uncompressed JSON, < 255 properties".
    # The emulator accepted an event with exactly 255.
    project = kit.build_project(tmp_path / "p")
    with serve(project) as (url, _):
        for count, ok in ((254, True), (255, False)):
            rec = _event(f"P{count}")
            rec["properties"].pop("pad")
            rec["properties"].update({f"p{i}": i for i in range(count - len(rec["properties"]))})
            assert len(rec["properties"]) == count
            r = requests.post(f"{url}/track", data={"data": json.dumps(rec), "verbose": "1"}, timeout=10)
            assert r.json()["status"] == (1 if ok else 0), (count, r.text)
