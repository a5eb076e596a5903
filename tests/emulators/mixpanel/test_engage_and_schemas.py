"""Engage Query API paging and filters, group profiles, and the Lexicon Schemas API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from mp2amp.emulators.mixpanel import data_group_id

SA_AUTH = ("sa-user", "sa-secret")
PID = {"project_id": "4242"}
N = 23


@pytest.fixture
def project(kit: Any, tmp_path: Path) -> Path:
    users = [
        {"$distinct_id": f"u{i}", "$properties": {"$email": f"u{i}@example.com", "n": i, "plan": "pro" if i % 3 == 0 else "free",
                                                 "$last_seen": f"2024-01-{1 + i:02d}T10:00:00"}}
        for i in range(N)
    ]
    groups = {"company_id": [{"$group_key": "company_id", "$group_id": f"c{i}", "$properties": {"name": f"Co {i}", "seats": i}}
                             for i in range(4)]}
    schema = [
        {"entityType": "event", "name": "Order Completed", "schemaJson": {"description": "d", "properties": {"price": {"type": "number"}}}},
        {"entityType": "event", "name": "Signed Up", "schemaJson": {"properties": {}}},
        {"entityType": "profile", "name": "$user", "schemaJson": {"properties": {"plan": {"type": "string"}}}},
    ]
    return kit.build_project(tmp_path / "p", users=users, groups=groups, schema=schema)


def engage(url: str, method: str = "GET", path: str = "/api/2.0/engage", **params: Any) -> requests.Response:
    if method == "GET":
        return requests.get(url + path, params={**PID, **params}, auth=SA_AUTH, timeout=10)
    return requests.post(url + path, params=PID, data=params, auth=SA_AUTH, timeout=10)


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/2.0/engage"), ("POST", "/api/query/engage"),
                                              ("POST", "/api/2.0/engage/"), ("GET", "/api/query/engage")])
def test_paging_with_session_and_total_on_page_zero(project: Path, serve: Any, method: str, path: str) -> None:
    with serve(project, engage_page_size=10) as (url, _):
        first = engage(url, method, path).json()
        assert [first[k] for k in ("page", "page_size", "status", "total")] == [0, 10, "ok", N]
        seen = [r["$distinct_id"] for r in first["results"]]
        page = 0
        while len(seen) < first["total"]:
            page += 1
            body = engage(url, method, path, session_id=first["session_id"], page=page).json()
            assert "total" not in body and body["session_id"] == first["session_id"] and body["page"] == page
            seen += [r["$distinct_id"] for r in body["results"]]
        assert seen == [f"u{i}" for i in range(N)] and page == 2
        past = engage(url, method, path, session_id=first["session_id"], page=3).json()
        assert past["results"] == []


def test_page_above_zero_needs_the_session(project: Path, serve: Any) -> None:
    with serve(project, engage_page_size=10) as (url, _):
        resp = engage(url, page=1)
        assert resp.status_code == 400 and resp.json()["error"] == "session_id is required when page is above 0"
        assert engage(url, page=1, session_id="123-ABC").status_code == 400
        sid = engage(url).json()["session_id"]
        other = engage(url, page=1, session_id=sid, where='properties["n"] > 3')
        assert other.status_code == 400 and "different query" in other.json()["error"]


def test_where_output_properties_and_ids(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        body = engage(url, "POST", where='properties["plan"] == "pro" and properties["n"] >= 6',
                      output_properties='["n","$email"]').json()
        assert body["total"] == 6
        assert body["results"][0] == {"$distinct_id": "u6", "$properties": {"n": 6, "$email": "u6@example.com"}}
        body = engage(url, where='properties["$last_seen"] >= "2024-01-20T00:00:00"').json()
        assert [r["$distinct_id"] for r in body["results"]] == ["u19", "u20", "u21", "u22"]
        assert [r["$distinct_id"] for r in engage(url, distinct_id="u4").json()["results"]] == ["u4"]
        body = engage(url, distinct_ids='["u1","u9","nobody"]').json()
        assert body["total"] == 2 and [r["$distinct_id"] for r in body["results"]] == ["u1", "u9"]
        for params, message in (
            ({"where": 'properties["n"] >'}, "invalid where expression"),
            ({"distinct_ids": "u1"}, "distinct_ids must be a JSON array"),
            ({"filter_by_cohort": '{"id": 1}'}, "filter_by_cohort is not supported"),
            ({"data_group_id": "999"}, "data_group_id '999' is not a group key"),
            ({"page": "x"}, "page must be a non-negative integer"),
        ):
            resp = engage(url, **params)
            assert resp.status_code == 400 and resp.json()["error"].startswith(message), resp.text


def test_group_profiles_by_data_group_id(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        info = requests.get(f"{url}/_emulator/info", timeout=10).json()
        gid = info["data_group_ids"]["company_id"]
        assert gid == data_group_id("company_id") and gid.startswith("-")
        body = engage(url, data_group_id=gid, where='properties["seats"] > 1').json()
        assert body["total"] == 2
        assert body["results"][0] == {"$distinct_id": "c2", "$group_key": "company_id", "$group_id": "c2",
                                      "$properties": {"name": "Co 2", "seats": 2}}
        assert engage(url, data_group_id="company_id").json()["total"] == 4


def test_engage_auth_and_query_limits(project: Path, serve: Any, clock: Any) -> None:
    with serve(project, query_per_hour=2) as (url, _):
        assert requests.get(f"{url}/api/2.0/engage", params=PID, timeout=10).status_code == 401
        assert requests.get(f"{url}/api/2.0/engage", auth=("api-secret-1", ""), timeout=10).status_code == 200
        assert engage(url).status_code == 200
        refused = engage(url)
        assert refused.status_code == 429 and refused.json()["error"].endswith("2 queries per hour")
        clock.advance(3600)
        assert engage(url).status_code == 200


def test_lexicon_schemas(project: Path, serve: Any, clock: Any) -> None:
    with serve(project, lexicon_per_minute=5) as (url, _):
        base = f"{url}/api/app/projects/4242/schemas"
        body = requests.get(base, auth=SA_AUTH, timeout=10).json()
        assert body["status"] == "ok" and [e["name"] for e in body["results"]] == ["Order Completed", "Signed Up", "$user"]
        events = requests.get(f"{base}/event", auth=SA_AUTH, timeout=10).json()["results"]
        assert [e["name"] for e in events] == ["Order Completed", "Signed Up"]
        one = requests.get(f"{base}/event/Order Completed", auth=SA_AUTH, timeout=10).json()
        assert one["results"]["schemaJson"]["properties"] == {"price": {"type": "number"}}
        missing = requests.get(f"{base}/event/Nope", auth=SA_AUTH, timeout=10)
        assert missing.status_code == 404 and missing.json()["status"] == "error"
        clock.advance(60)
        assert requests.get(f"{base}/thing", auth=SA_AUTH, timeout=10).status_code == 400
        assert requests.get(base, auth=("api-secret-1", ""), timeout=10).status_code == 401  # service accounts only
        assert requests.get(f"{url}/api/app/projects/1/schemas", auth=SA_AUTH, timeout=10).status_code == 403
        for _ in range(4):  # with the 400 above: 5 requests in this minute
            assert requests.get(base, auth=SA_AUTH, timeout=10).status_code == 200
        limited = requests.get(base, auth=SA_AUTH, timeout=10)
        assert limited.status_code == 429 and limited.json()["status"] == "error"
