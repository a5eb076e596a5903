"""Session 20 fixes, beyond the reviewer's tests: which limit a 429 names, when a refused
ingestion batch fits, what the ingestion byte cap and byte rate measure, and in which zone
an engage ``where`` reads a profile's date strings and its own."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from mp2amp.emulators.mixpanel.ratelimit import Admission, RateLimiter, Refusal, VolumeLimiter
from mp2amp.emulators.mixpanel.where import Datetime, compile_where

SA_AUTH = ("sa-user", "sa-secret")
LA = ZoneInfo("America/Los_Angeles")
UTC = ZoneInfo("UTC")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- export / query windows -------------------------------------------------------------


def test_the_429_names_the_limit_with_the_longest_wait() -> None:
    # three in one second fill both the second and the hour
    clock = Clock()
    limiter = RateLimiter([(3, 1.0, "second"), (3, 3600.0, "hour")], None, clock)
    assert all(isinstance(limiter.try_acquire(), Admission) for _ in range(3))
    clock.now += 0.25
    refused = limiter.try_acquire()
    assert refused == Refusal("3 queries per hour", 3600)  # ceil(3599.75), not the second's 1
    clock.now += 3600 - 0.25 - 0.5
    assert limiter.try_acquire() == Refusal("3 queries per hour", 1)  # 0.5 s left, rounded up
    clock.now += 0.5
    assert isinstance(limiter.try_acquire(), Admission)


def test_a_full_concurrency_cap_does_not_hide_a_full_window() -> None:
    clock = Clock()
    limiter = RateLimiter([(1, 60.0, "minute")], 1, clock)
    held = limiter.try_acquire()
    assert isinstance(held, Admission)
    # before: "a maximum of 1 concurrent queries", retry in 1 s, refused again by the minute
    assert limiter.try_acquire() == Refusal("1 queries per minute", 60)
    held.release()
    clock.now += 60
    assert isinstance(limiter.try_acquire(), Admission)


def test_export_429_body_names_the_hour_when_both_windows_are_full(
    kit: Any, tmp_path: Path, serve: Any, clock: Any
) -> None:
    day = "2024-03-08"
    data = kit.build_project(tmp_path / "p", events={day: [kit.ev("A", 1_709_900_000)]}, timezone="UTC")
    params = {"project_id": "4242", "from_date": day, "to_date": day}
    with serve(data, export_per_hour=6, export_per_second=3) as (url, _):
        for i in range(6):
            assert requests.get(f"{url}/api/2.0/export", params=params, auth=SA_AUTH, timeout=10).status_code == 200
            if i == 2:
                clock.advance(1.0)
        refused = requests.get(f"{url}/api/2.0/export", params=params, auth=SA_AUTH, timeout=10)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3599"  # the first three leave the hour 3599 s on, not 1
    assert refused.json()["error"] == "Query rate limit exceeded: this project allows 6 queries per hour"


# --- ingestion volume ---------------------------------------------------------------------


def test_volume_wait_walks_entries_until_events_and_bytes_both_fit() -> None:
    clock = Clock()
    limiter = VolumeLimiter(10, clock, bytes_per_minute=1000)
    assert limiter.try_take(1, 600) is None  # t=1000
    clock.now += 10
    assert limiter.try_take(1, 100) is None  # t=1010
    clock.now += 10
    assert limiter.try_take(8, 100) is None  # t=1020: 10 events, 800 bytes
    clock.now += 5
    # 1 event of 300 bytes: the events fit once t=1000 leaves, the bytes too (200 + 300);
    # 1 event of 950 bytes: the bytes only once t=1020 leaves as well (100 + 950 > 1000)
    assert limiter.try_take(1, 300) == 35  # 1000 + 60 - 1025
    assert limiter.try_take(1, 950) == 55  # 1020 + 60 - 1025
    clock.now += 55
    assert limiter.try_take(1, 950) is None


def test_volume_wait_for_a_batch_over_the_cap_on_its_own_is_the_empty_window() -> None:
    clock = Clock()
    limiter = VolumeLimiter(5, clock)
    assert limiter.try_take(6) == 60  # never fits; a minute, not a 1 s hot loop
    assert limiter.try_take(2) is None
    clock.now += 20
    assert limiter.try_take(6) == 40  # until the window is empty


# --- byte cap and byte rate on the decoded JSON -----------------------------------------


def _profiles(n: int, pad: int) -> bytes:
    rows = [{"$token": "tok-123", "$distinct_id": f"u{i}", "$set": {"p": "v" * pad}} for i in range(n)]
    return json.dumps(rows).encode()


def test_a_base64_form_over_the_cap_by_its_json_gets_413(kit: Any, tmp_path: Path, serve: Any) -> None:
    data = kit.build_project(tmp_path / "p")
    raw = _profiles(5, 400)  # ~2.2 KB of JSON, ~3 KB as base64
    with serve(data, import_max_bytes=len(raw) - 1) as (url, _):
        r = requests.post(f"{url}/engage", params={"verbose": "1"},
                          data={"data": base64.b64encode(raw).decode()}, timeout=10)
        assert (r.status_code, r.json()) == (413, {
            "code": 413, "error": f"request exceeds max limit of {len(raw) - 1} bytes",
            "status": "Request Entity Too Large"})
    with serve(data, import_max_bytes=len(raw)) as (url, _):
        r = requests.post(f"{url}/engage", params={"verbose": "1"},
                          data={"data": base64.b64encode(raw).decode()}, timeout=10)
        assert (r.status_code, r.text) == (200, '{"status":1,"error":null}')


def test_a_gzipped_base64_form_is_measured_by_its_json(kit: Any, tmp_path: Path, serve: Any) -> None:
    # the gzip bound is the wire guard: the inflated form is bigger than the JSON in it
    data = kit.build_project(tmp_path / "p")
    raw = _profiles(5, 400)
    form = ("data=" + base64.b64encode(raw).decode().replace("+", "%2B").replace("/", "%2F")
            .replace("=", "%3D")).encode()
    assert len(form) > len(raw)
    with serve(data, import_max_bytes=len(raw)) as (url, _):
        r = requests.post(f"{url}/engage", params={"verbose": "1"}, data=gzip.compress(form),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert (r.status_code, r.text) == (200, '{"status":1,"error":null}')


def test_the_byte_rate_counts_the_decoded_json(kit: Any, tmp_path: Path, serve: Any) -> None:
    data = kit.build_project(tmp_path / "p")
    raw = _profiles(3, 300)
    # two batches' JSON fit in the minute; before, one batch's base64 form took most of it
    assert len(base64.b64encode(raw)) > len(raw) + 10
    with serve(data, ingest_bytes_per_minute=2 * len(raw) + 10) as (url, _):
        for _ in range(2):
            r = requests.post(f"{url}/engage", data={"data": base64.b64encode(raw).decode()}, timeout=10)
            assert (r.status_code, r.text) == (200, "1")
        r = requests.post(f"{url}/engage", data={"data": base64.b64encode(raw).decode()}, timeout=10)
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"


# --- engage where: profile dates in UTC, the expression's own in the project zone -------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # $last_seen 03:00 UTC is 19:00 the day before in Los Angeles
        ('properties["$last_seen"] < datetime(1704870000)', True),  # 07:00Z
        ('properties["$last_seen"] < datetime(1704855601)', True),  # 03:00:01Z
        # the literal is read in the project zone: 2024-01-09T20:00 LA is 04:00Z on the 10th
        ('properties["$last_seen"] < datetime("2024-01-09T20:00:00")', True),
        ('properties["$last_seen"] < datetime("2024-01-09T18:00:00")', False),
        ('datetime(properties["$last_seen"]) == datetime(1704855600)', True),
        ('string(datetime(1704855600)) == properties["$last_seen"]', True),  # strings: as text
        ('event["$time"] > "2024-01-09T20:30:00"', False),  # a literal string: LA, 04:30Z
    ],
)
def test_engage_where_zones(expr: str, expected: bool) -> None:
    props = {"$last_seen": "2024-01-10T03:00:00", "$time": Datetime(1704859200.0)}  # 04:00Z

    def lookup(key: str) -> Any:
        return props.get(key)

    assert compile_where(expr, LA, UTC)(lookup) is expected


def test_without_value_tz_property_dates_stay_in_the_expression_zone() -> None:
    # export passes one zone: its behaviour is unchanged
    where = compile_where('properties["d"] < datetime(1704870000)', LA)
    assert where({"d": "2024-01-10T03:00:00"}.get) is False  # 11:00Z in LA reading


def test_a_url_encoded_json_form_near_the_cap_is_not_refused_by_the_wire_guard(
        kit: Any, tmp_path: Path, serve: Any) -> None:
    # the Python SDK's form: data=<raw JSON>, url-encoded (every "{}:, becomes %XX): ~2.6x the
    # JSON here, past the former guard of twice the cap (4 MiB) though the JSON is under it
    data = kit.build_project(tmp_path / "p")
    cap = 2 * 1024 * 1024
    rows = [{"$token": "tok-123", "$distinct_id": f"u{i}", "$set": {"p": "{" * 4600}}
            for i in range(400)]
    raw = json.dumps(rows).encode()
    assert cap * 0.85 < len(raw) < cap
    with serve(data, import_max_bytes=cap) as (url, _):
        r = requests.post(f"{url}/engage", params={"verbose": "1"},
                          data={"data": raw.decode()}, timeout=30)
        assert 2 * cap < len(r.request.body or "") < 3 * cap
        assert (r.status_code, r.text) == (200, '{"status":1,"error":null}')
