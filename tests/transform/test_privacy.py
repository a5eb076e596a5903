"""Privacy rules: IP flag, dropped and hashed properties, excluded users, retention date."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mp2amp.errors import ConfigError
from mp2amp.models import Resolved, Skip
from mp2amp.transform.privacy import PrivacyRules, load_excluded_users

NOBODY = Resolved(None, None)
JAN_1_2022_MS = 1_640_995_200_000


def test_drop_and_hash() -> None:
    rules = PrivacyRules(drop_properties=["$phone"], hash_properties=["email", "age"],
                         salt="pepper")
    props = {"$phone": "+447700900001", "email": "user1@example.com", "age": 41, "x": None}
    out = rules.apply("Login", props, NOBODY, 0)
    assert out == {
        "email": hashlib.sha256(b"pepperuser1@example.com").hexdigest(),
        "age": hashlib.sha256(b"pepper41").hexdigest(),
        "x": None,
    }
    assert props["email"] == "user1@example.com"  # input untouched


def test_same_value_same_hash_other_salt_other_hash() -> None:
    a = PrivacyRules(hash_properties=["e"], salt="one")
    b = PrivacyRules(hash_properties=["e"], salt="two")
    assert a.hash_value("x") == a.hash_value("x") != b.hash_value("x")
    assert a.hash_value({"b": 1, "a": 2}) == a.hash_value({"a": 2, "b": 1})


def test_hashing_without_salt_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a salt"):
        PrivacyRules(hash_properties=["email"])


def test_nothing_to_do_returns_the_same_dict() -> None:
    props = {"a": 1}
    assert PrivacyRules(drop_properties=["b"]).apply("e", props, NOBODY, 0) is props


@pytest.mark.parametrize(
    ("props", "ids"),
    [
        ({"distinct_id": "gone-user"}, NOBODY),
        ({"distinct_id": "$device:abc"}, Resolved("gone-user", "abc")),
        ({}, Resolved(None, "gone-device")),
        ({"$user_id": "gone-user"}, NOBODY),
        ({"distinct_id": 12345}, NOBODY),
    ],
)
def test_excluded_users_are_skipped(props: dict[str, Any], ids: Resolved) -> None:
    rules = PrivacyRules(excluded_users=["gone-user", "gone-device", "12345"])
    out = rules.apply("Login", props, ids, 0)
    assert isinstance(out, Skip) and out.rule == "privacy.excluded_user"
    assert "gone" not in out.detail  # IDs of deleted people are not repeated in reports


def test_other_users_pass() -> None:
    rules = PrivacyRules(excluded_users=["gone-user"])
    props = {"distinct_id": "kept"}
    assert rules.apply("Login", props, Resolved("kept", "dev-1"), 0) is props


def test_retention_is_a_utc_midnight_boundary() -> None:
    rules = PrivacyRules(drop_before=date(2022, 1, 1))
    before = rules.apply("e", {}, NOBODY, JAN_1_2022_MS - 1)
    assert isinstance(before, Skip) and before.rule == "privacy.before_retention"
    assert rules.apply("e", {}, NOBODY, JAN_1_2022_MS) == {}


def test_repr_hides_the_salt() -> None:
    text = repr(PrivacyRules(hash_properties=["e"], salt="s3cr3t-salt"))
    assert "s3cr3t" not in text and "***" in text


def test_excluded_users_file(tmp_path: Path) -> None:
    path = tmp_path / "excluded.txt"
    path.write_text("# GDPR deletions\nuser-1\n\n  user-2  \r\n#user-3\n", encoding="utf-8")
    assert load_excluded_users(path) == frozenset({"user-1", "user-2"})


def test_excluded_users_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_excluded_users(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_excluded_users(bad)


# --- invariants -----------------------------------------------------------------------

keys = st.sampled_from(["email", "$phone", "name", "plan", "city", "id"])
values = st.none() | st.integers() | st.text() | st.lists(st.integers(), max_size=3)


@given(
    props=st.dictionaries(keys, values),
    drop=st.sets(keys),
    hashed=st.sets(keys),
    time_ms=st.integers(0, 2 * JAN_1_2022_MS),
)
def test_no_dropped_or_clear_hashed_value_survives(
    props: dict[str, Any], drop: set[str], hashed: set[str], time_ms: int
) -> None:
    rules = PrivacyRules(drop_properties=drop, hash_properties=hashed, salt="s")
    out = rules.apply("e", props, NOBODY, time_ms)
    assert isinstance(out, dict)
    assert not drop & out.keys()
    assert out.keys() == props.keys() - drop
    for key in out.keys() & (hashed - drop):
        # value by value, the shape kept: "a" and ["a"] hash alike
        given, got = props[key], out[key]
        for clear, hidden in zip(given if type(given) is list else [given],
                                 got if type(given) is list else [got], strict=True):
            if clear is None:
                assert hidden is None
            elif type(clear) is str and not clear.strip():
                assert hidden == ""  # blank stays blank: no group is made of it
            else:
                assert len(hidden) == 64 and hidden != clear
                assert hidden == rules.hash_value(clear)
    for key in out.keys() - hashed:
        assert out[key] == props[key]


# an ID as a list line gives it: blanks around a listed ID are not part of it (README), so
# the property is stated for IDs without them ('\r' alone lists nothing)
_ID = st.text(min_size=1, max_size=6).map(str.strip).filter(bool)


@given(
    ids=st.lists(_ID, max_size=5),
    user=st.none() | _ID,
    device=st.none() | _ID,
)
def test_excluded_exactly_when_an_id_is_listed(ids: list[str], user: str | None,
                                               device: str | None) -> None:
    rules = PrivacyRules(excluded_users=ids)
    out = rules.apply("e", {}, Resolved(user, device), 0)
    listed = (user in ids) or (device in ids)
    assert isinstance(out, Skip) == listed


@pytest.mark.parametrize(("rules", "changes"), [
    (PrivacyRules.none(), False),
    (PrivacyRules(keep_ip=False), False),  # the IP is a mapping setting, not a per-event rule
    (PrivacyRules(drop_properties=["a"]), True),
    (PrivacyRules(hash_properties=["a"], salt="s"), True),
    (PrivacyRules(excluded_users=["u1"]), True),
    (PrivacyRules(drop_before=date(2022, 1, 1)), True),
])
def test_only_rules_that_can_change_an_event_are_applied_per_event(
        rules: PrivacyRules, changes: bool) -> None:
    assert rules.changes_events is changes
