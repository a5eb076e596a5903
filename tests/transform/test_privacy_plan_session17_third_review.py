"""Session 17, third-pass review of 977caca (privacy: merged users excluded, hashed groups,
plan names in privacy lists) and 4995c6c (tracking plan: type: list reads JSON text).

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.errors import ConfigError
from mp2amp.identity import IdentityGraph
from mp2amp.models import Resolved, Skip
from mp2amp.transform.events import Transformer
from mp2amp.transform.privacy import PrivacyRules
from mp2amp.transform.settings import TransformSettings

T0 = 1_709_600_000  # 2024-03-05 UTC


def rec(name: str, dt: int, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": T0 + dt, "mp_lib": "web", **props}}


def outcomes(tmp_path: Path, records: list[dict[str, Any]], listed: list[str],
             retroactive: bool = True) -> list[str]:
    """Each record's fate ("skip" / "sent") once the pipeline's exclusion steps ran: the
    identity pass, ``exclude_merged_users`` with the finished graph, then the transform."""
    with IdentityGraph("simplified", tmp_path, retroactive=retroactive) as graph:
        for r in records:
            graph.observe(r)
        graph.finish()
        transformer = Transformer(TransformSettings(
            privacy=PrivacyRules(excluded_users=listed)))
        transformer.exclude_merged_users(graph.resolve, graph.shared_device)
        out = [transformer.event(r, graph.resolve(r["properties"])) for r in records]
    return ["skip" if isinstance(o, Skip) else "sent" if isinstance(o, dict) else repr(o)
            for o in out]


# --- exclude_merged_users: a shared device, a device listed by its device_id --------------


@pytest.mark.parametrize("retroactive", [True, False])
def test_a_shared_devices_listing_does_not_exclude_its_first_users_other_devices(
        tmp_path: Path, retroactive: bool) -> None:
    """A family tablet: alice logged in on it first, bob later. Bob's deletion request
    lists bob and his device's Mixpanel ID; alice asked for nothing, yet every event of
    hers on her own phone is skipped (Simplified ID Merge: the graph knows the tablet is
    shared, ``SimplifiedIds.shared``)."""
    records = [
        rec("Login", 0, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                    "$device_id": "tablet-1"}),
        rec("Page", 1, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("Login", 10, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                    "$device_id": "tablet-1"}),
    ]
    fates = outcomes(tmp_path, records, ["bob-0001", "$device:tablet-1"], retroactive)
    assert fates[2] == "skip"  # bob's own event
    assert fates[1] == "sent", fates  # alice's event on her phone: nothing of bob's


def test_a_device_listed_by_its_device_id_excludes_its_merged_user_like_its_distinct_id(
        tmp_path: Path) -> None:
    """README [privacy] exclude_users: matched against ... device_id; 'a listed ID excludes
    the user the identity graph resolves it to (an alias or device merged into a user
    excludes all of that user's events)'. The device here has one user only."""
    records = [
        rec("Page", 0, distinct_id="$device:tablet-1", **{"$device_id": "tablet-1"}),
        rec("Login", 1, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                    "$device_id": "tablet-1"}),
        rec("Page", 2, distinct_id="alice-001", **{"$user_id": "alice-001",
                                                   "$device_id": "phone-A"}),
        rec("Page", 3, distinct_id="bob-0001", **{"$user_id": "bob-0001",
                                                  "$device_id": "phone-B"}),
    ]
    by_distinct_id = outcomes(tmp_path / "a", records, ["$device:tablet-1"])
    assert by_distinct_id == ["skip", "skip", "skip", "sent"]  # (today)
    by_device_id = outcomes(tmp_path / "b", records, ["tablet-1"])
    assert by_device_id == by_distinct_id


# --- privacy and the tracking plan --------------------------------------------------------


def settings_of(tmp_path: Path, plan: str, config: str,
                monkeypatch: pytest.MonkeyPatch) -> TransformSettings:
    monkeypatch.delenv("MP2AMP_HASH_SALT", raising=False)
    (tmp_path / "plan.yaml").write_text(plan)
    (tmp_path / "mp2amp.toml").write_text(f'[transform]\nplan = "plan.yaml"\n{config}')
    return load_config(tmp_path / "mp2amp.toml").transform_settings()


@pytest.mark.parametrize("ip_key", ["$ip", "ip"])
def test_a_plan_renaming_the_ip_does_not_send_it_when_ip_is_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ip_key: str) -> None:
    """977caca refuses a privacy list naming the plan's new name (the value would go out in
    clear); the IP rule has the same hole: the mapping drops only the names ip and $ip."""
    try:
        settings = settings_of(tmp_path, f'version: 1\nproperties:\n  "{ip_key}":\n'
                               "    rename: client_ip\n", '[privacy]\nip = "drop"\n',
                               monkeypatch)
    except ConfigError as exc:  # refusing the plan with the config is a fix too
        assert any("ip" in p for p in exc.problems), exc.problems
        return
    out = Transformer(settings).event(
        rec("Page", 0, distinct_id="bob-0001", **{ip_key: "203.0.113.9"}),
        Resolved("bob-0001", None))
    assert isinstance(out, dict), out
    assert b"203.0.113.9" not in orjson.dumps(out), out


def test_a_hashed_list_read_from_json_text_hashes_as_the_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4995c6c: type: list reads '["a","b"]' as the list ["a","b"] (unhashed both forms
    give the same property); README: a list is hashed value by value, "c_1" and ["c_1"]
    hash alike."""
    settings = settings_of(tmp_path, "version: 1\nproperties:\n  tags:\n    type: list\n",
                           '[privacy]\nhash_properties = ["tags"]\nhash_salt = "pepper"\n',
                           monkeypatch)
    transformer = Transformer(settings)

    def tags(value: Any) -> Any:
        out = transformer.event(rec("Page", 0, distinct_id="bob-0001", tags=value),
                                Resolved("bob-0001", None))
        assert isinstance(out, dict), out
        return out["event_properties"]["tags"]

    as_list = tags(["a@private.example", "b@private.example"])
    assert len(as_list) == 2
    assert tags('["a@private.example", "b@private.example"]') == as_list


@pytest.mark.parametrize("value", [4.5, True], ids=["fraction", "bool"])
def test_a_hashed_group_key_typed_string_by_the_plan_keeps_its_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    """groups.py: 'a hashed group key makes a group only where its value unhashed would'.
    With the plan's type: string, 4.5 unhashed is "4.5" and makes the group "4.5"; hashed
    it makes none (before 977caca it made the hash's group)."""
    plan = "version: 1\nproperties:\n  company_id:\n    type: string\n"
    groups = 'groups = ["company_id"]\n'  # (under settings_of's [transform])

    def event(tmp: Path, privacy: str) -> dict[str, Any]:
        tmp.mkdir()
        settings = settings_of(tmp, plan, privacy, monkeypatch)
        out = Transformer(settings).event(
            rec("Page", 0, distinct_id="bob-0001", company_id=value), Resolved("bob-0001", None))
        assert isinstance(out, dict), out
        return out

    unhashed = event(tmp_path / "a", groups)
    assert unhashed["groups"] == {"company_id": unhashed["event_properties"]["company_id"]}
    hashed = event(tmp_path / "b", groups + '[privacy]\nhash_properties = ["company_id"]\n'
                   'hash_salt = "pepper"\n')
    assert hashed.get("groups") == {"company_id": hashed["event_properties"]["company_id"]}


# --- regression guards ------------------------------------------------------------------


def test_json_text_lists_are_scrubbed_at_depth_by_both_lists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects inside a list read from text, lists in lists too, lose dropped keys and hash
    hashed ones; nothing of either goes out in clear."""
    settings = settings_of(tmp_path, "version: 1\nproperties:\n  items:\n    type: list\n",
                           '[privacy]\ndrop_properties = ["phone"]\n'
                           'hash_properties = ["email"]\nhash_salt = "pepper"\n', monkeypatch)
    text = orjson.dumps([{"sku": "a", "phone": "+44 7700 900001"},
                         [{"meta": {"email": "bob@private.example", "phone": "7700"}}]]).decode()
    out = Transformer(settings).event(rec("Buy", 0, distinct_id="bob-0001", items=text),
                                      Resolved("bob-0001", None))
    assert isinstance(out, dict), out
    dumped = orjson.dumps(out).decode()
    assert "7700" not in dumped and "bob@private.example" not in dumped
    assert out["event_properties"]["items"][0] == {"sku": "a"}


# --- the fixes' own behaviour -------------------------------------------------------------


FAMILY_TABLET = [
    rec("Login", 0, distinct_id="alice-001", **{"$user_id": "alice-001", "$device_id": "tablet-1"}),
    rec("Page", 1, distinct_id="alice-001", **{"$user_id": "alice-001", "$device_id": "phone-A"}),
    rec("Login", 10, distinct_id="bob-0001", **{"$user_id": "bob-0001", "$device_id": "tablet-1"}),
    rec("Page", 11, distinct_id="$device:tablet-1", **{"$device_id": "tablet-1"}),
]


@pytest.mark.parametrize("listed", [["bob-0001", "$device:tablet-1"], ["bob-0001", "tablet-1"]])
def test_a_device_the_graph_calls_shared_excludes_its_own_events_only(
        tmp_path: Path, listed: list[str], caplog: pytest.LogCaptureFixture) -> None:
    """``shared_device``: the graph's answer (the pipeline passes it once the graph has it)."""
    with IdentityGraph("simplified", tmp_path, retroactive=True) as graph:
        for r in FAMILY_TABLET:
            graph.observe(r)
        graph.finish()
        transformer = Transformer(TransformSettings(privacy=PrivacyRules(excluded_users=listed)))
        transformer.exclude_merged_users(graph.resolve, {"tablet-1"}.__contains__)
        fates = [transformer.event(r, graph.resolve(r["properties"])) for r in FAMILY_TABLET]
    # the tablet's events (alice's login on it too: it carries the listed device) and bob's
    assert [isinstance(f, Skip) for f in fates] == [True, False, True, True], fates
    assert "used by several users" in caplog.text


def test_a_listed_device_id_not_shared_excludes_its_user_by_either_spelling() -> None:
    resolved = {"tablet-1": Resolved("alice-001", "tablet-1")}

    def resolve(props: dict[str, Any]) -> Resolved:
        device = props.get("$device_id") or str(props["distinct_id"]).removeprefix("$device:")
        return resolved.get(device, Resolved(props.get("distinct_id"), None))

    for listed in ("tablet-1", "$device:tablet-1"):
        rules = PrivacyRules(excluded_users=[listed]).with_merged_users(resolve, lambda d: False)
        assert rules.is_excluded({}, Resolved("alice-001", "phone-A")), listed


def test_a_dropped_ip_is_dropped_before_the_plan_and_kept_ip_is_untouched() -> None:
    props = {"$ip": "203.0.113.9", "ip": "203.0.113.9", "meta": {"ip": "kept: not the client's"}}
    assert PrivacyRules(keep_ip=False).scrub(props) == {"meta": {"ip": "kept: not the client's"}}
    assert PrivacyRules().scrub(props) is props


def test_a_list_read_only_where_the_plan_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event whose plan types ``tags`` list reads its text as the list; an event the
    plan leaves it untyped in, or types list without converting, keeps the text (hashed
    whole; the plan refuses the unconverted text as it does unhashed)."""
    plan = ("version: 1\nevents:\n  Buy:\n    properties:\n      tags:\n        type: list\n"
            "  Strict:\n    properties:\n      tags:\n        type: list\n"
            "        on_mismatch: reject\n  Page: {}\n")
    settings = settings_of(tmp_path, plan, '[privacy]\nhash_properties = ["tags"]\n'
                           'hash_salt = "pepper"\n', monkeypatch)
    transformer = Transformer(settings)
    text = '["a@private.example", "b@private.example"]'

    def out(name: str) -> Any:
        return transformer.event(rec(name, 0, distinct_id="bob-0001", tags=text),
                                 Resolved("bob-0001", None))

    bought, paged, strict = out("Buy"), out("Page"), out("Strict")
    assert isinstance(bought, dict) and isinstance(paged, dict), (bought, paged)
    assert len(bought["event_properties"]["tags"]) == 2
    assert isinstance(paged["event_properties"]["tags"], str)  # one hash of the text
    assert not isinstance(strict, dict), strict  # a type mismatch, as unhashed


def test_a_hashed_group_list_read_from_text_keeps_only_its_nameable_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = "version: 1\nproperties:\n  company_id:\n    type: list\n"
    settings = settings_of(tmp_path, plan, 'groups = ["company_id"]\n[privacy]\n'
                           'hash_properties = ["company_id"]\nhash_salt = "pepper"\n',
                           monkeypatch)
    out = Transformer(settings).event(
        rec("Page", 0, distinct_id="bob-0001", company_id='["acme", 4.5]'),
        Resolved("bob-0001", None))
    assert isinstance(out, dict), out
    hashes = out["event_properties"]["company_id"]
    assert len(hashes) == 2
    assert out["groups"] == {"company_id": [hashes[0]]}  # 4.5 makes no group unhashed


def test_a_salt_in_the_file_is_stripped_like_the_environments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MP2AMP_HASH_SALT", raising=False)
    (tmp_path / "mp2amp.toml").write_text('[privacy]\nhash_properties = ["email"]\n'
                                          'hash_salt = " pepper\\n"\n')
    salt = load_config(tmp_path / "mp2amp.toml").privacy.hash_salt
    assert salt is not None and salt.reveal() == "pepper"
    (tmp_path / "mp2amp.toml").write_text('[privacy]\nhash_properties = ["email"]\n'
                                          'hash_salt = "  "\n')
    with pytest.raises(ConfigError):
        load_config(tmp_path / "mp2amp.toml")


@pytest.mark.parametrize("legacy", [True, False])
def test_a_run_started_with_a_newline_pasted_salt_is_refused_naming_the_salt(
        monkeypatch: pytest.MonkeyPatch, legacy: bool) -> None:
    import dataclasses

    from mp2amp.config.sections import Secret
    from mp2amp.pipeline import fingerprint

    monkeypatch.setenv("MP2AMP_HASH_SALT", "pepper\n")
    config = load_config(None, {"privacy.hash_properties": ["email"]})
    assert config.privacy.hash_salt is not None
    assert config.privacy.hash_salt.reveal() == "pepper"
    before = dataclasses.replace(config, privacy=dataclasses.replace(
        config.privacy, hash_salt=Secret("pepper\n")))  # what an older mp2amp read
    known = orjson.dumps({"events": fingerprint.events_fingerprint(before, legacy)}).decode()
    assert fingerprint._unless_legacy_salt(["events"], known, config) == ["events"]
    note = fingerprint._stripped_salt(["events"], known, config)
    assert "MP2AMP_HASH_SALT" in note and "new work folder" in note
    monkeypatch.setenv("MP2AMP_HASH_SALT", "pepper")  # no blanks: nothing to explain
    assert fingerprint._stripped_salt(["events"], known, config) == ""
