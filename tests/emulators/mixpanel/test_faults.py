"""Seeded export faults over real sockets: terminated early, dropped connection, split record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

SA_AUTH = ("sa-user", "sa-secret")
DAY = "2024-01-10"
BASE = 1_704_902_400  # 2024-01-10T16:00Z, inside 2024-01-10 in Los Angeles


@pytest.fixture
def project(kit: Any, tmp_path: Path) -> Path:
    rows = [kit.ev("View", BASE + i, did=f"user-{i}", title="é" * 5 + "x" * i) for i in range(8)]
    return kit.build_project(tmp_path / "p", events={DAY: rows})


def get(url: str, **headers: str) -> requests.Response:
    return requests.get(
        f"{url}/api/2.0/export",
        params={"project_id": "4242", "from_date": DAY, "to_date": DAY},
        auth=SA_AUTH, headers={"Accept-Encoding": "identity", **headers}, stream=True, timeout=10,
    )


def read_until_broken(resp: requests.Response) -> tuple[bytes, bool]:
    got = b""
    try:
        for chunk in resp.iter_content(chunk_size=None):
            got += chunk
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return got, True
    return got, False


def control(url: str, body: Any) -> requests.Response:
    return requests.post(f"{url}/_emulator/faults", json=body, timeout=10)


def test_terminated_early_line(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        assert control(url, {"queue": ["terminated_early"], "after_lines": 3}).status_code == 200
        body, broken = read_until_broken(get(url))
        assert not broken
        lines = body.decode().splitlines()
        assert len(lines) == 4 and lines[-1] == "terminated early"
        assert [json.loads(x)["properties"]["distinct_id"] for x in lines[:3]] == ["user-0", "user-1", "user-2"]
        # the queue is used up: the next export is whole
        assert len(get(url).text.splitlines()) == 8


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_dropped_connection_mid_stream(project: Path, serve: Any, encoding: str) -> None:
    with serve(project, chunk_bytes=64) as (url, _):
        control(url, {"queue": ["drop"], "after_lines": 5})
        body, broken = read_until_broken(get(url, **{"Accept-Encoding": encoding}))
        assert broken, "the client must see an incomplete body"
        lines = body.decode().splitlines()
        # five whole records, then the connection breaks halfway through the sixth
        assert len(lines) == 6 and all(json.loads(x)["event"] == "View" for x in lines[:5])
        with pytest.raises(ValueError):
            json.loads(lines[5])
        stats = requests.get(f"{url}/_emulator/stats", timeout=10).json()
        assert stats["faults_injected"] == {"drop": 1}
        assert stats["requests"]["export_dropped"] == 1
        assert len(get(url).text.splitlines()) == 8  # the server is fine afterwards


def test_split_record_rejoins(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        control(url, {"queue": ["split"], "after_lines": 4})
        lines = get(url).text.splitlines()
    assert len(lines) == 9
    broken = [i for i, x in enumerate(lines) if not (x.startswith("{") and x.endswith("}"))]
    assert broken == [3, 4]
    whole = json.loads(lines[3] + lines[4])  # what Airbyte's parser does: join the halves
    assert whole["properties"]["distinct_id"] == "user-3"


def test_fault_position_is_clamped_to_the_stream(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        control(url, {"queue": ["terminated_early", "split"], "after_lines": 500})
        lines = get(url).text.splitlines()
        assert len(lines) == 9 and lines[-1] == "terminated early"
        lines = get(url).text.splitlines()  # the last record is the one split
        assert len(lines) == 9
        assert json.loads(lines[7] + lines[8])["properties"]["distinct_id"] == "user-7"


def _fault_sequence(url: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        body, broken = read_until_broken(get(url))
        lines = body.decode().splitlines()
        if broken:
            out.append("drop")
        elif lines and lines[-1] == "terminated early":
            out.append("terminated_early")
        elif any(not (x.startswith("{") and x.endswith("}")) for x in lines):
            out.append("split")
        else:
            out.append("none")
    return out


def test_seeded_fail_rate_is_deterministic(project: Path, serve: Any) -> None:
    runs = []
    for _ in range(2):
        with serve(project, fail_rate=0.6, seed=11) as (url, _):
            runs.append(_fault_sequence(url, 12))
    assert runs[0] == runs[1]
    assert {"none", "drop", "terminated_early", "split"} <= set(runs[0])
    with serve(project, fail_rate=0.6, seed=12) as (url, _):
        assert _fault_sequence(url, 12) != runs[0]


def test_faults_controlled_at_runtime(project: Path, serve: Any) -> None:
    with serve(project) as (url, _):
        assert _fault_sequence(url, 3) == ["none"] * 3
        state = control(url, {"fail_rate": 1.0, "kinds": ["terminated_early"], "seed": 3}).json()
        assert state["fail_rate"] == 1.0 and state["kinds"] == ["terminated_early"]
        assert _fault_sequence(url, 2) == ["terminated_early"] * 2
        control(url, {"fail_rate": 0})
        assert _fault_sequence(url, 1) == ["none"]
        assert requests.get(f"{url}/_emulator/faults", timeout=10).json()["injected"] == {"terminated_early": 2}
        for bad in ({"fail_rate": 2}, {"kinds": ["explode"]}, {"queue": "drop"}, {"after_lines": -1}, {"nope": 1}, [1]):
            resp = control(url, bad)
            assert resp.status_code == 400 and resp.json()["error"]
