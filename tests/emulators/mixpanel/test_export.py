"""/api/2.0/export over real sockets: window, timezone, filters, limit, gzip, errors."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

LA = ZoneInfo("America/Los_Angeles")
SA_AUTH = ("sa-user", "sa-secret")
SA_PARAMS = {"project_id": "4242"}
# The test project is a post-2023 one (dates served in UTC by default, reference 1.6); the
# tests of the day files' mechanics serve it in its own timezone, where a day is its file.
OWN_DAYS = {"timezone": "America/Los_Angeles"}


def la(day: str, hh: int, mm: int = 0) -> int:
    return int(datetime.fromisoformat(f"{day}T{hh:02d}:{mm:02d}:00").replace(tzinfo=LA).timestamp())


def utc(day: str, hh: int) -> int:
    return int(datetime.fromisoformat(f"{day}T{hh:02d}:00:00+00:00").timestamp())


@pytest.fixture
def project(kit: Any, tmp_path: Path) -> Path:
    return kit.build_project(
        tmp_path / "p",
        events={
            "2024-01-09": [kit.ev("Login", la("2024-01-09", 1)), kit.ev("Purchase", la("2024-01-09", 23, 30), price=5)],
            "2024-01-10": [
                kit.ev("Login", la("2024-01-10", 0, 30), plan="pro"),
                kit.ev("Purchase", la("2024-01-10", 12), price=20, plan="free"),
                '{"event":"Broken","properties":{"time":',  # a malformed line, kept by the export
                kit.ev("Purchase", la("2024-01-10", 23, 59), price=9.5, plan="pro"),
            ],
            "2024-01-11": [kit.ev("Login", la("2024-01-11", 2))],
        },
    )


def export(url: str, **params: Any) -> requests.Response:
    headers = params.pop("headers", {"Accept-Encoding": "identity"})
    return requests.get(f"{url}/api/2.0/export", params={**SA_PARAMS, **params}, auth=SA_AUTH, headers=headers, timeout=10)


def lines(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return resp.text.splitlines()


def records(resp: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(x) for x in lines(resp) if x.startswith("{") and x.endswith("}")]


def test_one_day_is_exactly_its_file_and_to_date_is_inclusive(kit: Any, project: Path, serve: Any) -> None:
    with serve(project, **OWN_DAYS) as (url, _):
        one = export(url, from_date="2024-01-10", to_date="2024-01-10")
        raw = gzip.decompress((project / "events" / "2024-01-10.jsonl.gz").read_bytes())
        assert one.content == raw  # byte for byte, malformed line included
        three = lines(export(url, from_date="2024-01-09", to_date="2024-01-11"))
        assert len(three) == 2 + 4 + 1
        assert lines(export(url, from_date="2024-01-11", to_date="2024-01-11")) == three[-1:]
        assert export(url, from_date="2023-12-01", to_date="2023-12-31").content == b""


def test_event_filter_and_where(kit: Any, project: Path, serve: Any) -> None:
    with serve(project, **OWN_DAYS) as (url, _):
        got = records(export(url, from_date="2024-01-09", to_date="2024-01-11", event='["Purchase"]'))
        assert [r["event"] for r in got] == ["Purchase"] * 3
        got = records(export(url, from_date="2024-01-10", to_date="2024-01-10", where='properties["plan"] == "pro"'))
        assert [r["event"] for r in got] == ["Login", "Purchase"]
        got = records(export(
            url, from_date="2024-01-09", to_date="2024-01-11",
            where='properties["price"] >= 9.5 and not (properties["plan"] == "free")',
        ))
        assert [r["properties"]["price"] for r in got] == [9.5]
        got = records(export(
            url, from_date="2024-01-09", to_date="2024-01-11", event='["Login","Purchase"]',
            where=f'properties["$time"] >= datetime({la("2024-01-10", 12)}) or properties["price"] == 5',
        ))
        assert [r["properties"].get("price") for r in got] == [5, 20, 9.5, None]
        # filters drop the malformed line: it cannot match
        assert all(x.startswith("{") and x.endswith("}") for x in lines(export(
            url, from_date="2024-01-10", to_date="2024-01-10", where='defined(properties["plan"])')))


def test_limit_and_time_in_ms(kit: Any, project: Path, serve: Any) -> None:
    with serve(project, **OWN_DAYS) as (url, _):
        assert len(lines(export(url, from_date="2024-01-09", to_date="2024-01-11", limit="3"))) == 3
        ms = records(export(url, from_date="2024-01-09", to_date="2024-01-09", time_in_ms="true"))
        assert [r["properties"]["time"] for r in ms] == [la("2024-01-09", 1) * 1000, la("2024-01-09", 23, 30) * 1000]


def test_fractional_time_is_exported_in_whole_seconds(kit: Any, tmp_path: Path, serve: Any) -> None:
    data = kit.build_project(tmp_path / "f", events={"2024-01-10": [kit.ev("A", la("2024-01-10", 5) + 0.789)]})
    with serve(data, **OWN_DAYS) as (url, _):
        [sec] = records(export(url, from_date="2024-01-10", to_date="2024-01-10"))
        [ms] = records(export(url, from_date="2024-01-10", to_date="2024-01-10", time_in_ms="1"))
    assert sec["properties"]["time"] == la("2024-01-10", 5)
    assert ms["properties"]["time"] == la("2024-01-10", 5) * 1000 + 789


@pytest.mark.parametrize("overrides", [{}, {"timezone": "UTC"}], ids=["default", "--timezone UTC"])
def test_a_newer_project_is_served_in_utc_days(kit: Any, project: Path, serve: Any,
                                                overrides: dict[str, str]) -> None:
    # a post-2023 project's dates are UTC: 2024-01-10 UTC = 2024-01-09 16:00 .. 01-10 16:00 LA
    with serve(project, **overrides) as (url, _):
        got = records(export(url, from_date="2024-01-10", to_date="2024-01-10"))
        times = [r["properties"]["time"] for r in got]
        assert times == [la("2024-01-09", 23, 30), la("2024-01-10", 0, 30), la("2024-01-10", 12)]
        assert all(utc("2024-01-10", 0) <= t < utc("2024-01-11", 0) for t in times)
        # the malformed line belongs to its file's day (01-10 LA), outside 01-09 UTC
        assert "Broken" not in export(url, from_date="2024-01-09", to_date="2024-01-09").text


def test_legacy_project_local_time(kit: Any, tmp_path: Path, serve: Any) -> None:
    # legacy projects store project-local wall-clock seconds: 23:30 local is 23:30 "UTC"
    late = utc("2024-01-10", 23) + 1800
    data = kit.build_project(
        tmp_path / "legacy", legacy_time=True,
        events={"2024-01-10": [kit.ev("A", utc("2024-01-10", 0)), kit.ev("B", late)]},
    )
    with serve(data) as (url, _):
        assert [r["event"] for r in records(export(url, from_date="2024-01-10", to_date="2024-01-10"))] == ["A", "B"]
        got = records(export(url, from_date="2024-01-10", to_date="2024-01-10",
                             where=f'properties["$time"] >= datetime({la("2024-01-10", 12)})'))
        assert [r["event"] for r in got] == ["B"]  # $time is compared as real time
    with serve(data, timezone="UTC") as (url, _):
        # 23:30 PST = 07:30 UTC the next day
        assert [r["event"] for r in records(export(url, from_date="2024-01-11", to_date="2024-01-11"))] == ["B"]


def test_gzip_only_when_asked_and_over_1400_bytes(kit: Any, tmp_path: Path, serve: Any) -> None:
    many = [kit.ev("Page", la("2024-01-10", 1) + i, path="/" + "x" * 40) for i in range(60)]
    data = kit.build_project(tmp_path / "g", events={"2024-01-10": many, "2024-01-11": many[:1]})
    with serve(data, **OWN_DAYS) as (url, _):
        big = export(url, from_date="2024-01-10", to_date="2024-01-10", headers={"Accept-Encoding": "gzip"})
        assert big.headers.get("Content-Encoding") == "gzip"
        assert len(records(big)) == 60  # requests gunzips
        small = export(url, from_date="2024-01-11", to_date="2024-01-11", headers={"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in small.headers and len(records(small)) == 1
        plain = export(url, from_date="2024-01-10", to_date="2024-01-10")
        assert "Content-Encoding" not in plain.headers and len(records(plain)) == 60
        # a quality of zero refuses gzip (RFC 9110 12.5.3); "*" and a weighted gzip accept it
        for header, gzipped in [("gzip;q=0", False), ("gzip; q=0.0, identity", False),
                                ("*;q=0.5", True), ("identity, gzip;q=0.3", True),
                                ("*, gzip;q=0", False), ("gzip;q=bad", False)]:
            resp = export(url, from_date="2024-01-10", to_date="2024-01-10",
                          headers={"Accept-Encoding": header})
            assert (resp.headers.get("Content-Encoding") == "gzip") is gzipped, header
            assert len(records(resp)) == 60


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"to_date": "2024-01-10"}, "from_date is a required parameter"),
        ({"from_date": "2024/01/10", "to_date": "2024-01-10"}, "from_date must be a date in yyyy-mm-dd format"),
        ({"from_date": "2024-02-30", "to_date": "2024-03-01"}, "from_date is not a valid date"),
        ({"from_date": "2024-01-11", "to_date": "2024-01-10"}, "from_date cannot be later than to_date"),
        ({"from_date": "0001-01-01", "to_date": "2024-01-10"}, "from_date cannot be earlier than 2011-07-10"),
        ({"from_date": "2024-01-10", "to_date": "2024-03-10"}, "to_date cannot be later than today"),
        ({"from_date": "2024-01-10", "to_date": "2024-01-10", "event": "Purchase"}, "event must be a JSON array"),
        ({"from_date": "2024-01-10", "to_date": "2024-01-10", "limit": "100001"}, "limit must be an integer"),
        ({"from_date": "2024-01-10", "to_date": "2024-01-10", "time_in_ms": "maybe"}, "time_in_ms must be"),
        ({"from_date": "2024-01-10", "to_date": "2024-01-10", "where": 'properties["a"] ~ 1'},
         "invalid where expression: unexpected character '~' at character 16"),
        ({"from_date": "2024-01-10", "to_date": "2024-01-10", "where": 'user["a"] == 1'},
         "invalid where expression: unsupported name 'user' at character 0"),
    ],
)
def test_bad_parameters_get_a_clear_400(kit: Any, project: Path, serve: Any, params: dict[str, str], message: str) -> None:
    with serve(project) as (url, _):
        resp = export(url, **params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"].startswith(message)
    assert body["request"].startswith("/api/2.0/export?")


def test_today_in_project_timezone_is_allowed(kit: Any, project: Path, serve: Any) -> None:
    # the clock is 2024-03-09T16:00Z = 08:00 in Los Angeles: 03-09 is today there, 03-10 is not
    with serve(project, **OWN_DAYS) as (url, _):
        assert export(url, from_date="2024-03-09", to_date="2024-03-09").status_code == 200
        assert export(url, from_date="2024-03-09", to_date="2024-03-10").status_code == 400


def test_trailing_slash_path(kit: Any, project: Path, serve: Any) -> None:
    with serve(project, **OWN_DAYS) as (url, _):
        resp = requests.get(f"{url}/api/2.0/export/", params={**SA_PARAMS, "from_date": "2024-01-11", "to_date": "2024-01-11"},
                            auth=SA_AUTH, timeout=10)
    assert resp.status_code == 200 and len(resp.text.splitlines()) == 1


def test_export_reads_day_files_with_flat_memory(tmp_path: Path) -> None:
    import tracemalloc
    from datetime import date

    from mp2amp.emulators.mixpanel.export import ExportQuery, ExportReader

    events = tmp_path / "events"
    events.mkdir()
    line = b'{"event":"E","properties":{"time":1704902400.5,"distinct_id":"u","pad":"' + b"x" * 300 + b'"}}\n'
    with gzip.open(events / "2024-01-10.jsonl.gz", "wb", compresslevel=1) as fh:
        fh.write(line * 10_000)  # ~3.4 MB uncompressed, every line re-serialized (fractional time)
    query = ExportQuery(date(2024, 1, 10), date(2024, 1, 10), None, None, None, False)
    reader = ExportReader(query, events, LA, LA, legacy=False)
    tracemalloc.start()
    count = sum(1 for _ in reader.lines())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 10_000
    assert peak < 1_000_000, f"export held {peak} bytes at once; it must stream"


def test_corrupt_day_file_is_a_clear_server_error(kit: Any, tmp_path: Path, serve: Any) -> None:
    data = kit.build_project(tmp_path / "c", events={"2024-01-10": [kit.ev("A", la("2024-01-10", 1))]},
                             users=[{"$distinct_id": "u1", "$properties": {}}])
    whole = (data / "events" / "2024-01-10.jsonl.gz").read_bytes()
    (data / "events" / "2024-01-10.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (data / "profiles" / "users.jsonl.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with serve(data) as (url, emulator):
        resp = export(url, from_date="2024-01-10", to_date="2024-01-10")
        assert resp.status_code == 500
        assert resp.json()["error"].startswith("events/2024-01-10.jsonl.gz is unreadable after line 0")
        engage = requests.get(f"{url}/api/2.0/engage", params=SA_PARAMS, auth=SA_AUTH, timeout=10)
        assert engage.status_code == 500 and "profiles/users.jsonl.gz is unreadable" in engage.json()["error"]
        assert emulator.state.stats["export_file_errors"] == 1
