"""A tiny Amplitude ingestion fake for the uploader's component tests (loopback, port 0).

It answers with the exact bodies of reference/amplitude-api.md §1.8 and §2.3 and can inject
5xx, ingest-then-drop, 413 by bytes, per-device 429 storms and daily-quota 429s. The real
emulator (mp2amp.emulators.amplitude) is used as well where it runs; this fake lets the
uploader be tested on its own, with faults the tests steer precisely.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class FakeAmplitude:
    api_key: str = "test-key"
    fail_rate: float = 0.0
    drop_after_ingest_rate: float = 0.0
    max_bytes: int = 20_000_000
    eps_limit: int | None = None          # events per device per second before 429
    quota_devices: set[str] = field(default_factory=set)
    quota_users: set[str] = field(default_factory=set)
    retry_after: str | None = None        # Retry-After header on 503s
    throttle_users: dict[str, int] = field(default_factory=dict)  # user -> 429s still to give
    throttle_devices: dict[str, int] = field(default_factory=dict)  # device -> 429s to give
    retry_after_429: str | None = None    # Retry-After header on per-device/user 429s
    fail_first: int = 0                   # this many requests get a 503 (with retry_after)
    project_retry_after: str = "0.02"     # Retry-After header on project-level 429s
    hang_first: int = 0                   # this many requests ingest, then hang past a timeout
    project_429_first: int = 0            # this many requests get a 429 naming nobody
    seed: int = 0
    stored: Counter[tuple[str, str]] = field(default_factory=Counter)   # (id, insert_id) -> 1
    ingest_attempts: Counter[str] = field(default_factory=Counter)      # insert_id -> times
    arrival: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[int] = field(default_factory=Counter)
    sequence: list[str] = field(default_factory=list)                   # global arrival order
    # every request as the server saw it: (time.monotonic() on arrival, insert_ids, status)
    requests: list[tuple[float, list[str], int]] = field(default_factory=list)
    bodies_gzip: int = 0
    options_seen: list[Any] = field(default_factory=list)
    in_flight_devices: Counter[str] = field(default_factory=Counter)
    overlap: int = 0                      # times one device was in two requests at once
    max_in_flight: int = 0
    _in_flight: int = 0
    _rate: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/batch", self.ingest)
        self.app.router.add_post("/2/httpapi", self.ingest)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
              ) -> web.Response:
        self.statuses[status] += 1
        return web.Response(status=status, body=orjson.dumps(body),
                            content_type="application/json", headers=headers)

    async def ingest(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Content-Encoding") == "gzip":
            self.bodies_gzip += 1
        raw = await request.read()  # aiohttp's server already decompressed gzip
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            return await self._handle(request, raw)
        finally:
            self._in_flight -= 1

    async def _handle(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.reply(400, {"code": 400, "error": "Invalid JSON request body"})
        if doc.get("api_key") != self.api_key:
            return self.reply(400, {"code": 400, "error": f"Invalid API key: {doc.get('api_key')}"})
        self.options_seen.append(doc.get("options"))
        events = doc["events"]
        seen = (time.monotonic(), [str(e.get("insert_id")) for e in events])
        response = await self._sized(request, raw, events)
        self.requests.append((*seen, response.status))
        return response

    async def _sized(self, request: web.Request, raw: bytes, events: list[dict[str, Any]]
                     ) -> web.StreamResponse:
        if len(events) > 2000 or len(raw) > self.max_bytes:
            return self.reply(413, {"code": 413, "error": "Payload too large"})
        devices = {e.get("device_id") or e.get("user_id") for e in events}
        for d in devices:
            if self.in_flight_devices[d]:
                self.overlap += 1
            self.in_flight_devices[d] += 1
        try:
            await asyncio.sleep(0.002)  # let concurrent requests overlap
            return await self._decide(request, events)
        finally:
            for d in devices:
                self.in_flight_devices[d] -= 1

    async def _decide(self, request: web.Request, events: list[dict[str, Any]]
                      ) -> web.StreamResponse:
        if self.fail_rate and self.rng.random() < self.fail_rate:
            status = self.rng.choice((500, 502, 503, 504))
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return self.reply(status, {"code": status, "error": "Service unavailable"}, headers)
        if self.fail_first > 0:
            self.fail_first -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return self.reply(503, {"code": 503, "error": "Service unavailable"}, headers)
        if self.project_429_first > 0:
            self.project_429_first -= 1
            return self.reply(429, {"code": 429, "error": "Too many requests"},
                              {"Retry-After": self.project_retry_after})
        if any(e.get("event_type") == "__missing_api_key__" for e in events):
            # the documented example: a request-level field plus an event index list
            return self.reply(400, {"code": 400, "error": "Request missing required field",
                                    "missing_field": "api_key",
                                    "events_with_missing_fields": {"event_type": [0]}})
        if any(e.get("event_type") == "__poison__" for e in events):
            # a request-level 400 that names no event (the SDK would retry it forever)
            return self.reply(400, {"code": 400, "error": "Invalid event JSON"})
        missing: dict[str, list[int]] = defaultdict(list)
        invalid: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(events):
            if not e.get("event_type"):
                missing["event_type"].append(i)
            if not isinstance(e.get("time"), int):
                invalid["time"].append(i)
        if missing or invalid:
            body: dict[str, Any] = {"code": 400, "error": "Invalid field values on some events"}
            if missing:
                body["events_with_missing_fields"] = missing
            if invalid:
                body["events_with_invalid_fields"] = invalid
            return self.reply(400, body)
        q_dev = {e["device_id"]: 500_900 for e in events if e.get("device_id") in self.quota_devices}
        q_usr = {e["user_id"]: 500_200 for e in events if e.get("user_id") in self.quota_users}
        throttled = self._throttled(events)
        t_usr = {e["user_id"]: 31 for e in events if self.throttle_users.get(e.get("user_id"), 0)}
        for u in t_usr:
            self.throttle_users[u] -= 1
        for d in {e.get("device_id") for e in events}:
            if d is not None and self.throttle_devices.get(d, 0) > 0:
                self.throttle_devices[d] -= 1
                throttled[d] = 31
        if q_dev or q_usr or throttled or t_usr:
            idx = [i for i, e in enumerate(events)
                   if e.get("device_id") in throttled or e.get("device_id") in q_dev
                   or e.get("user_id") in q_usr or e.get("user_id") in t_usr]
            return self.reply(429, {
                "code": 429, "error": "Too many requests for some devices and users",
                "eps_threshold": self.eps_limit or 1000,
                "throttled_devices": {d: n for d, n in throttled.items()}, "throttled_users": t_usr,
                "exceeded_daily_quota_users": q_usr, "exceeded_daily_quota_devices": q_dev,
                "throttled_events": idx},
                {"Retry-After": self.retry_after_429} if self.retry_after_429 else None)
        for e in events:
            key = e.get("device_id") or e.get("user_id")
            self.ingest_attempts[e["insert_id"]] += 1
            if (key, e["insert_id"]) not in self.stored:
                self.stored[(key, e["insert_id"])] = 1
                self.arrival[key].append(e["insert_id"])
                self.sequence.append(e["insert_id"])
        if self.hang_first > 0:
            self.hang_first -= 1
            await asyncio.sleep(1.0)  # the client times out first; the events are stored
        if self.drop_after_ingest_rate and self.rng.random() < self.drop_after_ingest_rate:
            assert request.transport is not None
            request.transport.abort()  # ingested, but the client never hears back
            self.statuses[0] += 1
            return web.Response(status=200)
        return self.reply(200, {"code": 200, "events_ingested": len(events),
                                "payload_size_bytes": 0,
                                "server_upload_time": int(time.time() * 1000)})

    def _throttled(self, events: list[dict[str, Any]]) -> dict[str, int]:
        if self.eps_limit is None:
            return {}
        now = time.monotonic()
        per: Counter[str] = Counter(e.get("device_id") for e in events if e.get("device_id"))
        out: dict[str, int] = {}
        for d, n in per.items():
            window = [t for t in self._rate[d] if now - t < 1.0]
            # like Amplitude's average over a recent window: a device already at the
            # limit is throttled; one under it may send this request
            if len(window) >= self.eps_limit:
                out[d] = len(window)
            else:
                window.extend([now] * n)
            self._rate[d] = window
        return out


# --- helpers shared by the load tests ------------------------------------------------

import pytest  # noqa: E402

from mp2amp.load import Submitted  # noqa: E402


class RecordingObserver:
    """What a ledger would record, with checks that the protocol's order is kept."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.accepted: dict[str, list[str]] = {}
        self.dead: list[tuple[dict[str, Any], tuple[str, int], str, str]] = []
        self.parked: list[tuple[dict[str, Any], tuple[str, int], str]] = []

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        assert batch_id not in self.sent, f"batch {batch_id} announced twice"
        self.sent[batch_id] = n

    def on_batch_accepted(self, batch_id: str, events: list[Submitted]) -> None:
        assert batch_id in self.sent, f"batch {batch_id} accepted before it was sent"
        assert batch_id not in self.accepted, f"batch {batch_id} accepted twice"
        self.accepted[batch_id] = [e.event["insert_id"] for e in events]

    def on_dead_letter(self, event: dict[str, Any], origin: tuple[str, int], reason: str,
                       message: str) -> None:
        self.dead.append((event, origin, reason, message))

    def on_parked(self, event: dict[str, Any], origin: tuple[str, int], reason: str,
                  batch_id: str) -> None:
        assert batch_id in self.sent and batch_id not in self.accepted
        self.parked.append((event, origin, reason))

    def accepted_ids(self) -> list[str]:
        return [i for ids in self.accepted.values() for i in ids]


def make_events(n: int, devices: int = 50, *, start: int = 1_700_000_000_000,
                prefix: str = "e") -> list[dict[str, Any]]:
    """Generated-shape Amplitude events, round-robin over devices, time ascending."""
    out = []
    for i in range(n):
        d = i % devices
        out.append({
            "event_type": f"type_{i % 7}", "device_id": f"device-{d:05d}",
            "user_id": f"user-{d:05d}" if d % 3 else None,
            "time": start + i * 1000, "insert_id": f"{prefix}-{i:08d}",
            "event_properties": {"i": i, "plan": "pro", "path": "/a/b/c"},
            "session_id": start,
        })
    return [{k: v for k, v in e.items() if v is not None} for e in out]


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture
def recording_observer() -> type[RecordingObserver]:
    return RecordingObserver


@pytest.fixture
def fake_cls() -> type[FakeAmplitude]:
    return FakeAmplitude


@pytest.fixture
def gen_events() -> Any:
    return make_events


