"""Session 21 review: the Mixpanel emulator against ../shared/reference/mixpanel-api.md.

Each test pinned (as ``xfail(strict=True)``) a place where the emulator answered differently
from what Mixpanel documents; its comment says what was wrong. Driven over real loopback HTTP with the
``serve`` / ``kit`` / ``clock`` fixtures of conftest.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

DAY = "2024-03-08"  # the fake clock is 2024-03-09T16:00Z
NOW = 1_710_000_000
SA_AUTH = ("sa-user", "sa-secret")


def _export(url: str, **params: Any) -> requests.Response:
    query = {"project_id": "4242", "from_date": DAY, "to_date": DAY, **params}
    return requests.get(f"{url}/api/2.0/export", params=query, auth=SA_AUTH,
                        headers={"Accept-Encoding": "identity"}, timeout=10)


def _events(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [json.loads(line)["event"] for line in resp.text.splitlines()]


# Fixed (was xfail): Mixpanel's data-type page (docs/data-structure/property-reference/data-type.mdx, cited by
# the reference for 5.5): '"false", 0, null, undefined, empty string and not set will be
# typecasted to boolean false'; the segmentation-expression page gives boolean() exactly for
# properties holding "true"/"false" strings. where.py truthy() makes every non-empty string
# true, so boolean(properties["signed up"]) keeps the "false" events.
def test_export_where_boolean_cast_of_the_string_false_is_false(kit: Any, tmp_path: Path, serve: Any) -> None:
    project = kit.build_project(tmp_path / "p", timezone="UTC", events={DAY: [
        kit.ev("No", NOW - 86_400, **{"signed up": "false"}),
        kit.ev("Yes", NOW - 86_399, **{"signed up": "true"}),
    ]})
    with serve(project) as (url, _):
        assert _events(_export(url, where='boolean(properties["signed up"])')) == ["Yes"]
        assert _events(_export(url, where='boolean(properties["signed up"]) == false')) == ["No"]


# Fixed (was xfail): Reference 5.5 (data-type.mdx): a date property is 'ISO YYYY-MM-DDTHH:MM:SS in UTC'. The
# engage where reads record dates as UTC (session 20 fix), but export compiles where with the
# serving timezone for the records' values too (export.py parse_query: compile_where(where,
# serve_tz) with no value_tz), so in a legacy (pre-2023) Los Angeles project an event's UTC
# date property is read as Los Angeles time, 7-8 hours off.
def test_export_where_reads_event_date_properties_as_utc_in_a_legacy_project(
    kit: Any, tmp_path: Path, serve: Any
) -> None:
    # legacy project: time is Los Angeles wall-clock stored as if UTC; 12:00 local
    noon = int(datetime(2024, 3, 8, 12, 0, tzinfo=UTC).timestamp())
    project = kit.build_project(tmp_path / "p", timezone="America/Los_Angeles", legacy_time=True, events={DAY: [
        kit.ev("Early", noon, paid_at="2024-03-08T20:00:00"),  # 12:00 in Los Angeles
        kit.ev("Late", noon + 1, paid_at="2024-03-08T22:00:00"),  # 14:00 in Los Angeles
    ]})
    with serve(project) as (url, _):
        # the literal is the project's 13:00 (21:00 UTC): only the 20:00 UTC payment is before it
        where = 'datetime(properties["paid_at"]) < datetime("2024-03-08T13:00:00")'
        assert _events(_export(url, where=where)) == ["Early"]


# Fixed (was xfail): README (emulate mixpanel, Export): where supports the listed grammar, "anything else is a
# 400 naming the character position"; the parser caps expressions at 10000 characters for
# safety. But where.py parses and evaluates by recursion: 200 nested parentheses (420
# characters) overflow the parser's stack, and a flat chain of 1100 "+1" terms (2.2 KB) the
# evaluator's, and both requests answer "500 Internal Server Error" - which export clients
# retry as a server fault, again and again, instead of stopping at a client error.
@pytest.mark.parametrize("where", [
    "(" * 200 + 'properties["x"] == 1' + ")" * 200,  # parse-time recursion
    'properties["x"]' + "+1" * 1100 + ">0",  # evaluation-time recursion
], ids=["nested-parentheses", "long-sum"])
def test_export_long_where_is_never_a_server_error(kit: Any, tmp_path: Path, serve: Any, where: str) -> None:
    project = kit.build_project(tmp_path / "p", timezone="UTC", events={DAY: [kit.ev("A", NOW - 86_400, x=1)]})
    with serve(project) as (url, _):
        resp = _export(url, where=where)
        assert resp.status_code in (200, 400), (resp.status_code, resp.text[:200])
        if resp.status_code == 200:
            assert _events(resp) == ["A"]
        else:
            assert "where" in resp.json()["error"]


def _engage(url: str, where: str) -> requests.Response:
    return requests.get(f"{url}/api/2.0/engage", auth=SA_AUTH, timeout=10,
                        params={"project_id": "4242", "where": where})


# the 200-level nesting above is refused at the 65th "(" (character 64), by name
def test_nesting_past_the_cap_is_a_400_naming_the_position(kit: Any, tmp_path: Path, serve: Any) -> None:
    users = [{"$distinct_id": "u1", "$properties": {"x": 1}}]
    project = kit.build_project(tmp_path / "p", timezone="UTC", users=users,
                                events={DAY: [kit.ev("A", NOW - 86_400, x=1)]})
    nested = "(" * 65 + 'properties["x"] == 1' + ")" * 65
    nots = "not " * 65 + 'properties["x"] == 2'
    message = ("invalid where expression: nesting deeper than 64 levels at character {} (parentheses, "
               "function calls, not and unary minus each add one); flatten the expression")
    with serve(project) as (url, _):
        resp = _export(url, where=nested)
        assert (resp.status_code, resp.json()["error"]) == (400, message.format(64))
        resp = _engage(url, nested)
        assert (resp.status_code, resp.json()["error"]) == (400, message.format(64))
        resp = _export(url, where=nots)
        assert (resp.status_code, resp.json()["error"]) == (400, message.format(256))
        # 64 levels is within the cap and filters as written
        assert _events(_export(url, where=nested[1:-1])) == ["A"]
        assert _events(_export(url, where="not " * 63 + 'properties["x"] == 2')) == ["A"]  # odd: true


# long chains of one precedence are evaluated flat: the sum is right, not just "not a 500"
def test_long_chains_give_their_exact_result(kit: Any, tmp_path: Path, serve: Any) -> None:
    users = [{"$distinct_id": "u1", "$properties": {"x": 1}}]
    project = kit.build_project(tmp_path / "p", timezone="UTC", users=users,
                                events={DAY: [kit.ev("A", NOW - 86_400, x=1)]})
    with serve(project) as (url, _):
        assert _events(_export(url, where='properties["x"]' + "+1" * 1100 + " == 1101")) == ["A"]
        assert _events(_export(url, where='properties["x"]' + "+1" * 1100 + " == 1100")) == []
        # 1100 terms, short ones: a query string must stay under aiohttp's 8190-byte line
        assert _events(_export(url, where="0" + " or 0" * 1100 + ' or properties["x"] == 1')) == ["A"]
        assert _events(_export(url, where="1" + " and 1" * 1100 + ' and properties["x"] == 2')) == []
        # left to right within a precedence, as before: (10-2)-3, (100/10)/2, (7*3)%4
        assert _events(_export(url, where="10 - 2 - 3 == 5 and 100 / 10 / 2 == 5 and 7 * 3 % 4 == 1")) == ["A"]
        resp = _engage(url, 'properties["x"]' + "*1" * 1200 + "-1 == 0")
        assert resp.status_code == 200, resp.text
        assert [p["$distinct_id"] for p in resp.json()["results"]] == ["u1"]


# the documented cast for every kind of value, not only "true"/"false" strings
@pytest.mark.parametrize(("value", "expected"), [
    ("false", False), ("true", True), ("", False), ("no", True), ("0", True),
    (0, False), (0.0, False), (2, True), (-1.5, True), (None, False), (True, True), (False, False),
    ([], True), (["a"], True), ({}, True),
])
def test_boolean_cast_follows_the_documented_rule(value: Any, expected: bool) -> None:
    from zoneinfo import ZoneInfo

    from mp2amp.emulators.mixpanel.where import compile_where

    matches = compile_where('boolean(properties["v"])', ZoneInfo("UTC"))
    assert matches(lambda key: value if key == "v" else None) is expected
    # the final filter is no typecast: a non-empty string still passes it, as before
    assert compile_where('properties["v"]', ZoneInfo("UTC"))(lambda _key: "false") is True
    assert compile_where('boolean(properties["missing"])', ZoneInfo("UTC"))(lambda _key: None) is False


# backstop: should evaluation ever overflow the stack, export and engage answer 400, not 500
def test_recursion_while_filtering_is_a_400(
    kit: Any, tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mp2amp.emulators.mixpanel import where as where_mod

    def overflow(*_args: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    users = [{"$distinct_id": "u1", "$properties": {"x": 1}}]
    project = kit.build_project(tmp_path / "p", timezone="UTC", users=users,
                                events={DAY: [kit.ev("A", NOW - 86_400, x=1)]})
    monkeypatch.setattr(where_mod, "_compare", overflow)
    message = "invalid where expression: where expression is nested too deeply to evaluate; flatten it"
    with serve(project) as (url, _):
        for resp in (_export(url, where='properties["x"] == 1'), _engage(url, 'properties["x"] == 1')):
            assert (resp.status_code, resp.json()["error"]) == (400, message)
