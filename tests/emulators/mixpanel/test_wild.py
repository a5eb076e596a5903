"""Every real Mixpanel record in shared/fixtures/wild goes through the emulator.

* each ingestion body is sent to its recorded endpoint the way its sender sends it
  (reference §3.6-3.7), gets the documented answer, and is stored as sent;
* each Raw Export record, put in a project's day file, comes back from /api/2.0/export
  byte for byte (or with exactly the documented time rewrite);
* each Engage profile, put in profiles/users.jsonl.gz, comes back from /api/2.0/engage.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import requests

from mp2amp.emulators.mixpanel import read_received
from mp2amp.emulators.mixpanel.store import iter_received

WILD = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "wild"

pytestmark = pytest.mark.skipif(
    not WILD.is_dir(), reason=f"real-record fixtures not present at {WILD} (shared/ beside the repo)")

SA_AUTH = ("sa-user", "sa-secret")
PID = "4242"
API_SECRET = "api-secret-1"
TODAY = 1_790_000_000.0  # 2026-09-21: every fixture day is in the past
MS_ABOVE = 100_000_000_000  # a larger "time" is in milliseconds (reference §3.2)

STORED = "stored"
# /import line 22 (RudderStack $create_alias) has no properties.time: /import requires it
# (reference §3.2 "Requires event, properties.time, ..."), so strict mode reports it.
ALIAS_WITHOUT_TIME = {
    "code": 400, "error": "some data points in the request failed validation",
    "failed_records": [{"index": 0, "$insert_id": None, "field": "properties.time",
                        "message": "'properties.time' is invalid: must be specified as seconds since epoch"}],
    "num_records_imported": 0, "status": "Bad Request",
}
# Outcome per line of mixpanel-ingestion-payloads.jsonl that is not simply stored.
INGEST_REFUSED = {22: ALIAS_WITHOUT_TIME}


def _raw_lines(name: str) -> list[bytes]:
    return [line for line in (WILD / name).read_bytes().splitlines() if line.strip()]


def _provenance(name: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for line in _raw_lines("provenance.jsonl"):
        entry = orjson.loads(line)
        if entry["file"] == name:
            out[entry["line"]] = entry
    return out


def _seconds(t: float) -> float:
    return t / 1000 if t > MS_ABOVE else t


def _dumps(value: Any) -> bytes:
    """Compare as JSON bytes: key order, int-vs-float (5.0) and types must all survive."""
    return orjson.dumps(value)


# --- ingestion ------------------------------------------------------------------------

def _sender(source: dict[str, Any]) -> str:
    repo = source.get("repo", "")
    return {"ak--47/mixpanel-debug": "mixpanel-js", "mixpanel/mixpanel-python": "python-sdk",
            "rudderlabs/rudder-transformer": "rudderstack"}.get(repo, "docs")


def _send(url: str, endpoint: str, sender: str, raw: bytes) -> requests.Response:
    """POST one recorded body the way its sender puts it on the wire."""
    path = endpoint.split("#")[0]  # "/track#create-identity": the docs' anchor, not a path
    is_import = path.rstrip("/") == "/import"
    text = raw.decode()
    if sender == "mixpanel-js":
        # custom api_host -> api_payload_format "base64"; verbose/ip/_ in the query (§3.6)
        data = base64.b64encode(raw).decode()
        return requests.post(f"{url}{path}?verbose=1&ip=1&_=1697821497240", data={"data": data},
                             timeout=10)
    if sender == "python-sdk":
        # form data=<compact JSON>, verbose and ip in the body; /import with the legacy
        # HTTPBasicAuth(api_secret, "") (§3.7)
        compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        auth = (API_SECRET, "") if is_import else None
        return requests.post(url + path, data={"data": compact, "verbose": 1, "ip": 0}, auth=auth,
                             timeout=10)
    if is_import:
        # the documented /import call: JSON body, service account, strict=1 (§3.2)
        return requests.post(f"{url}{path}?strict=1&project_id={PID}", data=raw, auth=SA_AUTH,
                             headers={"Content-Type": "application/json"}, timeout=10)
    if sender == "rudderstack":  # JSON_ARRAY batch body to /engage/ and /groups/
        return requests.post(f"{url}{path}?verbose=1", data=b"[" + raw + b"]",
                             headers={"Content-Type": "application/json"}, timeout=10)
    # the docs' curl: --data-urlencode 'data=<JSON>'
    return requests.post(f"{url}{path}?verbose=1", data={"data": text}, timeout=10)


def _expected_answer(endpoint: str, sender: str, records: list[Any]) -> tuple[int, Any]:
    if endpoint.split("#")[0].rstrip("/") != "/import":
        return 200, {"status": 1, "error": None}
    if sender == "python-sdk":  # non-strict: what the SDK checks (status == 1)
        return 200, {"code": 200, "error": None, "num_records_imported": len(records), "status": 1}
    return 200, {"code": 200, "num_records_imported": len(records), "status": "OK"}


def _kind(endpoint: str) -> str:
    return endpoint.split("#")[0].strip("/")


def test_every_real_ingestion_body_is_answered_and_stored_as_sent(
    serve: Any, clock: Any, kit: Any, tmp_path: Path,
) -> None:
    project = kit.build_project(tmp_path / "p", timezone="UTC")
    bodies = _raw_lines("mixpanel-ingestion-payloads.jsonl")
    provenance = _provenance("mixpanel-ingestion-payloads.jsonl")
    assert len(bodies) == len(provenance) == 27
    stored: dict[str, list[bytes]] = {"track": [], "import": [], "engage": [], "groups": []}
    wires: dict[str, list[str]] = {kind: [] for kind in stored}
    # token=None: accept every project token (the records carry several real and doc ones)
    with serve(project, token=None, ingest_events_per_minute=None) as (url, _):
        for number, raw in enumerate(bodies, 1):
            endpoint, sender = provenance[number]["endpoint"], _sender(provenance[number]["source"])
            parsed = orjson.loads(raw)
            records = parsed if isinstance(parsed, list) else [parsed]
            # replay at the moment it was sent: /track takes only the last 5 days (§3.1)
            times = [r.get("properties", {}).get("time") for r in records]
            clock.now = _seconds(times[0]) + 1 if isinstance(times[0], int | float) else TODAY
            res = _send(url, endpoint, sender, raw)
            want = INGEST_REFUSED.get(number)
            if want is not None:
                assert (res.status_code, res.json()) == (want["code"], want), number
                continue
            assert (res.status_code, res.json()) == _expected_answer(endpoint, sender, records), (
                number, res.text)
            kind = _kind(endpoint)
            stored[kind].extend(_dumps(r) for r in records)
            wires[kind].extend([{"mixpanel-js": "form:base64", "python-sdk": "form:json"}.get(
                sender, "json-body" if sender == "rudderstack" or kind == "import" else "form:json")]
                * len(records))
    for kind, want_records in stored.items():
        assert [_dumps(r) for r in read_received(project, kind)] == want_records, kind
        assert [e["wire"] for e in iter_received(project / "received", kind)] == wires[kind], kind
    assert {kind: len(records) for kind, records in stored.items()} == {
        "track": 9, "import": 7, "engage": 10, "groups": 1}
    (rejected,) = read_received(project, "rejected")
    assert _dumps(rejected) == bodies[21]


def test_live_track_records_replayed_today_are_refused_as_historical(
    serve: Any, clock: Any, kit: Any, tmp_path: Path,
) -> None:
    """The same mixpanel-js /track bodies, sent now: older than 5 days -> use /import (§3.1)."""
    project = kit.build_project(tmp_path / "p", timezone="UTC")
    bodies = _raw_lines("mixpanel-ingestion-payloads.jsonl")
    clock.now = TODAY
    with serve(project, token=None) as (url, _):
        for number in (2, 7):  # the two live-traffic events, sent in October 2023
            res = _send(url, "/track", "mixpanel-js", bodies[number - 1])
            assert (res.status_code, res.json()) == (200, {
                "status": 0,
                "error": "'properties.time' is older than 5 days: use /import for historical events"})
    assert read_received(project, "track") == []
    assert len(read_received(project, "rejected")) == 2


# --- Raw Export -------------------------------------------------------------------------

def _utc_day(t: float) -> date:
    return datetime.fromtimestamp(_seconds(t), UTC).date()


def _export_project(kit: Any, root: Path) -> tuple[Path, list[bytes], list[date]]:
    """A UTC project whose day files hold every real export record, by the day of its time;
    returns the lines in the order the export reads them (day, then file order)."""
    lines = _raw_lines("mixpanel-export-events.jsonl")
    assert len(lines) == 21
    by_day: dict[date, list[bytes]] = {}
    for line in lines:
        by_day.setdefault(_utc_day(orjson.loads(line)["properties"]["time"]), []).append(line)
    days = sorted(by_day)
    project = kit.build_project(root, timezone="UTC",
                                events={d.isoformat(): [b.decode() for b in by_day[d]] for d in days})
    return project, [line for d in days for line in by_day[d]], days


def _export(url: str, first: date, last: date, **params: str) -> list[bytes]:
    query = {"from_date": first.isoformat(), "to_date": last.isoformat(), "project_id": PID, **params}
    res = requests.get(f"{url}/api/2.0/export?{urllib.parse.urlencode(query)}", auth=SA_AUTH,
                       timeout=10)
    assert res.status_code == 200, res.text
    return res.content.splitlines()


def _with_time(line: bytes, new_time: int) -> bytes:
    rec = orjson.loads(line)
    rec["properties"]["time"] = new_time
    return orjson.dumps(rec)


def test_every_real_export_record_is_served_back(
    serve: Any, clock: Any, kit: Any, tmp_path: Path,
) -> None:
    project, ordered, days = _export_project(kit, tmp_path / "p")
    clock.now = TODAY
    # Default (second precision, reference 1.4): lines pass byte for byte, except a
    # fractional time, which export rounds down to whole seconds (Segment Actions'
    # 1704784217.602 -> 1704784217), and a time stored in ms (the hot-shard doc's
    # 1618716477000 -> 1618716477).
    seconds = []
    for line in ordered:
        t = orjson.loads(line)["properties"]["time"]
        whole = int(t // 1000) if t > MS_ABOVE else int(t)
        seconds.append(line if whole == t and not isinstance(t, float) else _with_time(line, whole))
    assert sum(a != b for a, b in zip(seconds, ordered, strict=True)) == 3
    # time_in_ms=true: seconds x 1000 (the fraction kept), a time already in ms unchanged.
    millis = []
    for line in ordered:
        t = orjson.loads(line)["properties"]["time"]
        millis.append(_with_time(line, int(t) if t > MS_ABOVE else round(t * 1000)))
    with serve(project) as (url, _):
        assert _export(url, days[0], days[-1]) == seconds
        assert _export(url, days[0], days[-1], time_in_ms="true") == millis
        for day in days:  # one day at a time: the day file is that day's answer
            assert _export(url, day, day) == [s for s, line in zip(seconds, ordered, strict=True)
                                              if _utc_day(orjson.loads(line)["properties"]["time"]) == day]
    # Served in another timezone, records are re-bucketed by their time: ms times included.
    with serve(project, timezone="Asia/Kolkata") as (url, _):
        got = _export(url, days[0], days[-1] + timedelta(days=1))
        assert got == seconds
        assert b'"time":1618716477,' in b"\n".join(got)  # the ms day, as seconds
        ms_day = _utc_day(1618716477000)
        assert len(_export(url, ms_day, ms_day + timedelta(days=1), time_in_ms="true")) == 2


def test_legacy_project_time_matches_the_real_ingestion_timestamps(
    serve: Any, clock: Any, kit: Any, tmp_path: Path,
) -> None:
    """The records tagged 7 h/8 h behind their ingestion timestamps come from US/Pacific
    legacy projects (reference §1.6). In such a project the emulator turns their ``time``
    into the real UTC instant: a few seconds before Mixpanel processed them, and on the UTC
    day an export served in UTC puts them."""
    lines = _raw_lines("mixpanel-export-events.jsonl")
    provenance = _provenance("mixpanel-export-events.jsonl")
    pacific = [line for n, line in enumerate(lines, 1)
               if any(t.startswith(("time-is-7h-behind", "time-is-8h-behind"))
                      for t in provenance[n]["shape_tags"])]
    assert len(pacific) == 9
    zone = ZoneInfo("America/Los_Angeles")
    by_wall_day: dict[date, list[bytes]] = {}
    utc_of: dict[bytes, float] = {}
    for line in pacific:
        props = orjson.loads(line)["properties"]
        wall = datetime.fromtimestamp(props["time"], UTC)
        utc_of[line] = wall.replace(tzinfo=zone).timestamp()
        assert 0 <= props["mp_processing_time_ms"] / 1000 - utc_of[line] < 120, line
        by_wall_day.setdefault(wall.date(), []).append(line)
    days = sorted(by_wall_day)
    project = kit.build_project(tmp_path / "p", timezone="America/Los_Angeles", legacy_time=True,
                                events={d.isoformat(): [b.decode() for b in by_wall_day[d]]
                                        for d in days})
    in_file_order = [line for d in days for line in by_wall_day[d]]
    clock.now = TODAY
    utc_days = sorted({datetime.fromtimestamp(t, UTC).date() for t in utc_of.values()})
    crossing = [line for d in days for line in by_wall_day[d]
                if datetime.fromtimestamp(utc_of[line], UTC).date() != d]
    assert len(crossing) == 3  # evening records are on the next UTC day (e.g. the iOS 20:34)
    with serve(project, timezone="UTC") as (url, _):
        for day in utc_days:
            want = [line for line in in_file_order
                    if datetime.fromtimestamp(utc_of[line], UTC).date() == day]
            assert _export(url, day, day) == want, day


# --- Engage ------------------------------------------------------------------------------

def test_every_real_profile_is_served_by_engage(
    serve: Any, clock: Any, kit: Any, tmp_path: Path,
) -> None:
    profiles = [orjson.loads(line) for line in _raw_lines("mixpanel-engage-profiles.jsonl")]
    assert len(profiles) == 7
    project = kit.build_project(tmp_path / "p", timezone="UTC", users=profiles)
    clock.now = TODAY
    with serve(project, engage_page_size=3) as (url, _):
        def engage(**params: Any) -> dict[str, Any]:
            res = requests.get(f"{url}/api/2.0/engage", params={"project_id": PID, **params},
                               auth=SA_AUTH, timeout=10)
            assert res.status_code == 200, res.text
            return res.json()  # type: ignore[no-any-return]

        first = engage()
        assert (first["page"], first["page_size"], first["total"]) == (0, 3, 7)
        rows, page = list(first["results"]), 0
        while len(rows) < first["total"]:
            page += 1
            more = engage(page=page, session_id=first["session_id"])
            assert "total" not in more and more["page"] == page
            rows.extend(more["results"])
        assert page == 2
        assert [_dumps(r) for r in rows] == [_dumps(p) for p in profiles]
        for profile in profiles:  # the integer $distinct_id 1 is asked for as "1"
            found = engage(distinct_id=str(profile["$distinct_id"]))
            assert found["total"] == 1 and [_dumps(r) for r in found["results"]] == [_dumps(profile)]
        # the current endpoint: POST /api/query/engage with a form body, distinct_ids list
        res = requests.post(f"{url}/api/query/engage", params={"project_id": PID}, auth=SA_AUTH,
                            data={"distinct_ids": '["5881f7d2b660af53781c0361", 1]'}, timeout=10)
        assert res.status_code == 200 and res.json()["total"] == 2
        assert [_dumps(r) for r in res.json()["results"]] == [_dumps(profiles[2]), _dumps(profiles[6])]
        # $transactions lists, $campaigns/$deliveries and the integer id survive as sent
        by_id = {r["$distinct_id"]: r for r in rows}
        assert type(by_id[1]["$distinct_id"]) is int
        assert by_id["14d49c49baea-0c3c5aa10e132c8-4b594236-100200-14d49c49baf64b"][
            "$properties"]["$transactions"][1] == {"$time": "2015-05-12T15:21:18", "$amount": 63960}
