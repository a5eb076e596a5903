"""Export authentication and every rate limit (3/s, 60/hour, 100 concurrent), over sockets."""

from __future__ import annotations

import base64
import gzip
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from mp2amp.emulators.mixpanel import MixpanelConfig
from mp2amp.emulators.mixpanel.ratelimit import Admission, RateLimiter, Refusal

DAY = "2024-01-10"
WINDOW = {"from_date": DAY, "to_date": DAY}


@pytest.fixture
def project(kit: Any, tmp_path: Path) -> Path:
    return kit.build_project(tmp_path / "p", events={DAY: [kit.ev("A", 1_704_902_400)]})


def export(url: str, headers: dict[str, str] | None = None, **params: str) -> requests.Response:
    return requests.get(f"{url}/api/2.0/export", params={**WINDOW, **params}, headers=headers or {}, timeout=10)


def basic(user: str, password: str, *, plain: bool = False) -> dict[str, str]:
    raw = f"{user}:{password}"
    return {"Authorization": "Basic " + (raw if plain else base64.b64encode(raw.encode()).decode())}


@pytest.mark.parametrize(
    ("headers", "params", "status", "error"),
    [
        (basic("sa-user", "sa-secret"), {"project_id": "4242"}, 200, None),
        (basic("sa-user", "sa-secret", plain=True), {"project_id": "4242"}, 200, None),
        (basic("api-secret-1", ""), {}, 200, None),
        (basic("sa-user", "sa-secret"), {}, 400, "project_id is required when authenticating with a service account"),
        (basic("sa-user", "sa-secret"), {"project_id": "1"}, 403, "service account has no access to project '1'"),
        (basic("sa-user", "wrong"), {"project_id": "4242"}, 400, "Unable to authenticate request"),
        (basic("not-the-secret", ""), {}, 400, "Unable to authenticate request"),
        ({}, {"project_id": "4242"}, 401, "Unauthorized: missing or malformed Basic credentials"),
        ({"Authorization": "Bearer abc"}, {}, 401, "OAuth bearer tokens are not supported by this emulator"),
    ],
)
def test_export_auth(
    project: Path, serve: Any, headers: dict[str, str], params: dict[str, str], status: int, error: str | None
) -> None:
    with serve(project) as (url, _):
        resp = export(url, headers, **params)
    assert resp.status_code == status
    if error is None:
        assert len(resp.text.splitlines()) == 1
    else:
        assert resp.json()["error"] == error


def test_without_configured_credentials_any_shape_is_accepted(project: Path, serve: Any) -> None:
    with serve(project, service_account=None, api_secret=None) as (url, _):
        assert export(url, basic("anyone", "anything"), project_id="4242").status_code == 200
        assert export(url, basic("some-secret", "")).status_code == 200
        assert export(url, basic("anyone", "anything")).status_code == 400  # project_id still required
        assert export(url).status_code == 401


def test_documented_defaults() -> None:
    cfg = MixpanelConfig(data_dir=Path("."))
    assert (cfg.export_per_hour, cfg.export_per_second, cfg.export_concurrent) == (60, 3, 100)
    assert (cfg.query_per_hour, cfg.query_concurrent, cfg.engage_page_size) == (60, 5, 1000)
    assert "secret" not in repr(MixpanelConfig(data_dir=Path("."), service_account="u:secret", api_secret="secret"))


SA = basic("sa-user", "sa-secret")
PID = {"project_id": "4242"}


def test_three_per_second(project: Path, serve: Any, clock: Any) -> None:
    with serve(project, export_per_second=3, export_per_hour=None) as (url, _):
        assert [export(url, SA, **PID).status_code for _ in range(3)] == [200] * 3
        refused = export(url, SA, **PID)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"] == "Query rate limit exceeded: this project allows 3 queries per second"
        clock.advance(1.0)
        assert export(url, SA, **PID).status_code == 200


def test_sixty_per_hour_with_default_limits(project: Path, serve: Any, clock: Any) -> None:
    with serve(project, export_per_hour=60, export_per_second=3) as (url, _):
        for _ in range(60):
            assert export(url, SA, **PID).status_code == 200
            clock.advance(0.5)  # 2/s: under the per-second limit
        refused = export(url, SA, **PID)
        assert refused.status_code == 429
        assert refused.json()["error"].endswith("60 queries per hour")
        assert int(refused.headers["Retry-After"]) == 3600 - 30  # until the first query leaves the hour
        clock.advance(3600 - 30)
        assert export(url, SA, **PID).status_code == 200
        # refused requests do not use up quota, and bad requests are not counted either
        stats = requests.get(f"{url}/_emulator/stats", timeout=10).json()
        assert stats["requests"]["export_429"] == 1


def test_concurrent_streams(kit: Any, tmp_path: Path, serve: Any) -> None:
    # a body much larger than the socket buffers keeps the first stream (and its slot) open
    data = kit.build_project(tmp_path / "big", events={})
    line = b'{"event":"Big","properties":{"time":1704902400,"distinct_id":"u","pad":"' + b"x" * 400 + b'"}}\n'
    (data / "events").mkdir(exist_ok=True)
    with gzip.open(data / "events" / f"{DAY}.jsonl.gz", "wb", compresslevel=1) as fh:
        fh.write(line * 40_000)  # 17 MB
    with serve(data, export_concurrent=1) as (url, emulator):
        held = requests.get(f"{url}/api/2.0/export", params={**WINDOW, **PID}, headers=SA, stream=True, timeout=10)
        assert held.status_code == 200
        refused = export(url, SA, **PID)
        assert refused.status_code == 429
        assert refused.json()["error"].endswith("a maximum of 1 concurrent queries")
        held.close()
        deadline = time.monotonic() + 5
        while emulator.state.export_limiter.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        assert export(url, SA, **PID).status_code == 200


def test_hundred_concurrent_is_the_default_cap() -> None:
    limiter = RateLimiter([(None, 1.0, "second")], 100, clock=lambda: 0.0)
    slots = [limiter.try_acquire() for _ in range(100)]
    assert all(isinstance(s, Admission) for s in slots)
    refused = limiter.try_acquire()
    assert isinstance(refused, Refusal) and refused.reason == "a maximum of 100 concurrent queries"
    slots[0].release()  # type: ignore[union-attr]
    slots[0].release()  # type: ignore[union-attr]  # releasing twice frees one slot only
    assert isinstance(limiter.try_acquire(), Admission)
    assert isinstance(limiter.try_acquire(), Refusal)


def test_limits_changed_at_runtime(project: Path, serve: Any) -> None:
    with serve(project, export_per_second=1) as (url, _):
        assert export(url, SA, **PID).status_code == 200
        assert export(url, SA, **PID).status_code == 429
        resp = requests.post(f"{url}/_emulator/limits", json={"export_per_second": None, "reset": True}, timeout=10)
        assert resp.status_code == 200 and resp.json()["export_per_second"] is None
        assert [export(url, SA, **PID).status_code for _ in range(4)] == [200] * 4
        bad = requests.post(f"{url}/_emulator/limits", json={"export_per_second": -1}, timeout=10)
        assert bad.status_code == 400
