"""Review of this session's changes: multi-day Export API windows through migrate, merged
groups staged again, insert_id scheme 2 (fast path vs general path), staging's UTC sort
for legacy projects, and migrate's planning / status. Defects are strict xfails."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Crash,
    Project,
    amplitude,
    assert_exactly_once,
    get_json,
    make_config,
    merged_groups,
    mp2amp,
    run_until_crash,
    split_days,
    stored_counts,
)

from mp2amp.config import load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.extract.export import Days, windows_of
from mp2amp.ledger import Ledger
from mp2amp.pipeline import migrate as migrate_module
from mp2amp.pipeline import windows as windows_module
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.status import status

FIRST, LAST = date(2024, 1, 1), date(2024, 1, 4)
MP_FAST = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}


def _export_config(mp_url: str, amp_url: str, work: Path, n: int, **extra: Any) -> Any:
    overrides = {"source.from_date": FIRST.isoformat(), "source.to_date": LAST.isoformat(),
                 "source.export_window_days": n, "mixpanel.api_host": mp_url,
                 "mixpanel.timezone": TIMEZONE, "amplitude.api_host": amp_url,
                 "run.workdir": str(work)}
    overrides.update(extra)
    return load_config(None, overrides,
                       env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "emulator-secret"})


def _mixpanel(root: Path, fail_rate: float = 0.0, seed: int = 3) -> MixpanelEmulator:
    return MixpanelEmulator(MixpanelConfig(
        data_dir=root, fail_rate=fail_rate, seed=seed,
        fault_kinds=("terminated_early", "drop", "split"), export_per_hour=None,
        export_per_second=None))


# --- 1. export_window_days ----------------------------------------------------------------

def test_windows_of_covers_each_day_once() -> None:
    for n in range(1, 9):
        for length in range(1, 12):
            last = date(2024, 2, 27 + 0)  # crosses a leap day
            first = date.fromordinal(last.toordinal() - length + 1)
            ws = windows_of(first, last, n)
            days = [date.fromordinal(d) for w in ws
                    for d in range(w.first.toordinal(), w.last.toordinal() + 1)]
            assert days == [date.fromordinal(first.toordinal() + i) for i in range(length)]
            assert all(w.first <= w.last for w in ws)
            assert all((w.last - w.first).days + 1 == n for w in ws[:-1])
    assert windows_of(FIRST, LAST, 31) == [Days(FIRST, LAST)]


def test_multi_day_windows_crash_mid_load_resume_exactly_once(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams broken, a crash after the 3rd accepted batch, then --resume: each event once;
    the last window (one day) shorter than N."""
    with _mixpanel(project.root, 0.4, 11).running() as mp_url, \
            amplitude(tmp_path / "amp") as amp_url:
        cfg = _export_config(mp_url, amp_url, tmp_path / "work", 3)
        import mp2amp.pipeline.migrate as m
        real = m.migrate

        def run(config: Any, **kw: Any) -> Any:
            return real(config, upload_overrides=FAST, mixpanel_overrides=MP_FAST, **kw)

        monkeypatch.setattr(m, "migrate", run)
        run_until_crash(cfg, monkeypatch, 3)
        result = real(cfg, resume=True, upload_overrides=FAST, mixpanel_overrides=MP_FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert [w.window for w in result.windows] == ["export:2024-01-01..2024-01-03",
                                                      "export:2024-01-04"]
        assert_exactly_once(amp_url, project.expected)


def test_multi_day_windows_crash_mid_export_refetches_only_the_missing_window(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while the second window is staged: the first (staged) is not asked again."""
    with _mixpanel(project.root).running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _export_config(mp_url, amp_url, tmp_path / "work", 2)
        real_stage = windows_module.stage
        calls: list[int] = []

        def stage(*args: Any, **kw: Any) -> int:
            calls.append(1)
            if len(calls) == 2:
                raise Crash("stopped while staging")
            return real_stage(*args, **kw)

        monkeypatch.setattr(windows_module, "stage", stage)
        with pytest.raises(Crash):
            migrate(cfg, upload_overrides=FAST, mixpanel_overrides=MP_FAST)
        monkeypatch.undo()
        asked = get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"]
        assert asked == 2
        st = status(tmp_path / "work")
        assert sorted(w.window for w in st.windows) == ["export:2024-01-01..2024-01-02",
                                                        "export:2024-01-03..2024-01-04"]
        result = migrate(cfg, resume=True, upload_overrides=FAST, mixpanel_overrides=MP_FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(amp_url, project.expected)
        # the second window's download was complete when its staging stopped: reused
        assert get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"] == 2
        cli = mp2amp("status", "--workdir", str(tmp_path / "work"), "--json")
        body = orjson.loads(cli.stdout)
        assert body["running_pid"] is None
        assert [w["window"] for w in body["windows"]] == ["export:2024-01-01..2024-01-02",
                                                          "export:2024-01-03..2024-01-04"]
        text = mp2amp("status", "--workdir", str(tmp_path / "work"))
        assert text.returncode == 0 and "complete" in text.stdout


def test_n_bigger_than_the_range_is_one_window(project: Project, tmp_path: Path) -> None:
    with _mixpanel(project.root).running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _export_config(mp_url, amp_url, tmp_path / "work", 31)
        result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=MP_FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert [w.window for w in result.windows] == ["export:2024-01-01..2024-01-04"]
        assert_exactly_once(amp_url, project.expected)
        assert get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"] == 1


def test_resume_with_another_window_size_is_refused(project: Project, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.errors import TerminalError

    with _mixpanel(project.root).running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _export_config(mp_url, amp_url, tmp_path / "work", 2)
        run_until_crash(cfg, monkeypatch, 1)
        with pytest.raises(TerminalError, match="differs"):
            migrate(_export_config(mp_url, amp_url, tmp_path / "work", 1), resume=True,
                    upload_overrides=FAST, mixpanel_overrides=MP_FAST)


@pytest.fixture(scope="module")
def legacy_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("legacy")
    mp2amp("generate", "--out", str(root / "p"), "--users", "60", "--days", "3",
           "--seed", "9", "--timezone", TIMEZONE, "--legacy-time")
    return root / "p"


def test_legacy_project_multi_day_windows_match_one_day_windows(
        legacy_project: Path, tmp_path: Path) -> None:
    """A legacy (local-time) project: 2-day windows give the same Amplitude events as days."""
    from mp2amp.pipeline.demo import export_dates

    first, last = export_dates(orjson.loads((legacy_project / "project.json").read_bytes()))
    got: list[dict[Any, int]] = []
    with _mixpanel(legacy_project).running() as mp_url:
        for n in (1, 2):
            with amplitude(tmp_path / f"amp{n}") as amp_url:
                cfg = _export_config(mp_url, amp_url, tmp_path / f"work{n}", n,
                                     **{"source.from_date": first.isoformat(),
                                        "source.to_date": last.isoformat(),
                                        "mixpanel.legacy_time": True})
                result = migrate(cfg, upload_overrides=FAST, mixpanel_overrides=MP_FAST)
                assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
                got.append(stored_counts(amp_url))
    assert got[0] and got[0] == got[1]


# --- 2. merged groups staged again ----------------------------------------------------

def _done_batches(work: Path) -> dict[str, int]:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return {b.batch_id: b.attempts for b in ledger.batches() if b.state == "done"}
    finally:
        ledger.close()


def _meta(work: Path, key: str) -> str | None:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return ledger.get_meta(key)
    finally:
        ledger.close()


def test_crash_between_remerge_and_check_then_resume(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group plus a plain window, staged/ deleted; the resume stops right after the
    group is merged again (before its check); staged/ deleted again; resumed: once each."""
    events = split_days(project.events, tmp_path / "events", slice(0, 1))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 3)
        merged = merged_groups(work)
        assert len(merged) == 1
        shutil.rmtree(work / "staged")
        real = migrate_module.check_restaged

        def crash(*args: Any) -> None:
            raise Crash("between remerge and check")

        monkeypatch.setattr(migrate_module, "check_restaged", crash)
        with pytest.raises(Crash):
            migrate(config, resume=True)
        monkeypatch.setattr(migrate_module, "check_restaged", real)
        assert merged_groups(work) == merged
        shutil.rmtree(work / "staged")
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
        assert merged_groups(work) == merged
        assert not _meta(work, "remerge")


def test_only_the_merged_head_file_deleted(project: Project, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The merged file alone is gone (placeholders kept): the group is remade."""
    events = split_days(project.events, tmp_path / "events", slice(0, 2))
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(events, work, url)
        run_until_crash(config, monkeypatch, 2)
        merged = merged_groups(work)
        assert len(merged) == 2
        heads = list((work / "staged").glob("*.merged.jsonl"))
        assert len(heads) == 2
        done = _done_batches(work)
        assert done
        heads[1].unlink()
        result = migrate(config, resume=True)
        assert result.exit_code == 0 and result.totals["balanced"]
        assert_exactly_once(url, project.expected)
        assert merged_groups(work) == merged
        assert not _meta(work, "remerge")
        after = _done_batches(work)
        assert {b: after[b] for b in done} == done  # done batches were not sent again


# --- 3. insert_id scheme 2 ----------------------------------------------------------------

def _transform_ids(records: list[dict[str, Any]]) -> list[str]:
    """Each record's insert_id from the general path (first sight of its shape) and the
    fast path (seen again): both must agree."""
    from mp2amp.models import Resolved
    from mp2amp.transform.events import Transformer
    from mp2amp.transform.settings import TransformSettings

    t = Transformer(TransformSettings())
    out = []
    for rec in records:
        got = [t.event(orjson.loads(orjson.dumps(rec)), Resolved("u", None)) for _ in range(3)]
        assert all(isinstance(g, dict) for g in got), got
        ids = {g["insert_id"] for g in got}  # type: ignore[index]
        assert len(ids) == 1, ids
        out.append(ids.pop())
    return out


def _ev(insert_id: Any, distinct_id: Any = "user-1", t: Any = 1704067200.25,
        **props: Any) -> dict[str, Any]:
    p = {"distinct_id": distinct_id, "time": t, "$insert_id": insert_id}
    p.update(props)
    return {"event": "Purchase", "properties": p}


def test_fast_path_and_general_path_give_the_same_ids() -> None:
    from mp2amp.transform.insert_id import event_insert_id
    from mp2amp.transform.timeconv import to_epoch_ms

    cases = [
        _ev("abcdefghij-ascii-id"),                       # fast path
        _ev("abcdefghij-ascii-id", t=1704067200),          # seconds export of the same
        _ev("abcdefghij-ascii-id", t=1704067200999),       # ms export, same second
        _ev("ünïcødé-insert-id-xyz"),                      # non-ASCII: general path
        _ev("abcdefghij-ascii-id", "new-merged-id",
            **{"$distinct_id_before_identity": "user-1"}),  # reshuffled
        _ev("short1"),                                     # short: general path
    ]
    ids = _transform_ids(cases)
    for rec, got in zip(cases, ids, strict=True):
        p = rec["properties"]
        assert got == event_insert_id(rec["event"], p, to_epoch_ms(p["time"]))
    assert ids[0] == ids[1] == ids[2] == ids[4]
    assert ids[3].startswith("ünïcødé-insert-id-xyz-")


def test_dedup_across_a_spill_with_seconds_and_ms_times(tmp_path: Path) -> None:
    from mp2amp.transform.dedup import Deduper

    with Deduper(memory_budget=2, spill_dir=tmp_path) as d:
        assert not d.is_duplicate("a", 1_704_067_200_000)
        assert not d.is_duplicate("b", 1_704_067_200_500)
        assert not d.is_duplicate("c", 1_704_067_201_000)  # spills
        assert not d.is_duplicate("z", 1_704_067_300_000)
        assert d.is_duplicate("b", 1_704_067_200_999)
        assert d.is_duplicate("a", 1_704_067_200_000)
        assert d.is_duplicate("c", 1_704_067_201_000)
        assert not d.is_duplicate("d", 1_704_067_200_400)


# --- 4. staging's UTC sort for legacy_time ------------------------------------------------

def test_utc_key_orders_a_dst_fold_by_processing_time() -> None:
    from mp2amp.pipeline.staging import utc_key

    key = utc_key(("America/Los_Angeles", ()))
    assert key is not None
    # 2023-11-05 01:30 local happens twice (PDT then PST); 01:10 local PST is after
    # 01:30 PDT. As epoch-like local seconds:
    local_0130 = 1699147800.0  # 2023-11-05T01:30:00 read as UTC
    local_0110 = local_0130 - 20 * 60
    first = key(local_0130, {"mp_processing_time_ms": int((local_0130 + 7 * 3600) * 1000)})
    second = key(local_0110, {"mp_processing_time_ms": int((local_0110 + 8 * 3600 + 60) * 1000)})
    assert first < second
    assert utc_key(None) is None


def test_unit_seconds_agrees_with_to_epoch_ms() -> None:
    from mp2amp.pipeline.staging import sort_key
    from mp2amp.transform.timeconv import to_epoch_ms, unit_seconds

    for value in (1704067200, 1704067200.5, 1704067200123, 1704067200123456,
                  1704067200123456789):
        assert abs(unit_seconds(value) * 1000 - to_epoch_ms(value)) <= 1, value
        # whole seconds sort at the end of their second (session 14: the finer copy first)
        assert 0 <= sort_key({"properties": {"time": value}}) * 1000 - to_epoch_ms(value) \
            <= (1000 if value == 1704067200 else 1), value
    assert sort_key({"properties": {"time": str(1704067200123)}}) == pytest.approx(1704067200.123)
    assert sort_key({"properties": {"time": 10**400}}) < 0


# --- 5. planning before the work folder; the refused re-run; status ------------------------

def test_a_glob_matching_nothing_leaves_no_work_folder(tmp_path: Path) -> None:
    from mp2amp.errors import Mp2AmpError

    work = tmp_path / "work"
    cfg = make_config(tmp_path / "none-*.jsonl", work, "http://127.0.0.1:9")
    with pytest.raises(Mp2AmpError):
        migrate(cfg)
    assert not work.exists()


def test_a_refused_rerun_is_not_recorded(project: Project, tmp_path: Path) -> None:
    from mp2amp.errors import TerminalError

    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        assert migrate(cfg, upload_overrides=FAST).exit_code == 0
        before = status(work).last_attempt
        with pytest.raises(TerminalError, match="already holds"):
            migrate(cfg, upload_overrides=FAST)
        assert status(work).last_attempt == before
        assert status(work).running_pid is None


def test_status_reads_only_the_workdir_of_a_broken_config(project: Project,
                                                          tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url),
                       upload_overrides=FAST).exit_code == 0
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "mp2amp.toml").write_text(
        '[mixpanel]\ntimezone = "Not/AZone"\n[run]\nworkdir = "../work"\n')
    out = mp2amp("status", "-c", str(sub / "mp2amp.toml"), "--json", cwd=tmp_path)
    assert orjson.loads(out.stdout)["complete"] is True


def test_status_of_a_broken_config_expands_a_home_workdir(project: Project,
                                                          tmp_path: Path) -> None:
    """`workdir = "~/..."`: a valid config reads it under $HOME (the loader expands ~);
    status's fallback for a config with problems must read the same folder."""
    import os

    home = tmp_path / "home"
    home.mkdir()
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, home / "mig", url),
                       upload_overrides=FAST).exit_code == 0
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    env = {**os.environ, "HOME": str(home)}
    good = cfg_dir / "good.toml"
    good.write_text('[mixpanel]\ntimezone = "UTC"\n[run]\nworkdir = "~/mig"\n')
    assert orjson.loads(mp2amp("status", "-c", str(good), "--json", env=env).stdout)["complete"]
    bad = cfg_dir / "bad.toml"
    bad.write_text('[mixpanel]\ntimezone = "Not/AZone"\n[run]\nworkdir = "~/mig"\n')
    out = mp2amp("status", "-c", str(bad), "--json", env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["complete"] is True
