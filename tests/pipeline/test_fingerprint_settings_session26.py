"""The per-setting digests a refused resume names (session 26, review of d803e40).

They were a key of the run fingerprint, which an mp2amp of the day before compares key by
key: one run or resume by this version and that one refused the unchanged run
("event_settings" changed; "resume with the original settings"), so nobody could go back.
They are a ledger meta key of their own now. A sub-table's key is named as the config
spells it (``[transform.revenue] price``, not ``[transform] revenue``), and id_merge,
both a fingerprint key and a setting of the events, is named once.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from migrate_kit import Project, amplitude, assert_exactly_once, make_config

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate

# the fingerprint keys the mp2amp before d803e40 recorded and compares
EARLIER_KEYS = {"source", "id_merge", "endpoint", "concurrency", "max_events", "max_bytes",
                "output_dir", "min_id_length", "events", "insert_ids"}


def _meta(work: Path, key: str) -> str | None:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return ledger.get_meta(key)
    finally:
        ledger.close()


def _refusal(config: object) -> str:
    with pytest.raises(TerminalError) as refused:
        migrate(config, resume=True)  # type: ignore[arg-type]
    return str(refused.value)


def test_the_fingerprint_holds_only_keys_an_earlier_mp2amp_compares(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        assert migrate(make_config(project.events, work, url), resume=True).exit_code == 0
    assert set(orjson.loads(str(_meta(work, "fingerprint")))) == EARLIER_KEYS
    settings = orjson.loads(str(_meta(work, "event_settings")))
    assert "[transform] session_gap_minutes" in settings
    assert "[transform.revenue] price" in settings


def test_a_changed_sub_table_key_and_id_merge_are_named_as_the_config_spells_them(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        message = _refusal(make_config(project.events, work, url,
                                       **{"transform.revenue": {"price": "amount"}}))
        assert "(what decides which events go out: [transform.revenue] price; was {" \
            in message
        message = _refusal(make_config(project.events, work, url,
                                       **{"mixpanel.id_merge": "original"}))
        assert "(what decides which events go out: [mixpanel] id_merge; was {" in message
        assert migrate(make_config(project.events, work, url), resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_run_recorded_with_its_settings_in_the_fingerprint_resumes_and_is_rewritten(
        project: Project, tmp_path: Path) -> None:
    """The form d803e40 recorded: the settings inside the fingerprint. It is not compared
    (nor shown), still names a change, and an accepted resume records the new form."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        ledger = Ledger(work / "ledger.sqlite")
        try:
            fingerprint = orjson.loads(str(ledger.get_meta("fingerprint")))
            fingerprint["event_settings"] = orjson.loads(str(ledger.get_meta("event_settings")))
            ledger.set_meta("fingerprint", orjson.dumps(fingerprint).decode())
        finally:
            ledger.close()
        from migrate_kit import drop_settings

        drop_settings(work)
        message = _refusal(make_config(project.events, work, url,
                                       **{"transform.session_gap_minutes": 45}))
        assert "(what decides which events go out: [transform] session_gap_minutes; was {" \
            in message
        assert "event_settings" not in message
        assert migrate(make_config(project.events, work, url), resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)
    assert set(orjson.loads(str(_meta(work, "fingerprint")))) == EARLIER_KEYS
    assert _meta(work, "event_settings") is not None
