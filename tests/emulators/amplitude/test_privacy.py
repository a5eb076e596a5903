"""User Privacy API v1: job creation rules, listing, removal, and the staging->done lifecycle."""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
from amplitude_emulator_helpers import API_KEY, SECRET, Api, Clock, event

AUTH = (API_KEY, SECRET)


def delete(api: Api, body: dict[str, Any]) -> tuple[int, Any]:
    status, raw = api.request("POST", "/api/2/deletions/users", orjson.dumps(body),
                              {"Content-Type": "application/json"}, auth=AUTH)
    return status, orjson.loads(raw)


def seed_users(api: Api) -> dict[str, int]:
    api.send([event(1, user_id="user-00001", user_properties={"email": "a@example.com"}),
              event(2, user_id="user-00002"), event(3, device_id="device-anon-9"),
              event(4, device_id="device-of-1", user_id="user-00001")])
    return {row["user_id"]: row["amplitude_id"] for row in api.exported_rows() if row["user_id"]}


def test_job_lifecycle_erases_the_user(api: Api, clock: Clock) -> None:
    ids = seed_users(api)
    status, jobs = delete(api, {"user_ids": ["user-00001"], "requester": "dpo@example.com"})
    assert status == 200
    (job,) = jobs
    assert job["status"] == "staging"
    assert job["day"] == "2026-01-11"
    assert job["amplitude_ids"] == [{"amplitude_id": ids["user-00001"], "requester": "dpo@example.com",
                                     "requested_on_day": "2026-01-01", "user_id": "user-00001"}]
    clock.advance(1)
    status, listed = api.get_json("/api/2/deletions/users?start_day=2026-01-01&end_day=2026-02-01")
    assert status == 200
    assert [j["status"] for j in listed] == ["staging"]
    status, body = api.post_json("/_emulator/deletions/advance", {})
    assert [j["status"] for j in body["jobs"]] == ["submitted"]
    assert len(api.exported_rows()) == 4  # not erased before done
    status, body = api.post_json("/_emulator/deletions/advance", {})
    assert [j["status"] for j in body["jobs"]] == ["done"]
    assert body["events_erased"] == 2
    rows = api.exported_rows()
    assert {r["user_id"] for r in rows} == {"user-00002", None}
    assert api.stats()["events_stored"] == 2
    _, seg = api.segmentation("Viewed", "totals", "20260101", "20260101")
    assert seg["data"]["series"] == [[2]]
    # The same user_id coming back is a new person without the old properties.
    api.send([event(9, user_id="user-00001")])
    (back,) = [r for r in api.exported_rows() if r["user_id"] == "user-00001"]
    assert back["amplitude_id"] != ids["user-00001"]
    assert back["user_properties"] == {}


def test_request_rules(api: Api, clock: Clock) -> None:
    ids = seed_users(api)
    status, body = delete(api, {"user_ids": [f"user-{n}" for n in range(101)]})
    assert status == 400
    assert "at most 100" in body["error"]
    clock.advance(1)
    status, body = delete(api, {"user_ids": ["user-00002", "nobody-here"]})
    assert status == 400
    assert body["invalid_ids"] == ["nobody-here"]
    clock.advance(1)
    status, jobs = delete(api, {"user_ids": ["user-00002", "nobody-here"],
                                "ignore_invalid_ids": "True"})
    assert status == 200
    assert jobs[0]["invalid_ids"] == ["nobody-here"]
    status, body = delete(api, {"amplitude_ids": [ids["user-00001"]]})  # same second
    assert status == 429
    clock.advance(1)
    status, jobs = delete(api, {"amplitude_ids": [ids["user-00001"]], "ignore_invalid_id": True,
                                "include_mapped_user_ids": True})
    assert status == 200
    assert {e["user_id"] for e in jobs[0]["amplitude_ids"]} == {"user-00001", "user-00002"}
    clock.advance(1)
    status, _ = api.request("POST", "/api/2/deletions/users", b"{}", auth=(API_KEY, "bad"))
    assert status == 401


def test_remove_only_while_staging(api: Api, clock: Clock) -> None:
    ids = seed_users(api)
    delete(api, {"user_ids": ["user-00001", "user-00002"]})
    clock.advance(1)
    aid = ids["user-00002"]
    status, body = api.request("DELETE", f"/api/2/deletions/users/{aid}/2026-01-11", auth=AUTH)
    assert status == 200
    assert orjson.loads(body)["amplitude_id"] == aid
    clock.advance(1)
    status, body = api.request("DELETE", f"/api/2/deletions/users/{aid}/2026-01-11", auth=AUTH)
    # §4.4 "Status codes: 200, 400, 401": a user no longer in the job is a 400, not a 404
    assert (status, orjson.loads(body)["code"]) == (400, 400)
    assert orjson.loads(body)["error"] == "no such user in a job of that day"
    api.post_json("/_emulator/deletions/advance", {})
    clock.advance(1)
    other = ids["user-00001"]
    status, body = api.request("DELETE", f"/api/2/deletions/users/{other}/2026-01-11", auth=AUTH)
    assert status == 400
    assert "submitted" in orjson.loads(body)["error"]


def test_list_range_is_limited_to_six_months(api: Api) -> None:
    status, body = api.get_json("/api/2/deletions/users?start_day=2026-01-01&end_day=2026-12-31")
    assert status == 400
    assert "six months" in body["error"]


def test_delete_from_org_forces_ignore_invalid_ids(api: Api, clock: Clock) -> None:
    # §4.2 ignore_invalid_id: "Forced to `true` when `delete_from_org` is `true`."
    seed_users(api)
    status, jobs = delete(api, {"user_ids": ["user-00002", "nobody-here"], "delete_from_org": True})
    assert status == 200
    assert jobs[0]["invalid_ids"] == ["nobody-here"]
    assert jobs[0]["user_ids"] == ["user-00002"]
    clock.advance(1)
    status, raw = api.request("POST", "/api/2/deletions/users", urllib.parse.urlencode(
        [("user_ids", "user-00001"), ("user_ids", "nobody-either"),
         ("delete_from_org", "true"), ("ignore_invalid_id", "false")]
    ).encode(), {"Content-Type": "application/x-www-form-urlencoded"}, auth=AUTH)
    assert (status, orjson.loads(raw)[0]["invalid_ids"]) == (200, ["nobody-either"])


def test_user_id_of_an_amplitude_id_only_with_include_mapped_user_ids(api: Api, clock: Clock) -> None:
    # §4.2 include_mapped_user_ids: "When `true`, the response includes the `user_id`
    # mapped to each supplied `amplitude_id`"
    ids = seed_users(api)
    status, jobs = delete(api, {"amplitude_ids": [ids["user-00001"]]})
    assert status == 200
    assert jobs[0]["amplitude_ids"] == [{"amplitude_id": ids["user-00001"], "requester": None,
                                         "requested_on_day": "2026-01-01"}]
    clock.advance(1)
    status, jobs = delete(api, {"amplitude_ids": [ids["user-00002"]],
                                "include_mapped_user_ids": "true"})
    assert status == 200
    assert jobs[0]["amplitude_ids"][1]["user_id"] == "user-00002"
