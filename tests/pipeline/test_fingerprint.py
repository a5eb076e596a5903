"""The run's fingerprint covers what decides which events a window emits.

A resume re-cuts each window into batches and skips those done by id; a privacy rule or
time zone changed in between used to shift the cuts (the end check then found the windows
unbalanced, after mixed data had gone out). Now such a resume is refused up front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from migrate_kit import (
    TIMEZONE,
    Project,
    amplitude,
    assert_exactly_once,
    drop_fingerprint_key,
    drop_settings,
    make_config,
    set_fingerprint_key,
)

from mp2amp.config import load_config
from mp2amp.errors import TerminalError
from mp2amp.pipeline.fingerprint import events_fingerprint
from mp2amp.pipeline.migrate import migrate


def _config(tmp_path: Path, **overrides: Any) -> Any:
    base = {"source.files": [str(tmp_path / "in")], "mixpanel.timezone": TIMEZONE}
    base.update(overrides)
    return load_config(None, base, env={"AMPLITUDE_API_KEY": "k" * 32,
                                        "MP2AMP_HASH_SALT": "pepper-1"})


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "in").mkdir()
    excluded = tmp_path / "excluded.txt"
    excluded.write_text("u1\n")
    return {"excluded": excluded}


@pytest.mark.parametrize(("key", "value"), [
    ("mixpanel.timezone", "Europe/Paris"),
    ("mixpanel.project_id", 42),
    ("transform.session_gap_minutes", 45),
    ("transform.retroactive", False),
    ("transform.groups", ["company"]),
    ("privacy.ip", "drop"),
    ("privacy.drop_properties", ["email"]),
    ("privacy.drop_before", "2024-01-02"),
])
def test_a_setting_that_changes_the_events_changes_the_fingerprint(
        tmp_path: Path, files: dict[str, Path], key: str, value: Any) -> None:
    assert events_fingerprint(_config(tmp_path, **{key: value})) != \
        events_fingerprint(_config(tmp_path))


def test_a_named_files_content_counts_and_speed_settings_do_not(
        tmp_path: Path, files: dict[str, Path]) -> None:
    base = _config(tmp_path, **{"privacy.exclude_users": str(files["excluded"])})
    before = events_fingerprint(base)
    tuned = _config(tmp_path, **{"privacy.exclude_users": str(files["excluded"]),
                                 "run.concurrency": 3, "run.memory_budget": 50_000,
                                 "run.transform_workers": 0,
                                 "amplitude.api_host": "http://127.0.0.1:1"})
    assert events_fingerprint(tuned) == before
    files["excluded"].write_text("u1\nu2\n")  # the same path, another list
    assert events_fingerprint(base) != before


def test_the_salt_counts_but_is_not_in_the_fingerprint(tmp_path: Path,
                                                       files: dict[str, Path]) -> None:
    salted = _config(tmp_path, **{"privacy.hash_properties": ["email"]})
    digest = events_fingerprint(salted)
    assert "pepper" not in digest
    other = load_config(None, {"source.files": [str(tmp_path / "in")],
                               "mixpanel.timezone": TIMEZONE,
                               "privacy.hash_properties": ["email"]},
                        env={"MP2AMP_HASH_SALT": "pepper-2"})
    assert events_fingerprint(other) != digest


def test_a_resume_with_another_privacy_rule_is_refused(project: Project, tmp_path: Path,
                                                       files: dict[str, Path]) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        changed = make_config(project.events, work, url,
                              **{"privacy.exclude_users": str(files["excluded"])})
        with pytest.raises(TerminalError) as refused:
            migrate(changed, resume=True)
        assert "differs from the one the run started with in what decides its batches " \
               "(what decides which events go out: [privacy] exclude_users; was" \
               in str(refused.value)
        assert "event_settings" not in str(refused.value)
        same = migrate(make_config(project.events, work, url), resume=True)
        assert same.exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_run_started_before_this_fingerprint_still_resumes(project: Project,
                                                             tmp_path: Path) -> None:
    """Its stored fingerprint lacks "events": the keys it has are compared, not that one."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        assert migrate(config).exit_code == 0
        drop_fingerprint_key(work, "events")
        assert migrate(config, resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_run_started_under_the_earlier_insert_id_scheme_is_refused(project: Project,
                                                                     tmp_path: Path) -> None:
    """Its fingerprint has no "insert_ids" (scheme 1 hashed milliseconds): a resume would
    resend its in-flight batches under new insert_ids, so it is refused, named."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        assert migrate(config).exit_code == 0
        assert drop_fingerprint_key(work, "insert_ids") == 4
        with pytest.raises(TerminalError) as refused:
            migrate(config, resume=True)
        assert "(the insert_id scheme (this mp2amp makes ids of scheme 3 or 4; the run was " \
               "started by another version, earlier or later: finish it with that version); " \
               "was" in str(refused.value)


def test_a_run_started_by_a_later_scheme_is_refused_named(project: Project,
                                                          tmp_path: Path) -> None:
    """A run a newer mp2amp started (scheme 5) is not resumed under this one's ids."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        assert migrate(config).exit_code == 0
        assert set_fingerprint_key(work, "insert_ids", 5) == 4
        with pytest.raises(TerminalError, match=r"the insert_id scheme \(this mp2amp makes ids "
                           r"of scheme 3 or 4; the run was started by another version, earlier "
                           r"or later: finish it with that version\); was .*\"insert_ids\":5"):
            migrate(config, resume=True)


def test_an_identity_table_folder_counts_by_its_files_and_a_file_by_its_bytes(
        tmp_path: Path, files: dict[str, Path]) -> None:
    """A file is read 1 MiB at a time (a table may be gigabytes); a folder of tables by
    its files' names and sizes (not every byte on every run); s3:// by its listing
    (tests/pipeline/test_fingerprint_session23_review.py)."""
    import hashlib

    from mp2amp.pipeline.fingerprint import _content

    table = tmp_path / "table.jsonl"
    table.write_bytes(b"x" * (3 << 20))
    assert _content(table) == hashlib.sha256(table.read_bytes()).hexdigest()[:16]
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "a.jsonl").write_text("1\n")
    with_one = events_fingerprint(_config(tmp_path, **{"source.identity_table": str(folder)}))
    (folder / "b.jsonl").write_text("2\n")
    assert events_fingerprint(_config(tmp_path, **{"source.identity_table": str(folder)})) \
        != with_one


def test_a_refused_resume_names_each_setting_that_changed(project: Project,
                                                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        changed = make_config(project.events, work, url,
                              **{"transform.session_gap_minutes": 45, "privacy.ip": "drop"})
        with pytest.raises(TerminalError) as refused:
            migrate(changed, resume=True)
        assert "(what decides which events go out: [privacy] ip, [transform] " \
               "session_gap_minutes; was {" in str(refused.value)


def test_a_run_that_recorded_no_settings_is_refused_in_general_words(
        project: Project, tmp_path: Path) -> None:
    """Runs started before the fingerprint held each setting's digest: the change is
    found by the one digest of them all, and named by what it covers."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        drop_settings(work)
        changed = make_config(project.events, work, url,
                              **{"transform.session_gap_minutes": 45})
        with pytest.raises(TerminalError) as refused:
            migrate(changed, resume=True)
        assert "(the [mixpanel] time and project settings, [transform], [privacy] or the " \
               "files they name; was" in str(refused.value)
        assert migrate(make_config(project.events, work, url), resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)
