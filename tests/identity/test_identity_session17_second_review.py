"""Session 17 second-pass review of 6cd8549 (identity: re-keyed Simplified export rows, the
Data Pipelines table's own-ID rule, new junk IDs, 16-digit user IDs) and 5584c32 (transform:
error attribution to the source property, groups_over_limit, ``type: string`` numbers).

``xfail(strict=True)`` tests pin defects: the reason says what is wrong. The unmarked ones
guard behaviour the fixes got right in a non-obvious way.
"""

from __future__ import annotations

import copy
import gzip
from pathlib import Path
from typing import Any

import pytest

from mp2amp.errors import Rejection
from mp2amp.extract.files import iter_records
from mp2amp.generate.project import GenerateConfig, generate_project
from mp2amp.identity import IdentityGraph
from mp2amp.models import Resolved, Skip
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.plan import parse_plan

BUDGETS = [2_000_000, 1]  # in memory; spilled to SQLite from the first link
DEVICE = "dev-7f3a9c"
T0 = 1_700_000_000
IDS = Resolved("user-0001", "device-0001")


def _graph(tmp_path: Path, mode: str, records: list[dict[str, Any]], **kwargs: Any
           ) -> IdentityGraph:
    graph = IdentityGraph(mode, tmp_path / f"g-{mode}-{len(list(tmp_path.iterdir()))}",
                          **kwargs)
    for record in records:
        graph.observe(record)
    graph.finish()
    return graph


def _ev(name: str, t: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0 + t, **props}}


# --- identity: the re-keyed export row, by Mixpanel's other reshuffle property ---------


@pytest.mark.parametrize("mode", ["simplified", "original"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_a_preshuffled_export_row_is_its_devices_anonymous_event(
    tmp_path: Path, mode: str, budget: int
) -> None:
    # Mixpanel re-keyed the device's anonymous event to alice and kept the ID it was sent
    # with as $preshuffle_distinct_id (insert_id.py: "the same, as some reshuffled copies
    # name it" as $distinct_id_before_identity); the Data Pipelines row is as ingested
    exported = _ev("Page viewed", 1, distinct_id="alice",
                   **{"$preshuffle_distinct_id": "$device:" + DEVICE})
    pipeline_row = _ev("Page viewed", 1, distinct_id="$device:" + DEVICE)
    login = _ev("Logged in", 2, distinct_id="alice",
                **{"$user_id": "alice", "$device_id": DEVICE})
    plain = _ev("Invoice paid", 3, distinct_id="alice")  # a server-side event of alice's
    records = [exported, login, plain]
    retro = _graph(tmp_path, mode, records, memory_budget_ids=budget)
    withheld = _graph(tmp_path, mode, records, memory_budget_ids=budget, retroactive=False)
    got: dict[str, tuple[str | None, str | None]] = {}
    for name, graph in (("retro", retro), ("withheld", withheld)):
        graph.resolve(plain["properties"])  # an earlier answer for distinct_id alice
        for which, record in (("export", exported), ("pipeline", pipeline_row)):
            ids = graph.resolve(record["properties"])
            got[f"{name}/{which}"] = (ids.user_id, ids.device_id)
        graph.close()
    # as with $distinct_id_before_identity (README: "it keeps the device, and with
    # retroactive = false it carries no user_id"); the two copies of one event agree, so
    # Amplitude's (device_id, insert_id) dedup sees one event
    assert got == {
        "retro/export": ("alice", DEVICE), "retro/pipeline": ("alice", DEVICE),
        "withheld/export": (None, DEVICE), "withheld/pipeline": (None, DEVICE),
    }


# --- identity: a generated Simplified project, exported (re-keyed) and as pipeline rows --


def _truth(root: Path) -> dict[str, tuple[str | None, str | None]]:
    out: dict[str, tuple[str | None, str | None]] = {}
    with gzip.open(root / "truth" / "event_person.tsv.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            key, user, device = line.rstrip("\n").split("\t")
            out[key] = (user or None, device or None)
    return out


@pytest.mark.parametrize("budget", [2_000_000, 50])
def test_generated_simplified_export_rows_agree_with_their_pipeline_rows(
    tmp_path: Path, budget: int
) -> None:
    """Mixpanel's export re-keys a linked device's anonymous events to its user and keeps
    the ``$device:`` ID in ``$distinct_id_before_identity``; a Data Pipelines row keeps the
    event as ingested. Both copies of every generated event must get the same IDs, the
    truth's with retroactive on; with it off the anonymous copies carry no user_id."""
    root = tmp_path / "project"
    generate_project(GenerateConfig(out=root, users=120, days=4, seed=5,
                                    id_merge="simplified", dirty=0.02))
    files = sorted(str(p) for p in (root / "events").glob("*.jsonl.gz"))
    raw = [r.record for r in iter_records(files) if isinstance(r.record, dict)]
    truth = _truth(root)
    pairs: list[tuple[dict[str, Any], dict[str, Any], tuple[str | None, str | None]]] = []
    rekeyed = 0
    for record in raw:
        props = record["properties"]
        key = props.get("$insert_id")
        if not isinstance(key, str) or key not in truth:
            continue
        export = copy.deepcopy(record)
        dist = props.get("distinct_id")
        user = truth[key][0]
        if isinstance(dist, str) and dist.startswith("$device:") and user is not None \
                and "$user_id" not in props:
            export["properties"]["$distinct_id_before_identity"] = dist
            export["properties"]["distinct_id"] = user
            if rekeyed % 2:  # some SDK rows carry no $device_id: the $device: ID is all
                export["properties"].pop("$device_id", None)
            rekeyed += 1
        pairs.append((record, export, truth[key]))
    assert rekeyed > 50
    for retroactive in (True, False):
        graph = _graph(tmp_path, "simplified", raw, memory_budget_ids=budget,
                       retroactive=retroactive)
        wrong = []
        for record, export, expected in pairs:
            a = graph.resolve(record["properties"])
            b = graph.resolve(export["properties"])
            # retroactive off: the user is withheld from anonymous events, kept as owner
            person = a.user_id if retroactive else a.user_id or a.owner
            if (a.user_id, a.device_id, a.owner) != (b.user_id, b.device_id, b.owner):
                wrong.append((export["properties"], a, b))
            elif (person, a.device_id) != expected:
                wrong.append((record["properties"], a, expected))
        graph.close()
        assert wrong[:3] == []


# --- transform: error attribution by the paths the fix missed --------------------------


def _rec(name: str = "Open", **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0, "distinct_id": "user-0001",
                                          "$insert_id": "insert-0000001", **props}}


def test_a_hotshard_events_bad_name_is_reported_on_its_original_name() -> None:
    record = {"event": "$hotshard_events", "properties": {
        "time": T0, "distinct_id": "", "mp_original_distinct_id": "user-0001",
        "mp_original_event_name": "Tapped \ud83d", "$insert_id": "insert-0000001"}}
    out = Transformer(TransformSettings()).event(record, IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value", out
    assert out.field == "properties.mp_original_event_name", out


@pytest.mark.parametrize(("rename", "lib"), [("$model", "swift"), ("shop_name", "swift")])
def test_a_renamed_propertys_bad_text_is_reported_on_the_records_name(
    rename: str, lib: str
) -> None:
    plan = parse_plan({"properties": {"Phone Model": {"rename": rename}}})
    record = _rec(mp_lib=lib, **{"$os": "iOS", "Phone Model": "iPhone \ud83d"})
    out = Transformer(TransformSettings(plan=plan)).event(record, IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value", out
    # source_field: "Where in the Mixpanel record a value problem is, for the user to fix
    # it there"
    assert out.field == "properties.Phone Model", out


# --- transform: groups_over_limit counts events ----------------------------------------


def test_groups_over_limit_counts_an_event_once() -> None:
    transformer = Transformer(TransformSettings(group_keys=("team", "org")))
    teams = [f"team-{i}" for i in range(12)]
    out = transformer.event(_rec(team=teams, org="acme"), IDS)
    assert isinstance(out, dict) and out["groups"] == {"team": teams[:10]}
    # README: "groups_over_limit (events where a usable group name was left out ...)"
    assert transformer.stats()["other"]["groups_over_limit"] == 1


# --- transform: type: string writes numbers as JavaScript --------------------------------


def _as_plan_string(value: Any) -> Any:
    plan = parse_plan({"properties": {"plan_id": {"type": "string"}}})
    result = plan.apply("Open", {"plan_id": value})
    assert not isinstance(result, Rejection | Skip), result
    return result.props["plan_id"]


@pytest.mark.parametrize(("value", "text"), [  # String(x) in node
    (5e-324, "5e-324"), (2.2250738585072014e-308, "2.2250738585072014e-308"),
    (999999999999999900000.0, "999999999999999900000"), (1e21, "1e+21"),
    (-0.0, "0"), (float(2**53 + 2), "9007199254740994"), (float(2**60), "1152921504606847000"),
    (0.1 + 0.2, "0.30000000000000004"), (1.23e-18, "1.23e-18"), (-1.5e-7, "-1.5e-7"),
    (0.000001, "0.000001"), (1.7976931348623157e308, "1.7976931348623157e+308"),
])
def test_a_float_typed_string_matches_javascript_at_the_edges(value: float, text: str) -> None:
    assert _as_plan_string(value) == text


def test_one_number_typed_string_has_one_spelling_as_int_or_float() -> None:
    # 1152921504606846976 and 1.152921504606846976e18 are the same number (also in Python:
    # 2**60 == 2.0**60); Mixpanel (JavaScript) shows both as "1152921504606847000"
    assert float(2**60) == 2**60
    assert _as_plan_string(2**60) == _as_plan_string(float(2**60)) == "1152921504606847000"


# --- guards for the fixes above ------------------------------------------------------


ANON = "3f2b8c1e-9d4a-4e7b-a1c2-5d6e7f809a1b"


@pytest.mark.parametrize("prop", ["$distinct_id_before_identity", "$preshuffle_distinct_id"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_original_merge_takes_either_reshuffle_property_as_evidence(
    tmp_path: Path, prop: str, budget: int
) -> None:
    # the re-keyed export row is the only evidence that ANON is alice's
    exported = _ev("Page viewed", 1, distinct_id="alice", **{prop: ANON})
    graph = _graph(tmp_path, "original", [exported], memory_budget_ids=budget)
    assert graph.resolve({"time": T0, "distinct_id": ANON}).user_id == "alice"
    graph.close()


def test_the_identity_view_keeps_the_preshuffle_distinct_id() -> None:
    from mp2amp.identity.ids import identity_view
    record = _ev("Page viewed", 1, distinct_id="alice",
                 **{"$preshuffle_distinct_id": "$device:" + DEVICE, "Plan": "pro"})
    view = identity_view(record)
    assert view is not None
    assert view["properties"] == {"time": T0 + 1, "distinct_id": "alice",
                                  "$preshuffle_distinct_id": "$device:" + DEVICE}


def test_a_renamed_user_propertys_nested_bad_text_is_traced_to_the_record() -> None:
    plan = parse_plan({"properties": {"Meta": {"rename": "meta", "user_property": True},
                                      "Gone": {"drop": True}}})
    record = _rec(Meta={"tags": ["ok", "bad \ud83d"]}, Gone="x")
    out = Transformer(TransformSettings(plan=plan)).event(record, IDS)
    assert isinstance(out, Rejection) and out.reason == "non_json_value", out
    assert out.field == "properties.Meta.tags[1]", out


def test_an_unrenamed_propertys_bad_text_keeps_its_name_under_a_plan() -> None:
    plan = parse_plan({"properties": {"Phone Model": {"rename": "phone_model"}}})
    record = _rec(mp_lib="swift", **{"$os": "iOS", "$model": "iPhone \ud83d"})
    out = Transformer(TransformSettings(plan=plan)).event(record, IDS)
    assert isinstance(out, Rejection) and out.field == "properties.$model", out


def test_groups_over_limit_counts_an_event_over_both_limits_once() -> None:
    keys = ("a", "b", "c", "d", "e", "f")
    transformer = Transformer(TransformSettings(group_keys=keys))
    props = {k: f"{k}-1" for k in keys} | {"a": [f"a-{i}" for i in range(12)]}
    out = transformer.event(_rec(**props), IDS)
    assert isinstance(out, dict) and list(out["groups"]) == ["a"]
    assert transformer.stats()["other"]["groups_over_limit"] == 1


@pytest.mark.parametrize(("value", "text"), [
    (-(2**60), "-1152921504606847000"), (2**64, "18446744073709552000"),
    (2**53, "9007199254740992"), (2**53 + 1, "9007199254740993"),  # not a double: as is
    (12345678901234567890, "12345678901234567890"), (10**400, "1" + "0" * 400),
])
def test_an_integer_typed_string_keeps_its_digits_unless_a_double_holds_it(
    value: int, text: str
) -> None:
    assert _as_plan_string(value) == text
