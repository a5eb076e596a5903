"""Session 14 adversarial review (a) of today's fixes in load, the S3-import sink, the
Export API client and the config loader: regressions and holes the quick fixes left.

A test marked ``xfail(strict=True)`` shows a defect (its reason: what is wrong, what should
happen, where). The others pin edge cases of today's changes that hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from mp2amp.config import load_config
from mp2amp.errors import ConfigError, Mp2AmpError, RateLimited, TerminalError
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export import Days, fetch_windows, meta_path, window_path
from mp2amp.extract.ratelimit import RetryBudget
from mp2amp.ledger.store import WindowRow
from mp2amp.load.responses import classify
from mp2amp.load.s3sink import CONVERTER_NAME, S3ImportSink
from mp2amp.pipeline import migrate as migrate_module
from mp2amp.pipeline.import_folder import refuse_another_runs_files
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.windows import _discard_staged_downloads
from shared_kit import serve_routes

DAY = date(2024, 1, 1)


def _events_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.jsonl"
    rows = [{"event": "view", "properties": {"time": 1704067200 + i, "distinct_id": f"user-{i}",
                                             "$insert_id": f"ins-{i:06d}"}} for i in range(5)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


# --- defects --------------------------------------------------------------------------------


def test_resume_finds_or_names_the_work_folder_an_earlier_version_made_in_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _events_file(tmp_path / "data")
    cfg_dir = tmp_path / "deploy"
    cfg_dir.mkdir()
    cfg_file = cfg_dir / "mp2amp.toml"
    cfg_file.write_text(f'[source]\nfiles = ["{data}"]\n[mixpanel]\ntimezone = "UTC"\n'
                        f'[amplitude]\noutput_dir = "{tmp_path / "out"}"\n')
    cwd = tmp_path / "cron-home"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    # yesterday's mp2amp: the default workdir was ".mp2amp" in the current folder
    old = load_config(cfg_file, {"run.workdir": Path(".mp2amp")}, env={})
    assert old.run.workdir == cwd / ".mp2amp"
    assert migrate(old).exit_code == EXIT_OK
    # (a crash or a later window would leave it unfinished; its ledger is what counts)
    assert (cwd / ".mp2amp" / "ledger.sqlite").is_file()
    today = load_config(cfg_file, env={})
    try:
        result = migrate(today, resume=True)
    except TerminalError as exc:
        message = str(exc)
        assert str(cwd / ".mp2amp") in message or "--workdir .mp2amp" in message, message
    else:
        assert result.workdir == cwd / ".mp2amp"


def test_default_workdir_stays_put_when_a_symlinked_config_is_updated(tmp_path: Path) -> None:
    mount = tmp_path / "config"
    text = '[mixpanel]\ntimezone = "UTC"\n'
    for version in ("..2026_11_30_01", "..2026_11_30_02"):
        (mount / version).mkdir(parents=True)
        (mount / version / "mp2amp.toml").write_text(text)
    link = mount / "mp2amp.toml"
    link.symlink_to(Path("..2026_11_30_01") / "mp2amp.toml")
    before = load_config(link, env={}).run.workdir
    link.unlink()
    link.symlink_to(Path("..2026_11_30_02") / "mp2amp.toml")  # the config was updated
    after = load_config(link, env={}).run.workdir
    assert before == after, f"the work folder moved from {before} to {after}"


class _Dropper:
    """An export server whose every answer breaks off mid-record (connection closed)."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"event":"a","properties":{"time":1704067200,"distinct_id":"u"}}\n'
                         b'{"event":"b","prop')
        assert request.transport is not None
        request.transport.close()
        return resp

    def running(self) -> contextlib.AbstractAsyncContextManager[str]:
        return serve_routes({("GET", "/api/2.0/export"): self.handle,
                             ("GET", "/api/2.0/export/"): self.handle})


def test_a_spent_export_day_makes_no_promise_to_fetch_it_again(tmp_path: Path) -> None:
    srv = _Dropper()

    async def main() -> None:
        async with srv.running() as base:
            settings = MixpanelSettings(project_id=1, api_host=base, service_account="u:p",
                                        per_hour=1000, per_second=1000, max_attempts=2,
                                        backoff_base=0.01, backoff_cap=0.02)
            async for _ in fetch_windows(settings, [DAY], tmp_path / "w"):
                pass

    with pytest.raises(Mp2AmpError) as info:
        asyncio.run(asyncio.wait_for(main(), 30))
    message = str(info.value)
    assert srv.requests == 2 and "--resume" in message, message
    assert "again" not in message.split("giving up", 1)[1], message


def test_a_429_with_retry_after_waits_what_it_asks_not_an_escalating_backoff() -> None:
    budget = RetryBudget("export of 2024-01-01", 8, 50, 2.0, 300.0)  # MixpanelSettings' defaults
    waits = [budget.delay(RateLimited("Mixpanel throttled the request (429); waiting and "
                                      "retrying", retry_after=2.0)) for _ in range(10)]
    assert max(waits) < 10, [round(w, 1) for w in waits]


# --- edge cases of today's fixes that hold ---------------------------------------------------


def test_every_2xx_shape_of_the_emulator_is_accepted_and_foreign_json_is_not(
        tmp_path: Path) -> None:
    """Amplitude's answer (the emulator's fresh and all-duplicate 200s, a body without
    ``code`` but with ``events_ingested``) is accepted; a 2xx body of another service is
    retried; a 200 whose body code is 429 naming nobody is a project-wide throttle."""
    from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator

    events = [{"event_type": "v", "device_id": "device-1", "time": 1_704_067_200_000,
               "insert_id": f"i-{i}"} for i in range(3)]
    body = orjson.dumps({"api_key": "k", "events": events})
    answers = []
    emulator = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key="k"))
    with emulator.running() as url:
        for _ in range(2):  # the second is all duplicates: events_ingested 0
            req = urllib.request.Request(url + "/batch", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                answers.append((resp.status, resp.read()))
    ids = [("device-1", None)] * 3
    for status, raw in answers:
        assert classify(status, raw, ids=ids).kind == "accepted", raw
    assert classify(200, b'{"events_ingested": 3}', ids=ids).kind == "accepted"
    for foreign in (b'{"status": "ok"}', b'{"code": "200"}', b'{"code": 302}', b"[]"):
        assert classify(200, foreign, ids=ids).kind == "retry", foreign
    v = classify(200, b'{"code": 429, "error": "Too many requests"}', ids=ids)
    assert v.kind == "retry" and v.throttle


def test_silenced_devices_as_a_map_dead_letter_that_device_only_not_a_user_named_alike() -> None:
    """``silenced_devices`` as a map (like ``throttled_devices``) names devices; an event whose
    user_id happens to equal the silenced device's id, on another device, is resent."""
    ids = [("dev-x", "u1"), ("dev-y", "dev-x"), (None, "dev-x"), ("dev-x", None), ("dev-z", "u2")]
    body = orjson.dumps({"code": 400, "error": "Events silenced for device_id",
                         "silenced_devices": {"dev-x": 1}, "silenced_events": [4]})
    v = classify(400, body, ids=ids)
    assert v.kind == "sort"
    assert sorted(v.dead) == [0, 3, 4]
    assert all(reason == "silenced_device" for reason, _ in v.dead.values())
    assert not v.throttled and not v.parked  # 1 and 2 are sent again at once


class _FixedNow(datetime):
    at = datetime(2024, 1, 1, 12, 30, tzinfo=UTC)

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return cls.at.astimezone(tz) if tz is not None else cls.at.replace(tzinfo=None)


@pytest.mark.parametrize(("legacy", "changes", "to_date", "refused"), [
    # a newer project: UTC's today (2024-01-01), whatever the project's timezone
    (False, [], "2024-01-01", False),
    (False, [], "2024-01-02", True),
    # a legacy project: its current zone, the last change's (+14 h: already 2024-01-02)
    (True, [{"since": "2020-06-01", "timezone": "Pacific/Kiritimati"}], "2024-01-02", False),
    (True, [{"since": "2020-06-01", "timezone": "Pacific/Kiritimati"}], "2024-01-03", True),
    # its own zone without changes (-10 h: still 2024-01-01)
    (True, [], "2024-01-02", True),
])
def test_the_to_date_check_reads_today_as_the_export_does(
        monkeypatch: pytest.MonkeyPatch, legacy: bool, changes: list[dict[str, str]],
        to_date: str, refused: bool) -> None:
    monkeypatch.setattr(migrate_module, "datetime", _FixedNow)
    cfg = load_config(None, {"source.from_date": "2023-12-01", "source.to_date": to_date,
                             "mixpanel.timezone": "Pacific/Honolulu",
                             "mixpanel.legacy_time": legacy,
                             "mixpanel.timezone_changes": changes},
                      env={"MIXPANEL_SECRET": "s"})
    if refused:
        with pytest.raises(ConfigError, match="later than today"):
            migrate_module._check_export_credentials(cfg)
    else:
        migrate_module._check_export_credentials(cfg)


def test_staged_downloads_go_and_a_pending_multi_day_window_keeps_its_own(tmp_path: Path) -> None:
    """export_window_days > 1: each ledger row is one Days window with its own download; the
    resume removes the staged rows' downloads only, never a pending row's."""
    export_dir = tmp_path / "export"
    spans = [Days(date(2024, 1, 1), date(2024, 1, 3)), Days(date(2024, 1, 4), date(2024, 1, 6)),
             Days(date(2024, 1, 7), date(2024, 1, 7))]
    for span in spans:
        path = window_path(export_dir, span)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}\n")
        meta_path(path).write_bytes(b"{}")
    rows = [WindowRow(f"export:{s.first}", i, "export",
                      {"day": s.first.isoformat(), "last": s.last.isoformat()},
                      state, None, 0, {})
            for i, (s, state) in enumerate(zip(spans, ("loaded", "pending", "extracted"),
                                               strict=True))]
    _discard_staged_downloads(export_dir, rows)
    left = [s for s in spans if window_path(export_dir, s).exists()]
    assert left == [spans[1]]
    assert meta_path(window_path(export_dir, spans[1])).exists()
    assert not meta_path(window_path(export_dir, spans[0])).exists()


def test_a_resumed_run_is_refused_an_old_versions_files_and_keeps_its_own(tmp_path: Path) -> None:
    """A run with an id at attempt 2: its own attempt-1 files are not "another migration's",
    but files named by an earlier mp2amp (no run id) and another run's converter are."""
    out = tmp_path / "out"
    out.mkdir()
    run = "0123456789ab"
    (out / f"mp2amp-a1-{run}-00000.json.gz").write_bytes(gzip.compress(b"{}\n"))
    refuse_another_runs_files(str(out), None, run=run, attempt=2)  # its own: fine
    (out / "mp2amp-a1-00000.json.gz").write_bytes(gzip.compress(b"{}\n"))
    with pytest.raises(TerminalError, match="nothing was removed"):
        refuse_another_runs_files(str(out), None, run=run, attempt=2)
    (out / "mp2amp-a1-00000.json.gz").unlink()
    (out / CONVERTER_NAME).write_text(json.dumps(
        {"keyValidatorConfig": {"filterPattern": r"^(.*/)?mp2amp\-a1\-fedcba987654-\d{5}"}}))
    with pytest.raises(TerminalError, match=CONVERTER_NAME):
        refuse_another_runs_files(str(out), None, run=run, attempt=2)
    (out / CONVERTER_NAME).write_text(json.dumps(
        {"keyValidatorConfig": {"filterPattern": rf"^(.*/)?mp2amp\-a1\-{run}-\d{{5}}"}}))
    refuse_another_runs_files(str(out), None, run=run, attempt=2)  # its own converter


def test_short_ids_from_the_fast_path_are_counted_as_user_and_device(tmp_path: Path) -> None:
    """migrate gives check_ids (user_id, device_id) from its items: a short device_id beside
    a long user_id counts as a device_id, not a user_id."""
    sink = S3ImportSink(str(tmp_path / "out"), run_id="t")
    event = {"event_type": "v", "user_id": "long-user", "device_id": "d1", "time": 5,
             "insert_id": "x"}
    sink.check_ids(event["user_id"], event["device_id"])
    sink.write_encoded(orjson.dumps(event), 5)
    (warning,) = [w for w in sink.close().warnings if "shorter than" in w]
    assert "(0 user_id, 1 device_id; e.g. 'd1')" in warning, warning


def test_a_429_with_retry_after_in_the_export_waits_at_least_what_was_asked() -> None:
    """Retry-After is a floor (never a shorter wait), and an hour at most."""
    budget = RetryBudget("export of 2024-01-01", 8, 50, 0.01, 0.02)
    assert budget.delay(RateLimited("429", retry_after=7.0)) == pytest.approx(7.0)
    assert budget.delay(RateLimited("429", retry_after=99_999.0)) == 3600.0
