"""Session 16 review: rejected records, dead letters and bad input, end to end.

Each xfail test is a defect found by the review: it asserts what should happen, and its
reason says what happens instead. A fake Amplitude (a thread on a loopback port) answers
exactly what a test needs: 400 bodies naming devices or indices, then 200s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.config import Config
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.observer import LedgerObserver
from shared_kit import accept_all, amplitude_emulator, cli_workspace, files_config, page_view
from shared_kit import dead_letter_rows as dead_letters
from shared_kit import scripted_amplitude as fake_amplitude

KEY = "session16-dead-letters-key"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.05,
        "park_delay": 0.05}
Answer = Callable[[list[dict[str, Any]]], tuple[int, dict[str, Any]]]


ok = accept_all
record = page_view


def config(files: list[Path], workdir: Path, url: str) -> Config:
    config: Config = files_config(files, workdir, url, api_key=KEY)
    return config


class Crash(Exception):
    """Stands for kill -9 at one instant of the load."""


# --- defects --------------------------------------------------------------------------------


def test_property_name_with_a_lone_surrogate_is_a_dead_letter_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)
    day = tmp_path / "day.jsonl"
    bad = ('{"event":"Page View","properties":{"time":1700000002,"distinct_id":"user-0002",'
           '"$insert_id":"ins-000002","k\\ud800x":1}}')
    day.write_text("\n".join([json.dumps(record(1)), bad, json.dumps(record(3))]) + "\n")
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        cfg = tmp_path / "mp2amp.toml"
        cfg.write_text(f'[source]\nfiles = ["{day}"]\n[amplitude]\napi_host = "{url}"\n'
                       f'[run]\nworkdir = "{tmp_path / "work"}"\n')
        result = CliRunner().invoke(app, ["migrate", "-c", str(cfg), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"migrate crashed: {result.exception!r}")
    assert result.exit_code == EXIT_OK, result.stderr
    totals = orjson.loads(result.stdout)["totals"]
    assert (totals["read"], totals["sent"], totals["rejected"], totals["balanced"]) == (
        3, 2, 1, True)
    (letter,) = dead_letters(tmp_path / "work")
    assert (Path(letter["source"]).name, letter["line"], letter["reason"]) == (
        "day.jsonl", 2, "non_json_value")
    assert letter["field"].startswith("properties.k")
    stored = sorted(e["user_id"] for e in EventStore(tmp_path / "amp").iter_events())
    assert stored == ["user-0001", "user-0003"]


def test_dead_letter_of_an_unfinished_batch_is_dropped_when_the_resume_delivers_it(
        tmp_path: Path) -> None:
    day = tmp_path / "day.jsonl"
    rows = [record(n, **({"$device_id": "device-silenced"} if n == 3 else {}))
            for n in range(1, 6)]
    day.write_text("\n".join([*map(json.dumps, rows), "{oops"]) + "\n")
    silenced = {"on": True}

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if silenced["on"]:  # a spam guard: Amplitude silences a device for a while
            return 400, {"code": 400, "error": "Events silenced for device_id",
                         "silenced_devices": ["device-silenced"]}
        return ok(events)

    original = LedgerObserver.on_dead_letter

    def then_crash(self: LedgerObserver, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        raise Crash  # killed before the rest of the batch was answered

    upload = {**FAST, "concurrency": 1}
    with fake_amplitude(answer) as (url, seen):
        cfg = config([day], tmp_path / "work", url)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(LedgerObserver, "on_dead_letter", then_crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        silenced["on"] = False
        result = migrate(cfg, resume=True, upload_overrides=upload)
    delivered = {e["user_id"] for request in seen[1:] for e in request}
    assert "user-0003" in delivered, "the resume should send the unfinished batch whole"
    assert result.exit_code == EXIT_OK, [w.problem() for w in result.windows]
    assert result.totals["balanced"]
    assert (result.totals["read"], result.totals["sent"], result.totals["rejected"],
            result.totals["dead_lettered"]) == (6, 5, 1, 0)
    assert [r["reason"] for r in dead_letters(tmp_path / "work")] == ["malformed_json"]


def test_a_stopped_run_still_renders_its_dead_letters(tmp_path: Path) -> None:
    from mp2amp.load.sender import RetriesExhausted
    from mp2amp.pipeline.status import status

    day = tmp_path / "day.jsonl"
    day.write_text("\n".join([json.dumps(record(1)), "{oops",
                              *(json.dumps(record(n)) for n in range(3, 7))]) + "\n")
    answers = iter([(400, {"code": 400, "error": "Invalid field values on some events",
                           "events_with_invalid_fields": {"time": [0]}})])

    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        return next(answers, (503, {"code": 503, "error": "Service Unavailable"}))

    with fake_amplitude(answer) as (url, _):
        cfg = config([day], tmp_path / "work", url)
        with pytest.raises(RetriesExhausted):
            migrate(cfg, upload_overrides={**FAST, "concurrency": 1, "max_retries": 1})
    totals = status(tmp_path / "work").totals
    assert (totals["rejected"], totals["dead_lettered"]) == (1, 1)
    letters = dead_letters(tmp_path / "work")
    assert sorted((r["line"], r["stage"]) for r in letters) == [
        (1, "amplitude"), (2, "transform")]


def test_dead_letter_of_a_pretty_printed_array_element_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    elements = [record(1), record(2), {"event": "Page View", "properties": {
        "time": 1700000003, "$insert_id": "ins-000003"}}]  # no distinct_id: missing_id
    path.write_text(json.dumps(elements, indent=2) + "\n")
    starts = [n for n, text in enumerate(path.read_text().splitlines(), 1) if text == "  {"]
    assert len(starts) == 3
    with fake_amplitude(ok) as (url, _):
        result = migrate(config([path], tmp_path / "work", url), upload_overrides=FAST)
    assert result.exit_code == EXIT_OK
    (letter,) = dead_letters(tmp_path / "work")
    assert letter["reason"] == "missing_id"
    assert letter["line"] == starts[2], (
        f"line {letter['line']} of the file is {path.read_text().splitlines()[letter['line'] - 1]!r}")
    assert f"line {starts[2]}" in letter["message"]


def test_non_json_value_in_a_list_property_names_the_mixpanel_field(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    path.write_text(json.dumps(record(1)) + "\n"
                    '{"event":"E","properties":{"time":1700000002,"distinct_id":"user-0002",'
                    '"$insert_id":"ins-000002","arr":[1,NaN]}}\n')
    with fake_amplitude(ok) as (url, _):
        result = migrate(config([path], tmp_path / "work", url), upload_overrides=FAST)
    assert result.exit_code == EXIT_OK
    (letter,) = dead_letters(tmp_path / "work")
    assert (letter["line"], letter["reason"]) == (2, "non_json_value")
    assert letter["field"] == "properties.arr[1]"

# --- the fixes, beyond the pinned tests ------------------------------------------------------


def test_every_text_the_ledger_stores_is_made_storable(tmp_path: Path) -> None:
    """A lone surrogate anywhere (meta, a window id, a reject) is stored escaped, not a
    UnicodeEncodeError; a text already escaped, or valid non-ASCII, stays as it is."""
    from mp2amp.ledger import Ledger
    from mp2amp.ledger.sqlite_io import storable

    assert storable("k\ud800x") == "k\\ud800x"
    assert storable(storable("k\ud800x")) == "k\\ud800x"
    assert storable("café ☕") == "café ☕"
    led = Ledger(tmp_path / "l.sqlite")
    led.set_meta("note", "a\udcffb")
    led.add_windows([("w\udcff", "file", {})])
    led.add_rejects([("f\ud800", 1, "w", "transform", "non_json_value", "bad k\ud800",
                      "properties.k\ud800", None)])
    assert led.get_meta("note") == "a\\udcffb"
    assert [w.window_id for w in led.windows()] == ["w\\udcff"]
    (row,) = led.iter_rejects()
    assert (row[0], row[5], row[6]) == ("f\\ud800", "bad k\\ud800", "properties.k\\ud800")


def test_a_resume_keeps_the_dead_letters_of_batches_not_done_until_resent(
        tmp_path: Path) -> None:
    """Starting the window again keeps every dead letter: one of a batch sent again stays
    listed until its event, sent again, is accepted or parked (or refused again: the same
    row), so a resume stopped before resending still lists it."""
    from mp2amp.ledger import Ledger
    from mp2amp.pipeline.progress import Counters

    led = Ledger(tmp_path / "l.sqlite")
    led.add_windows([("w", "file", {}), ("v", "file", {})])
    for batch, window in (("w0/0/0", "w"), ("w0/1/0", "w"), ("w1/0/0", "v")):
        led.batch_sent(batch, window, 0, 2)
    led.batch_done("w0/0/0", accepted=1, dead_lettered=1, parked=0)
    observer = LedgerObserver(led, Counters(), {"w0": "w", "w1": "v"}, lambda _: None)
    for line, batch in ((1, "w0/0/0"), (2, "w0/1/0"), (3, "parked/0/0"), (4, None)):
        observer.on_dead_letter({"n": line}, ("w", line), "invalid_field", "bad",
                                batch_id=batch)
    observer.on_dead_letter({"n": 5}, ("v", 5), "invalid_field", "bad", batch_id="w1/0/0")
    led.forget_window_outcomes("w")
    assert [(r[0], r[1]) for r in led.iter_rejects()] == [
        ("v", 5), ("w", 1), ("w", 2), ("w", 3), ("w", 4)]


def test_a_ledger_from_before_batched_dead_letters_opens_and_resumes(tmp_path: Path) -> None:
    """A run of the former mp2amp (its rejects table has no batch column) stopped before
    its batch was done: this mp2amp adds the column and finishes the run."""
    import sqlite3

    day = tmp_path / "day.jsonl"
    day.write_text("\n".join([json.dumps(record(1)), "{oops", json.dumps(record(3))]) + "\n")

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with fake_amplitude(ok) as (url, _):
        cfg = config([day], tmp_path / "work", url)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(LedgerObserver, "on_batch_accepted", crash)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        db = sqlite3.connect(tmp_path / "work" / "ledger.sqlite")
        db.execute("ALTER TABLE rejects DROP COLUMN batch_id")  # as the former mp2amp made it
        db.close()
        result = migrate(cfg, resume=True, upload_overrides=FAST)
    assert result.exit_code == EXIT_OK, [w.problem() for w in result.windows]
    assert (result.totals["read"], result.totals["sent"], result.totals["rejected"]) == (3, 2, 1)
    db = sqlite3.connect(tmp_path / "work" / "ledger.sqlite")
    assert "batch_id" in {r[1] for r in db.execute("PRAGMA table_info(rejects)")}
    db.close()
    assert [r["reason"] for r in dead_letters(tmp_path / "work")] == ["malformed_json"]


def test_observers_without_a_batch_parameter_are_called_as_before() -> None:
    """The uploader names the batch only to observers whose on_dead_letter takes it."""
    from mp2amp.load.observer import NullObserver, takes_batch_id

    class Former:
        def on_dead_letter(self, event: Any, origin: Any, reason: str, message: str) -> None:
            pass

    class Passing:
        def on_dead_letter(self, *args: Any, **kwargs: Any) -> None:
            pass

    assert not takes_batch_id(Former())  # type: ignore[arg-type]
    assert takes_batch_id(Passing())  # type: ignore[arg-type]
    assert takes_batch_id(NullObserver())


def test_a_run_stopped_by_ctrl_c_renders_its_dead_letters(tmp_path: Path) -> None:
    day = tmp_path / "day.jsonl"
    day.write_text("\n".join([json.dumps(record(1)), "{oops"]) + "\n")

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    with fake_amplitude(ok) as (url, _), pytest.MonkeyPatch.context() as m:
        m.setattr(LedgerObserver, "flushed", interrupt)
        with pytest.raises(KeyboardInterrupt):
            migrate(config([day], tmp_path / "work", url), upload_overrides=FAST)
    assert [(r["line"], r["reason"]) for r in dead_letters(tmp_path / "work")] == [
        (2, "malformed_json")]


def test_dead_letters_not_rendered_after_a_stop_leave_the_last_file_and_no_part(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from mp2amp.pipeline.dead_letters import write_dead_letters_after_stop

    class Broken:
        def iter_rejects(self) -> Iterator[tuple[Any, ...]]:
            yield ("f", 1, "w", "transform", "malformed_json", "not JSON", None, None)
            raise OSError(28, "No space left on device")

    (tmp_path / "dead-letters.jsonl").write_text("earlier\n")
    write_dead_letters_after_stop(Broken(), tmp_path)  # type: ignore[arg-type]
    assert (tmp_path / "dead-letters.jsonl").read_text() == "earlier\n"
    assert not (tmp_path / "dead-letters.jsonl.part").exists()
    assert "--resume" in caplog.text and "No space left" in caplog.text


# --- passing guard ---------------------------------------------------------------------------


def test_huge_deep_and_broken_lines_are_named_and_the_rest_delivered(tmp_path: Path) -> None:
    """A 5 MB property, a 100k-element list, 500 levels, a line 1500 levels deep, a 10 MB
    line cut short, a NUL-only line and invalid UTF-8 in one file: every record is counted,
    each rejection names its line, and every other event reaches Amplitude."""
    def nest(n: int) -> bytes:
        return b"[" * n + b"1" + b"]" * n

    def raw(n: int, extra: bytes = b"") -> bytes:
        return (b'{"event":"E","properties":{"time":%d,"distinct_id":"user-%04d",'
                b'"$insert_id":"ins-%06d"%s}}' % (1700000000 + n, n, n, extra))

    cut = orjson.dumps(record(6, blob="z" * 10_000_000))[:-3]
    path = tmp_path / "day.jsonl"
    path.write_bytes(b"\n".join([
        orjson.dumps(record(1, big="x" * 5_000_000)),
        orjson.dumps(record(2, many=list(range(100_000)))),
        raw(3, b',"deep":' + nest(500)),
        raw(4, b',"deep":' + nest(1500)),                      # too deep to read
        raw(5, b',"s":"a\xffb"'),                              # invalid UTF-8
        cut,                                                   # cut short
        b"\x00\x00\x00",                                       # NUL bytes
        orjson.dumps(record(8)),
    ]) + b"\n")
    with fake_amplitude(ok) as (url, seen):
        result = migrate(config([path], tmp_path / "work", url), upload_overrides=FAST)
    assert result.exit_code == EXIT_OK, [w.problem() for w in result.windows]
    assert (result.totals["read"], result.totals["sent"], result.totals["rejected"]) == (8, 4, 4)
    got = sorted((r["line"], r["reason"]) for r in dead_letters(tmp_path / "work"))
    assert got == [(4, "malformed_json"), (5, "invalid_utf8"), (6, "malformed_json"),
                   (7, "malformed_json")]
    sent = {e["user_id"]: e for request in seen for e in request}
    assert sorted(sent) == ["user-0001", "user-0002", "user-0003", "user-0008"]
    assert sent["user-0001"]["event_properties"]["big"] == "x" * 1024
    assert len(sent["user-0002"]["event_properties"]["many"]) == 100_000
