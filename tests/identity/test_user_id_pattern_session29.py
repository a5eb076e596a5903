"""``[transform] user_id_pattern`` is matched by RE2 (identity/pattern.py).

Before: Python's ``re`` matched it, and ``^(a+)+$`` against an ID of forty ``a`` and a
``!`` backtracked for hours: an Original ID Merge run stalled in its identity pass with no
message. Now every ID is judged in time linear in its length, and a pattern RE2 cannot
match that way is refused when the config is read, naming the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from mp2amp.identity.pattern import pattern_problem, user_id_matcher

T0 = 1_700_000_000
CATASTROPHIC = "^(a+)+$"


def _run_transform(tmp: Path, pattern: str, ids: list[str]) -> subprocess.CompletedProcess[str]:
    records = [{"event": "A", "properties": {"time": T0 + i, "$insert_id": f"i{i}",
                                             "distinct_id": d}} for i, d in enumerate(ids)]
    (tmp / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp / "mp2amp.toml").write_text(
        '[mixpanel]\nid_merge = "original"\ntimezone = "UTC"\n'
        f"[transform]\nuser_id_pattern = {json.dumps(pattern)}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIXPANEL_", "AMPLITUDE_"))}
    # a subprocess: a backtracking match in C cannot be interrupted from inside the test
    return subprocess.run(
        [sys.executable, "-m", "mp2amp", "transform", "-c", "mp2amp.toml", "in.jsonl",
         "--out", "out.jsonl", "--json"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def test_a_backtracking_pattern_judges_every_id_at_once(tmp_path: Path) -> None:
    ids = ["a" * 40 + "!", "aaaa", "b" * 60 + "!"]
    done = _run_transform(tmp_path, CATASTROPHIC, ids)
    assert done.returncode == 0, done.stderr
    sent = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    # "aaaa" matches: a user. The others do not: an anonymous ID, sent as a device
    assert [(e.get("user_id"), e.get("device_id")) for e in sent] == [
        (None, ids[0]), ("aaaa", None), (None, ids[2])]


@pytest.mark.parametrize("pattern, named", [
    (r"^(\w+)\1$", "invalid escape sequence: \\1"),
    ("^(?=u)[a-z]+$", "invalid perl operator: (?="),
    ("^(?<!x)a$", "invalid perl operator: (?<!"),
])
def test_a_pattern_re2_cannot_match_is_refused_naming_the_key(
        tmp_path: Path, pattern: str, named: str) -> None:
    done = _run_transform(tmp_path, pattern, ["u1"])
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "ConfigError"
    assert error["problems"] == [
        f"transform.user_id_pattern: {pattern!r} is not a regular expression RE2 can match "
        f"({named}); backreferences and lookarounds are not supported"]
    assert "re2.cc" not in done.stderr  # RE2's own error log stays off


def test_the_matcher_is_a_full_match() -> None:
    matches = user_id_matcher("[0-9a-f]{24}")
    assert matches("0123456789abcdef01234567")
    assert not matches("0123456789abcdef012345678")   # longer: not a full match
    assert not matches("x0123456789abcdef01234567")
    assert not matches("0123456789abcdef0123456\n7")


def test_a_lone_surrogate_in_an_id_is_matched_as_a_replacement_character() -> None:
    # JSON's "\ud800" decodes to a str UTF-8 cannot encode; RE2 needs UTF-8
    assert user_id_matcher("u.+")("u\ud800x")
    assert not user_id_matcher("[a-z]+")("ab\ud800")
    assert user_id_matcher("ab\ufffd")("ab\ud800")


def test_perl_classes_are_ascii_as_the_readme_says() -> None:
    arabic_indic = "\u0663\u0664"
    assert not user_id_matcher(r"\d+")(arabic_indic)
    assert user_id_matcher(r"\p{Nd}+")(arabic_indic)


def test_the_config_check_passes_the_patterns_it_can_use() -> None:
    assert pattern_problem("^[0-9a-f]{24}$") is None
    assert pattern_problem(CATASTROPHIC) is None  # RE2 matches it in linear time
    assert pattern_problem("^[0-9]{9999999999}$") == (
        "'^[0-9]{9999999999}$' is not a valid regular expression (the repetition number is "
        "too large)")
    assert pattern_problem("a{3000000000}") == (  # RE2 would read it as text
        "'a{3000000000}': {3000000000} repeats more than RE2, which matches this pattern, "
        "can count (1000)")
    assert pattern_problem("^u{,5}$") == (  # RE2 would read it as text
        "'^u{,5}$': {,5} would be literal text to RE2, which matches this pattern: write {0,5}")
    assert pattern_problem(r"^u\{,5}$") is None  # an escaped brace is text to both
    assert pattern_problem("^u{2,}x{3}$") is None
