"""Adversarial review (session 14) of the Amplitude load path: uploader, sender, classifier.

Each response goes through the real ``responses.classify`` from a scripted loopback server
(``shared_kit.serve_routes``). Strict xfails are defects (the reason says what is wrong and
where); the passing tests pin edge cases of the contract the other load tests do not reach.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

import mp2amp.load.sender as sender_module
from mp2amp.errors import AuthError, Mp2AmpError
from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.deadletter import read_dead_letters
from mp2amp.load.responses import classify
from shared_kit import serve_routes

KEY = "test-key-session14"
OK = {"code": 200, "events_ingested": 1, "payload_size_bytes": 1, "server_upload_time": 1}

# (request number, decoded request body) -> (status, body, headers)
Script = Callable[[int, dict[str, Any]], tuple[int, Any, dict[str, str] | None]]


def _ev(i: int, device: str | None, user: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_type": "view",
        "time": 1_700_000_000_000 + i * 1000,
        "insert_id": f"s14-{i:04d}",
    }
    if device is not None:
        e["device_id"] = device
    if user is not None:
        e["user_id"] = user
    return e


def _six() -> list[dict[str, Any]]:
    return [_ev(i, f"device-{i:03d}") for i in range(6)]


class Outcome:
    def __init__(self) -> None:
        self.requests: list[tuple[float, list[str]]] = []  # (arrival, insert_ids)
        self.report: Any = None
        self.error: BaseException | None = None


async def _run(
    script: Script,
    events: list[dict[str, Any]],
    observer: Any,
    *,
    dlq: DeadLetterFile | None = None,
    **kw: Any,
) -> Outcome:
    out = Outcome()

    async def handler(request: web.Request) -> web.StreamResponse:
        doc = orjson.loads(await request.read())  # aiohttp un-gzips the request body
        out.requests.append((time.monotonic(), [e["insert_id"] for e in doc["events"]]))
        status, body, headers = script(len(out.requests) - 1, doc)
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return web.Response(
            status=status, body=raw, headers=headers, content_type="application/json"
        )

    routes = {("POST", "/batch"): handler, ("POST", "/2/httpapi"): handler}
    async with serve_routes(routes) as url:
        base: dict[str, Any] = dict(
            api_key=KEY,
            api_host=url,
            concurrency=1,
            backoff_base=0.005,
            backoff_cap=0.05,
            throttle_wait=0.05,
            max_retries=2,
        )
        base.update(kw)
        try:
            async with Uploader(UploadSettings(**base), observer=observer, dead_letters=dlq) as up:
                for i, e in enumerate(events):
                    await up.submit(e, ("src.jsonl", i + 1), batch_key="w")
                out.report = await up.close()
        except Mp2AmpError as exc:
            out.error = exc
    return out


def _first_then_ok(first: tuple[int, Any, dict[str, str] | None]) -> Script:
    def script(n: int, doc: dict[str, Any]) -> tuple[int, Any, dict[str, str] | None]:
        return first if n == 0 else (200, {**OK, "events_ingested": len(doc["events"])}, None)

    return script


class _SleepSpy:
    """Stands in for ``asyncio`` inside sender.py: records each backoff/throttle sleep of a
    request and returns at once (holds use the loop's timers, which are left alone)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


# --- defects ---------------------------------------------------------------------------


def test_a_400_naming_a_silenced_device_but_no_index_dead_letters_only_that_device(
    tmp_path: Path, observer: Any
) -> None:
    body = {
        "code": 400,
        "eps_threshold": 100,
        "error": "Events silenced for device_id",
        "exceeded_daily_quota_devices": {},
        "silenced_devices": ["device-002"],
        "silenced_events": [],
        "throttled_devices": {},
        "throttled_events": [],
    }
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    out = asyncio.run(_run(_first_then_ok((400, body, None)), _six(), observer, dlq=dlq))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert out.error is None
    assert [(r["line"], r["reason"]) for r in rows] == [(3, "silenced_device")]
    assert out.report.accepted == 5


@pytest.mark.parametrize(
    "body", [{"status": "ok"}, {"message": "Login required"}], ids=["other-service", "json-portal"]
)
def test_a_2xx_json_object_that_is_not_amplitudes_answer_is_not_counted_accepted(
    observer: Any, body: dict[str, Any]
) -> None:
    assert classify(200, orjson.dumps(body), ids=[("device-000", None)]).kind != "accepted"

    out = asyncio.run(_run(lambda n, doc: (200, body, None), _six(), observer, max_retries=1))
    assert not observer.accepted
    assert out.report is None or out.report.accepted == 0


@pytest.mark.parametrize("endpoint", ["batch", "httpapi"])
def test_a_project_level_429_without_retry_after_waits_the_documented_60_seconds(
    monkeypatch: pytest.MonkeyPatch, observer: Any, endpoint: str
) -> None:
    spy = _SleepSpy()
    monkeypatch.setattr(sender_module, "asyncio", spy)
    body = {
        "code": 429,
        "error": "Too many requests",
        "throttled_devices": {},
        "throttled_users": {},
        "throttled_events": [],
    }
    out = asyncio.run(
        _run(
            _first_then_ok((429, body, None)),
            _six(),
            observer,
            endpoint=endpoint,
            throttle_wait=None,
        )
    )
    assert out.error is None and out.report.accepted == 6 and out.report.throttles == 1
    assert len(spy.delays) == 1
    assert spy.delays[0] >= 60.0


# --- edge cases that hold ----------------------------------------------------------------


def test_a_200_whose_body_code_is_400_dead_letters_the_listed_event_once_and_resends_the_rest(
    tmp_path: Path, observer: Any
) -> None:
    # index 1 listed twice in one list and again in another; 99 is past the request
    body = {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [1, 1, 99]},
        "events_with_missing_fields": {"event_type": [1]},
    }
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    out = asyncio.run(_run(_first_then_ok((200, body, None)), _six(), observer, dlq=dlq))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(r["line"], r["reason"]) for r in rows] == [(2, "invalid_field")]
    assert out.report.accepted == 5 and out.report.dead_lettered == {"invalid_field": 1}
    assert [ids for _, ids in out.requests][1] == [f"s14-{i:04d}" for i in (0, 2, 3, 4, 5)]
    assert sorted(observer.accepted_ids()) == [f"s14-{i:04d}" for i in (0, 2, 3, 4, 5)]


def test_a_400_listing_every_event_dead_letters_all_and_resends_nothing(
    tmp_path: Path, observer: Any
) -> None:
    body = {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [5, 4, 3]},
        "events_with_invalid_id_lengths": {"device_id": [0, 1, 2]},
    }
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    out = asyncio.run(_run(_first_then_ok((400, body, None)), _six(), observer, dlq=dlq))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted((r["line"], r["reason"]) for r in rows) == [
        (1, "invalid_id_length"),
        (2, "invalid_id_length"),
        (3, "invalid_id_length"),
        (4, "invalid_field"),
        (5, "invalid_field"),
        (6, "invalid_field"),
    ]
    assert len(out.requests) == 1 and out.report.accepted == 0
    assert out.report.settled == out.report.submitted == 6
    assert observer.accepted == {"w/0/0": []}  # the batch is settled, nothing accepted


def test_the_documented_silenced_body_end_to_end(tmp_path: Path, observer: Any) -> None:
    # amplitude-api.md §1.8 "400, silenced devices", with this request's device ids
    events = [_ev(i, f"device-{i:03d}") for i in range(8)]
    events[3]["device_id"] = events[4]["device_id"] = "throttled_device_id_1"
    events[5]["device_id"] = "silenced_device_id_1"
    events[6]["device_id"] = "silenced_device_id_2"
    body = {
        "code": 400,
        "eps_threshold": 100,
        "error": "Events silenced for device_id",
        "exceeded_daily_quota_devices": {},
        "silenced_devices": ["silenced_device_id_1", "silenced_device_id_2"],
        "silenced_events": [5, 6],
        "throttled_devices": {"throttled_device_id_1": 0, "throttled_device_id_2": 100},
        "throttled_events": [3, 4],
    }
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    out = asyncio.run(
        _run(_first_then_ok((400, body, None)), events, observer, dlq=dlq, throttle_wait=0.6)
    )
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted((r["line"], r["reason"]) for r in rows) == [
        (6, "silenced_device"),
        (7, "silenced_device"),
    ]
    sent = [ids for _, ids in out.requests]
    # the five others at once; the throttled device's two only after its pause, in order
    assert sent[1] == [f"s14-{i:04d}" for i in (0, 1, 2, 7)]
    assert sent[2] == ["s14-0003", "s14-0004"]
    assert out.requests[2][0] - out.requests[0][0] >= 0.55
    assert out.report.accepted == 6 and out.report.throttles == 1


def test_a_429_naming_a_device_and_a_user_holds_their_events_in_later_batches_too(
    observer: Any,
) -> None:
    # max_events=3: X's later events sit in the lane's next batches; user uX's event is
    # on another device. Both wait for the pause; the others flow on at once.
    events = [
        _ev(0, "dev-X"),
        _ev(1, "dev-A"),
        _ev(2, "dev-B"),
        _ev(3, "dev-X"),
        _ev(4, "dev-C"),
        _ev(5, "dev-X"),
        _ev(6, "dev-D", "user-X"),
    ]
    body = {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": 1000,
        "throttled_devices": {"dev-X": 1200},
        "throttled_users": {"user-X": 1500},
        "throttled_events": [0],
    }
    out = asyncio.run(
        _run(_first_then_ok((429, body, None)), events, observer, max_events=3, throttle_wait=0.6)
    )
    first_after = out.requests[0][0]
    order = [iid for _, ids in out.requests[1:] for iid in ids]
    arrival = {iid: t for t, ids in out.requests[1:] for iid in ids}
    # not throttled: resent at once
    for iid in ("s14-0001", "s14-0002", "s14-0004"):
        assert arrival[iid] - first_after < 0.5, (iid, out.requests)
    # the held device and user: after the pause, and dev-X in submission order
    for iid in ("s14-0000", "s14-0003", "s14-0005", "s14-0006"):
        assert arrival[iid] - first_after >= 0.55, (iid, out.requests)
    xs = [iid for iid in order if iid in {"s14-0000", "s14-0003", "s14-0005"}]
    assert xs == ["s14-0000", "s14-0003", "s14-0005"]
    assert out.report.accepted == 7 and len(order) == 7


def test_invalid_api_key_in_a_200_body_stops_the_run_and_dead_letters_nothing(
    tmp_path: Path, observer: Any
) -> None:
    body = {"code": 400, "error": f"Invalid API key: {KEY}"}
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    out = asyncio.run(_run(lambda n, doc: (200, body, None), _six(), observer, dlq=dlq))
    dlq.close()
    assert isinstance(out.error, AuthError)
    assert "AMPLITUDE_API_KEY" in str(out.error) and KEY not in str(out.error)
    assert len(out.requests) == 1
    assert read_dead_letters(tmp_path / "dead.jsonl") == [] and not observer.accepted


def test_a_lone_event_too_large_without_gzip_is_dead_lettered_and_its_neighbours_sent(
    tmp_path: Path, observer: Any
) -> None:
    # the uncompressed path (gzip off): a 413 on two events splits, the big one alone
    # gets 413 again and is dead-lettered; the small one goes through
    events = [_ev(0, "device-big"), _ev(1, "device-small")]
    events[0]["event_properties"] = {"pad": "x" * 5000}

    def script(n: int, doc: dict[str, Any]) -> tuple[int, Any, dict[str, str] | None]:
        if any("event_properties" in e for e in doc["events"]):
            return 413, b"<html><body>413 Request Entity Too Large</body></html>", None
        return 200, {**OK, "events_ingested": len(doc["events"])}, None

    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    out = asyncio.run(_run(script, events, observer, dlq=dlq, gzip=False))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert [(r["line"], r["reason"]) for r in rows] == [(1, "event_too_large")]
    assert out.report.accepted == 1 and out.report.splits == 1
    assert [len(ids) for _, ids in out.requests] == [2, 1, 1]


def test_a_retry_after_above_the_backoff_cap_is_a_floor_for_a_503(
    monkeypatch: pytest.MonkeyPatch, observer: Any
) -> None:
    spy = _SleepSpy()
    monkeypatch.setattr(sender_module, "asyncio", spy)
    first = (503, {"code": 503, "error": "Service Unavailable"}, {"Retry-After": "42"})
    out = asyncio.run(_run(_first_then_ok(first), _six(), observer))
    assert out.report.accepted == 6 and out.report.retries == 1
    assert spy.delays == [42.0]  # backoff_cap is 0.05 s: the server's ask wins


# --- behaviour the fixes above added -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        OK,
        {"code": 200, "events_ingested": 0, "payload_size_bytes": 2, "server_upload_time": 1},
        {"events_ingested": 6},  # no code: the count alone is Amplitude's
    ],
    ids=["documented", "empty-request", "count-only"],
)
def test_amplitudes_own_2xx_bodies_still_count_accepted(body: dict[str, Any]) -> None:
    assert classify(200, orjson.dumps(body), ids=[("device-000", None)]).kind == "accepted"


@pytest.mark.parametrize(
    "body",
    [{"code": "200"}, {"code": 302, "events_ingested": 1}, {"events_ingested": "6"}],
    ids=["code-as-text", "code-not-2xx", "count-as-text"],
)
def test_a_2xx_body_with_no_int_2xx_code_or_count_is_retried(body: dict[str, Any]) -> None:
    v = classify(200, orjson.dumps(body), ids=[("device-000", None)])
    assert v.kind == "retry" and "not Amplitude's JSON" in v.message


def test_silenced_devices_match_by_device_id_only_and_keep_other_lists() -> None:
    ids = [("dev-S", None), (None, "dev-S"), ("dev-A", None), ("dev-S", "u1"), ("dev-B", None)]
    body = {
        "code": 400,
        "error": "Events silenced for device_id",
        "silenced_devices": ["dev-S"],
        "silenced_events": [4],
        "events_with_invalid_fields": {"time": [0]},
    }
    v = classify(400, orjson.dumps(body), ids=ids)
    assert v.kind == "sort"
    # index 0 keeps its own reason; a user_id equal to the device id is not the device
    assert {i: r for i, (r, _) in v.dead.items()} == {
        0: "invalid_field",
        3: "silenced_device",
        4: "silenced_device",
    }


def test_a_project_level_429_waits_the_longer_retry_after(
    monkeypatch: pytest.MonkeyPatch, observer: Any
) -> None:
    spy = _SleepSpy()
    monkeypatch.setattr(sender_module, "asyncio", spy)
    first = (429, {"code": 429, "error": "Too many requests"}, {"Retry-After": "90"})
    out = asyncio.run(_run(_first_then_ok(first), _six(), observer, throttle_wait=None))
    assert out.report.accepted == 6 and out.report.throttles == 1 and out.report.retries == 0
    assert spy.delays == [90.0]


def test_the_project_level_wait_is_a_setting_defaulting_to_60_seconds(
    monkeypatch: pytest.MonkeyPatch, observer: Any
) -> None:
    spy = _SleepSpy()
    monkeypatch.setattr(sender_module, "asyncio", spy)
    out = asyncio.run(
        _run(
            _first_then_ok((429, {"code": 429, "error": "Too many requests"}, None)),
            _six(),
            observer,
            project_throttle_wait=0.25,
        )
    )
    assert out.report.accepted == 6 and spy.delays == [0.25]
    with pytest.raises(Mp2AmpError, match="project_throttle_wait must be >= 0"):
        UploadSettings(api_key=KEY, project_throttle_wait=-1.0)
    assert UploadSettings(api_key=KEY).project_throttle_wait == 60.0
