"""Adversarial review (session 16) of the Mixpanel Export API as ``mp2amp migrate``'s
source, end to end over loopback against the Mixpanel emulator (its day files rewritten
where Mixpanel may answer differently on a second query) and the Amplitude emulator.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import API_KEY, FAST, Crash, amplitude, crash_at_batch, get_json

from mp2amp.config import Config, load_config
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.pipeline.migrate import migrate

SECRET = "emulator-secret"
FAST_MP = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}
T0 = 1_704_103_200_000  # 2024-01-01T10:00:00Z in ms


def _event(n: int, t: int = T0, name: str = "Tied") -> dict[str, Any]:
    return {"event": name, "properties": {"time": t, "distinct_id": f"device-{n:03d}",
                                          "$insert_id": f"iid-{n:03d}"}}


def _write_day(data: Path, day: str, records: list[dict[str, Any]]) -> None:
    (data / "events").mkdir(parents=True, exist_ok=True)
    (data / "events" / f"{day}.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in records))


def _config(tmp: Path, mp_url: str, amp_url: str, **extra: Any) -> Config:
    overrides = {"source.from_date": "2024-01-01", "source.to_date": "2024-01-01",
                 "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
                 "run.workdir": str(tmp / "work"), "run.concurrency": 1}
    overrides.update(extra)
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY,
                                             "MIXPANEL_SECRET": SECRET})


def _stored_source_ids(amp_url: str) -> dict[str, int]:
    return {iid: n for _, iid, n in get_json(amp_url + "/_emulator/insert_ids")}


def run_until_crash_with(cfg: Config, monkeypatch: pytest.MonkeyPatch, n: int,
                         up: dict[str, Any]) -> None:
    """``migrate`` stopped as the ``n``-th accepted batch is to be recorded (a crash right
    after Amplitude's 200); the patch is undone for the resume."""
    crash_at_batch(monkeypatch, n)
    with pytest.raises(Crash):
        migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
    monkeypatch.undo()


def test_a_day_fetched_again_in_another_order_loses_no_event(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixpanel promises no order of export lines (reference 1.4), and real exports hold
    many events of one time (second-precision SDKs). README: staged files deleted before a
    resume are staged again from their sources (Export API days fetched again) and
    batches already accepted are not sent again. The resume exits 0, balanced, and its
    result counts all 6 as sent."""
    data = tmp_path / "mp"
    records = [_event(n) for n in range(6)]
    _write_day(data, "2024-01-01", records)
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url)
        up = {**FAST, "max_events": 2, "concurrency": 1}
        run_until_crash_with(cfg, monkeypatch, 2, up)
        first = _stored_source_ids(amp_url)
        assert 2 <= len(first) < len(records)  # some batches accepted, then the crash
        shutil.rmtree(tmp_path / "work" / "staged")  # to free space, say
        _write_day(data, "2024-01-01", list(reversed(records)))  # same day, another order
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        assert result.exit_code == 0
        stored = _stored_source_ids(amp_url)
    assert len(stored) == len(records), f"only {len(stored)} of {len(records)} reached Amplitude"


def test_a_full_disk_while_a_day_downloads_says_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import errno

    from mp2amp.errors import TerminalError
    from mp2amp.extract import export as export_module

    class FullDisk:
        def __init__(self, f: Any) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    def opened(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by caller
        return FullDisk(f) if str(path).endswith(".jsonl.part") else f

    data = tmp_path / "mp"
    _write_day(data, "2024-01-01", [_event(n) for n in range(3)])
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url)
        monkeypatch.setattr(export_module, "open", opened, raising=False)
        with pytest.raises(TerminalError) as stopped:
            migrate(cfg, upload_overrides=FAST, mixpanel_overrides=FAST_MP)
    message = str(stopped.value)
    assert "No space left on device" in message
    assert message.startswith("the disk is full") and "--resume" in message, message



def test_credentials_refused_after_days_were_sent_do_not_say_nothing_was_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.errors import AuthError

    data = tmp_path / "mp"
    _write_day(data, "2024-01-01", [_event(n) for n in range(4)])
    _write_day(data, "2024-01-02", [_event(n, T0 + 86_400_000) for n in range(4, 8)])
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url, **{"source.to_date": "2024-01-02"})
        up = {**FAST, "max_events": 2, "concurrency": 1}
        run_until_crash_with(cfg, monkeypatch, 3, up)  # day 1's two batches accepted
        rotated = load_config(None, {
            "source.from_date": "2024-01-01", "source.to_date": "2024-01-02",
            "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
            "run.workdir": str(tmp_path / "work"), "run.concurrency": 1},
            env={"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "rotated-secret"})
        for staged in (tmp_path / "work" / "staged").glob("export_2024-01-02*"):
            staged.unlink()  # day 2 still to fetch (freed space, or not reached yet)
        with pytest.raises(AuthError) as refused:
            migrate(rotated, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        sent = _stored_source_ids(amp_url)
    assert len(sent) >= 4  # day 1 is in Amplitude
    assert "nothing was sent" not in str(refused.value), str(refused.value)



def test_a_resume_keeps_to_the_hourly_query_limit_its_run_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference 1.7: 60 queries an hour per project. Here the limit is 2 an hour on both
    sides, and an hour lasts 2.5 s (the emulator's clock runs 1440 times faster, and the
    client's hour is patched to match), so a fixed client only waits a few seconds."""
    import time

    from mp2amp.errors import RateLimited
    from mp2amp.extract import ratelimit
    from mp2amp.pipeline import windows as windows_module

    start = time.time()
    data = tmp_path / "mp"
    for d in (1, 2, 3):
        _write_day(data, f"2024-01-0{d}", [_event(n, T0 + (d - 1) * 86_400_000)
                                           for n in range(d * 10, d * 10 + 3)])
    emu = MixpanelEmulator(MixpanelConfig(
        data_dir=data, api_secret=SECRET, export_per_hour=2, export_per_second=None,
        clock=lambda: start + (time.time() - start) * 1440))
    monkeypatch.setattr(ratelimit, "HOUR", 2.6)
    limits = {**FAST_MP, "per_hour": 2}
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url, **{"source.to_date": "2024-01-03",
                                                    "run.concurrency": 4})
        staged = windows_module.staged_in_thread
        calls: list[int] = []

        async def crash_on_the_second(*args: Any, **kwargs: Any) -> int:
            calls.append(1)
            if len(calls) == 2:  # a crash as the hour's second day is staged
                raise Crash("stopped here")
            return await staged(*args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(windows_module, "staged_in_thread", crash_on_the_second)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST, mixpanel_overrides=limits)
        assert get_json(mp_url + "/_emulator/stats")["requests"]["export_requests"] == 2
        # the resume gives up at the first 429 instead of waiting out its Retry-After
        with contextlib.suppress(RateLimited):
            migrate(cfg, resume=True, upload_overrides=FAST,
                    mixpanel_overrides={**limits, "max_rate_limited": 1})
        stats = get_json(mp_url + "/_emulator/stats")["requests"]
    assert stats.get("export_429", 0) == 0, stats


# --- fixes: staging ties by content, and a digest that catches any other change ----------


def _tied_records(source: str) -> list[Any]:
    """Same-time records of several devices, two copies of one event among them (the
    later ingested must be the one sent, whatever the order they arrive in)."""
    from mp2amp.models import SourceRecord

    records = [_event(n) for n in range(8)]
    for ingested in (T0 + 5_000, T0 + 9_000):  # copies of event 3, ingested twice
        copy = orjson.loads(orjson.dumps(records[3]))
        copy["properties"]["mp_processing_time_ms"] = ingested
        records.append(copy)
    return [SourceRecord(source, n, r, None, orjson.dumps(r))
            for n, r in enumerate(records, start=1)]


def _content(path: Path) -> list[Any]:
    from mp2amp.pipeline.staging import read_staged

    return [r.record for r in read_staged(path)]


def test_export_ties_are_staged_by_content_whatever_their_arrival_order(
        tmp_path: Path) -> None:
    import dataclasses
    import random

    from mp2amp.pipeline.staging import stage

    records = _tied_records("export:2024-01-01")
    first = stage(records, tmp_path / "first.jsonl", by_content=True)
    for seed in range(5):
        shuffled = random.Random(seed).sample(records, len(records))
        # numbered as they arrive this time, and one written with its keys in another order
        again = [dataclasses.replace(r, line=n) for n, r in enumerate(shuffled, start=1)]
        again[0] = dataclasses.replace(again[0], raw=orjson.dumps(
            again[0].record, option=orjson.OPT_SORT_KEYS))
        staged = stage(again, tmp_path / f"again{seed}.jsonl", chunk=3, by_content=True)
        assert (staged, staged.digest) == (first, first.digest)
        assert _content(tmp_path / f"again{seed}.jsonl") == _content(tmp_path / "first.jsonl")
    copies = [r for r in _content(tmp_path / "first.jsonl")
              if r["properties"]["$insert_id"] == "iid-003"]
    assert [c["properties"].get("mp_processing_time_ms") for c in copies] == [
        T0 + 9_000, T0 + 5_000, None]  # the latest ingested first, as before


def test_files_keep_their_arrival_order_and_their_digest_sees_it(tmp_path: Path) -> None:
    import dataclasses
    import pickle

    from mp2amp.pipeline.staging import stage

    records = _tied_records("a.jsonl")
    one = stage(records, tmp_path / "one.jsonl")
    lines = [r.record["properties"]["$insert_id"] for r in records[:8]]
    assert [r["properties"]["$insert_id"] for r in _content(tmp_path / "one.jsonl")][:8] == lines
    # the same lines from another file: the same digest (it names no source or line)
    moved = [dataclasses.replace(r, source="b.jsonl", line=r.line + 10) for r in records]
    assert stage(moved, tmp_path / "moved.jsonl").digest == one.digest
    swapped = [records[1], records[0], *records[2:]]  # same count, same size, other order
    assert stage(swapped, tmp_path / "swapped.jsonl").digest != one.digest
    assert pickle.loads(pickle.dumps(one)).digest == one.digest  # from a staging process


def _file_config(tmp: Path, events: Path, amp_url: str) -> Config:
    return load_config(None, {"source.files": [str(events)], "amplitude.api_host": amp_url,
                              "run.workdir": str(tmp / "work"), "run.concurrency": 1},
                       env={"AMPLITUDE_API_KEY": API_KEY})


def test_a_file_rewritten_in_another_order_with_its_size_stops_the_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its size is all ``inputs_changed`` compares, and its record count all the check
    compared: batches cut again would hold other events under the done ones' names."""
    from mp2amp.errors import TerminalError

    events = tmp_path / "events.jsonl"
    lines = [orjson.dumps(_event(n)) + b"\n" for n in range(6)]
    events.write_bytes(b"".join(lines))
    up = {**FAST, "max_events": 2, "concurrency": 1}
    with amplitude(tmp_path / "amp") as amp_url:
        cfg = _file_config(tmp_path, events, amp_url)
        run_until_crash_with(cfg, monkeypatch, 2, up)
        shutil.rmtree(tmp_path / "work" / "staged")
        events.write_bytes(b"".join(reversed(lines)))
        with pytest.raises(TerminalError, match="in another order") as stopped:
            migrate(cfg, resume=True, upload_overrides=up)
        assert "Put the source back as it was" in str(stopped.value)
        events.write_bytes(b"".join(lines))  # put back: the resume goes on
        result = migrate(cfg, resume=True, upload_overrides=up)
        assert result.exit_code == 0
        assert len(_stored_source_ids(amp_url)) == 6


def test_a_day_changed_in_mixpanel_with_the_same_count_stops_the_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.errors import TerminalError

    data = tmp_path / "mp"
    records = [_event(n) for n in range(6)]
    _write_day(data, "2024-01-01", records)
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url)
        up = {**FAST, "max_events": 2, "concurrency": 1}
        run_until_crash_with(cfg, monkeypatch, 2, up)
        shutil.rmtree(tmp_path / "work" / "staged")
        changed = [_event(n) for n in range(5)] + [_event(99)]  # one deleted, one late
        _write_day(data, "2024-01-01", changed)
        for _ in range(2):  # checked again on the next resume, never loaded unchecked
            with pytest.raises(TerminalError, match="other records"):
                migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)


def test_a_day_an_earlier_mp2amp_staged_is_staged_again_as_it_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work folders of an earlier mp2amp (same-time events in arrival order, no digest):
    fetched again in the same order, the day gives the same batches; only the count is
    compared, as before."""
    import sqlite3

    from mp2amp.pipeline import windows as windows_module

    staged = windows_module.staged_in_thread

    async def as_before(*args: Any, **kwargs: Any) -> int:
        return await staged(*args, **{**kwargs, "by_content": False})

    data = tmp_path / "mp"
    # 12: in content order, one of the done batch's places holds an event sent by no batch
    _write_day(data, "2024-01-01", [_event(n) for n in range(12)])
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    with emu.running() as mp_url, amplitude(tmp_path / "amp") as amp_url:
        cfg = _config(tmp_path, mp_url, amp_url)
        up = {**FAST, "max_events": 2, "concurrency": 1}
        monkeypatch.setattr(windows_module, "staged_in_thread", as_before)
        run_until_crash_with(cfg, monkeypatch, 2, up)  # undoes both patches
        with contextlib.closing(sqlite3.connect(tmp_path / "work" / "ledger.sqlite")) as db, db:
            for window_id, spec in db.execute("SELECT window_id, spec FROM windows").fetchall():
                old = {k: v for k, v in orjson.loads(spec).items()
                       if k not in ("digest", "ties")}
                db.execute("UPDATE windows SET spec = ? WHERE window_id = ?",
                           (orjson.dumps(old).decode(), window_id))
        shutil.rmtree(tmp_path / "work" / "staged")
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        assert result.exit_code == 0
        assert len(_stored_source_ids(amp_url)) == 12


def test_a_link_loop_on_an_inputs_way_is_named(tmp_path: Path) -> None:
    from mp2amp.errors import InputError
    from mp2amp.pipeline.windows import _in_a_work_folder

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(InputError, match="symbolic link loop") as stopped:
        _in_a_work_folder(tmp_path / "a" / "day.jsonl", tmp_path / "work", {})
    assert str(tmp_path / "a" / "day.jsonl") in str(stopped.value)
