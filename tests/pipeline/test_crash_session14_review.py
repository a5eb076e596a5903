"""Crash safety and resume at instants the other crash tests do not hit (review, session 14).

Each test stops ``migrate`` at one chosen instant (an exception raised from the ledger write
or sink step that instant is about, as a kill -9 there would leave the ledger), then
resumes to the end and checks: the emulator holds each expected insert_id exactly once,
the dead-letter file holds each rejected record once as whole JSON lines, every window adds
up, and ``mp2amp status --json`` calls the run complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    API_KEY,
    FAST,
    TIMEZONE,
    Clock,
    Crash,
    Project,
    amplitude,
    assert_exactly_once,
    crash_on_call,
    get_json,
    make_config,
)

from mp2amp.config import load_config
from mp2amp.extract.export import QUERY_LOG
from mp2amp.identity import IdentityGraph
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import EXIT_OK, EXIT_PARKED, migrate

SHORT = 5  # the emulator's (Amplitude's) default minimum ID length
QUOTA = 40


def status_json(work: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "mp2amp", "status", "--workdir", str(work), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(orjson.loads(proc.stdout))


def dead_letter_rows(work: Path) -> list[dict[str, Any]]:
    raw = (work / "dead-letters.jsonl").read_bytes()
    assert raw.endswith(b"\n"), "the dead-letter file ends in half a line"
    return [orjson.loads(line) for line in raw.splitlines()]



# --- Amplitude's dead letters: a crash while they are being recorded -------------------------


def test_crash_while_amplitude_dead_letters_are_recorded_then_resume(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Amplitude refused some events (short IDs); the run dies as the second refusal is
    written to the ledger (after the 400, before its batch is done). The resume sends the
    unfinished batch again: each refused record ends in the dead-letter file once, every
    other event reaches Amplitude once, and the numbers add up."""
    refused = {iid for iid, ids in project.ids.items() if any(v and len(v) < SHORT for v in ids)}
    assert len(refused) > 3
    delivered = frozenset(k for k in project.expected if k[1] not in refused)
    upload = {**FAST, "min_id_length": None, "max_events": 100, "concurrency": 4}
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        with monkeypatch.context() as m:
            calls = crash_on_call(
                m,
                Ledger,
                "add_rejects",
                2,
                when=lambda _self, rows: rows and rows[0][3] == "amplitude",
            )
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
            assert len(calls) == 2
        first = migrate(cfg, resume=True, upload_overrides=upload)
        again = migrate(cfg, resume=True, upload_overrides=upload)  # a second resume: nothing new
        assert_exactly_once(url, delivered)
    for result in (first, again):
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert result.totals["dead_lettered"] == len(refused)
        assert result.totals["balanced"]
    assert again.load["batches"] == 0
    rows = dead_letter_rows(work)
    amp = sorted(r["event"]["insert_id"] for r in rows if r["stage"] == "amplitude")
    assert amp == sorted(refused)
    keys = [(r["source"], r["line"]) for r in rows]
    assert len(keys) == len(set(keys))
    st = status_json(work)
    assert st["complete"] and st["totals"]["dead_lettered"] == len(refused)
    assert st["batches"]["in_flight"] == 0


# --- the daily quota: a crash while parked events are being delivered ------------------------


def test_crash_between_a_parked_batchs_200_and_its_ledger_write_then_resume(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run parks events (daily quota, exit 3); the resume a day later dies after
    Amplitude accepted a batch of parked events, as the ledger is told (the third event
    resolved, the others not). The next resumes deliver what is left; each
    event is stored once and the parked count ends at 0."""
    clock = Clock()
    upload = {**FAST, "park_delay": 0.05, "park_retries": 1, "concurrency": 4}
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp", daily_quota=QUOTA, now=clock) as url:
        cfg = make_config(project.events, work, url)
        first = migrate(cfg, upload_overrides=upload)
        assert first.exit_code == EXIT_PARKED and first.totals["parked"] > 3
        clock.offset += 25 * 3600
        with monkeypatch.context() as m:
            calls = crash_on_call(
                m,
                Ledger,
                "resolve_parked",
                3,
                when=lambda _self, _origin, outcome: outcome == "accepted",
            )
            with pytest.raises(Crash):
                migrate(cfg, resume=True, upload_overrides=upload)
            # other lanes went on a moment (the failure stops the run at its next await)
            resolved = len(calls) - 1
            assert resolved >= 2
        st = status_json(work)
        assert not st["complete"]
        # what is parked is what is still to deliver, each resolved event is sent
        assert st["totals"]["parked"] == first.totals["parked"] - resolved
        assert st["totals"]["sent"] == first.totals["sent"] + resolved
        last = None
        for _ in range(6):
            last = migrate(cfg, resume=True, upload_overrides=upload)
            assert last.totals["balanced"], last.as_dict()["problems"]
            if last.exit_code == EXIT_OK:
                break
            clock.offset += 25 * 3600
        assert last is not None and last.exit_code == EXIT_OK
        assert last.totals["parked"] == 0 and last.totals["sent"] == len(project.expected)
        assert_exactly_once(url, project.expected)
    st = status_json(work)
    assert st["complete"] and st["totals"]["parked"] == 0


# --- the identity pass ------------------------------------------------------------------------


def test_crash_in_the_identity_pass_then_resume(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every window staged, the run dies as the identity graph is finished (before its
    report is written and before anything is sent): the resume stages nothing again and
    delivers each event once; status names no batch in flight."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        with monkeypatch.context() as m:
            crash_on_call(m, IdentityGraph, "finish", 1)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        st = status_json(work)
        assert st["states"].get("extracted") == 3 and not st["complete"]
        assert st["batches"]["in_flight"] == 0 and st["totals"]["sent"] == 0
        staged = {p: p.stat().st_mtime_ns for p in (work / "staged").iterdir()}
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert {p: p.stat().st_mtime_ns for p in (work / "staged").iterdir()} == staged
        assert_exactly_once(url, project.expected)
        assert get_json(url + "/_emulator/stats")["duplicates_ignored"] == 0


# --- another number of transform workers on resume -----------------------------------------


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 2)])
def test_resume_with_another_number_of_transform_workers(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: int, after: int
) -> None:
    """``transform_workers`` only tunes speed (it is not in the fingerprint): a run killed
    mid-load with one number of workers and resumed with another cuts the same batches,
    so done ones are skipped and Amplitude sees no event twice beyond the in-flight batch."""
    work = tmp_path / "work"
    upload = {**FAST, "max_events": 100, "concurrency": 2}
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url, **{"run.transform_workers": before})
        with monkeypatch.context() as m:
            crash_on_call(m, Ledger, "batch_done", 6)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=upload)
        done_before = len(
            [b for b in Ledger(work / "ledger.sqlite").batches() if b.state == "done"]
        )
        assert done_before >= 5
        cfg2 = make_config(project.events, work, url, **{"run.transform_workers": after})
        result = migrate(cfg2, resume=True, upload_overrides=upload)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert result.load["batches_skipped"] >= done_before
        assert_exactly_once(url, project.expected)
        dup = get_json(url + "/_emulator/stats")["duplicates_ignored"]
    assert dup <= 100 * 2  # at most the batches in flight at the crash


# --- the Export API source: a crash between a day staged and its download discarded ---------


def _export_config(tmp_path: Path, mp_url: str, url: str, work: Path) -> Path:
    cfg = tmp_path / "mp2amp.toml"
    cfg.write_text(
        f'[mixpanel]\ntimezone = "{TIMEZONE}"\napi_host = "{mp_url}"\n'
        '[source]\nfrom_date = "2024-01-01"\nto_date = "2024-01-04"\n'
        f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{work}"\nconcurrency = 2\n'
    )
    return cfg


def _export_env() -> dict[str, str]:
    return {"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SECRET": "emulator-secret"}


def _mixpanel(project: Project) -> Any:
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

    return MixpanelEmulator(
        MixpanelConfig(
            data_dir=project.root,
            api_secret="emulator-secret",
            export_per_hour=None,
            export_per_second=None,
        )
    )


def test_a_crash_between_a_day_staged_and_its_download_discarded_leaves_no_download(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    with _mixpanel(project).running() as mp_url, amplitude(tmp_path / "amp") as url:
        cfg_path = _export_config(tmp_path, mp_url, url, work)
        for key, value in _export_env().items():
            monkeypatch.setenv(key, value)
        cfg = load_config(cfg_path)
        with monkeypatch.context() as m:
            crash_on_call(m, Ledger, "mark_extracted", 1, after=True)
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        kept = work / "export" / "export" / "2024-01-01.jsonl"
        assert kept.exists(), "the day's download should be there now"
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, project.expected)
    # (the query journal stays: a resume within the hour counts its queries)
    left = sorted(p.name for p in (work / "export").rglob("*")
                  if p.is_file() and p.name != QUERY_LOG)
    assert left == [], f"raw downloads kept after the run: {left}"


def test_kill9_while_an_export_day_is_staged_then_resume(project: Project, tmp_path: Path) -> None:
    """The Export API source, killed (SIGKILL) while the first downloaded days are being
    staged (a staging ``.part`` exists, no day marked extracted yet): the resume stages
    every day once (no leftover ``.part`` or sort runs), each event reaches Amplitude once,
    and status is complete."""
    import time

    work = tmp_path / "work"
    with _mixpanel(project).running() as mp_url, amplitude(tmp_path / "amp") as url:
        cfg = _export_config(tmp_path, mp_url, url, work)
        env = dict(os.environ, **_export_env())
        args = [sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "--quiet", "--json"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        staged = work / "staged"
        deadline = time.monotonic() + 60
        killed = False
        while proc.poll() is None and time.monotonic() < deadline:
            if staged.is_dir() and any(
                p.name.endswith(".part") or p.name.startswith(".stage-") for p in staged.iterdir()
            ):
                proc.kill()
                proc.wait()
                killed = True
                break
            time.sleep(0.001)
        if not killed:
            proc.communicate(timeout=60)
            pytest.skip("the staging was over before the kill could land")
        resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
        result = orjson.loads(resumed.stdout)
        assert result["totals"]["balanced"] and result["resumed"]
        assert_exactly_once(url, project.expected)
    names = [p.name for p in staged.iterdir()]
    assert not [n for n in names if n.endswith(".part") or n.startswith(".stage-")], names
    assert len(names) == 4
    st = status_json(work)
    assert st["complete"] and st["states"] == {"loaded": 4}


# --- nothing to resume ------------------------------------------------------------------------


def test_resume_of_a_run_killed_before_its_fingerprint_was_written(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed right after its windows were registered, before the fingerprint: the
    ledger exists, so ``--resume`` goes on (it is not 'nothing to resume'), and delivers
    each event once."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(project.events, work, url)
        with monkeypatch.context() as m:
            crash_on_call(
                m, Ledger, "set_meta", 1, when=lambda _self, key, _value: key == "fingerprint"
            )
            with pytest.raises(Crash):
                migrate(cfg, upload_overrides=FAST)
        assert (work / "ledger.sqlite").exists()
        result = migrate(cfg, resume=True, upload_overrides=FAST)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, project.expected)


# --- the S3-import sink: a crash after the files, before the ledger knows ---------------------


def _import_events(out: Path) -> list[tuple[str | None, str]]:
    import gzip

    found = []
    for path in sorted(out.glob("*.json.gz")):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            event = orjson.loads(line)
            found.append((event.get("device_id") or event.get("user_id"), event["insert_id"]))
    return found


@pytest.mark.parametrize("instant", ["converter_half_written", "second_window_marked_loaded"])
def test_s3_import_crash_after_the_files_then_resume(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instant: str
) -> None:
    """The files of the first attempt are out; the run dies while the converter config is
    half written, or after the first window (not the others) was marked loaded. The resume
    writes every window again as attempt 2, removes attempt 1's files, and leaves a whole
    converter config whose pattern takes exactly the new files; each event once."""
    import re

    from mp2amp.load.s3sink import CONVERTER_NAME, S3ImportSink

    work, out = tmp_path / "work", tmp_path / "out"
    cfg = load_config(
        None,
        {
            "source.files": [str(project.events)],
            "mixpanel.timezone": TIMEZONE,
            "amplitude.output_dir": str(out),
            "run.workdir": str(work),
        },
        env={},
    )
    with monkeypatch.context() as m:
        if instant == "converter_half_written":

            def half(self: S3ImportSink) -> None:
                (out / CONVERTER_NAME).write_bytes(b'{"converterConfig": {"fi')
                raise Crash("converter")

            m.setattr(S3ImportSink, "_write_converter", half)
        else:
            crash_on_call(m, Ledger, "mark_loaded", 2)
        with pytest.raises(Crash):
            migrate(cfg)
    assert list(out.glob("mp2amp-a1-*.json.gz"))
    st = status_json(work)
    assert not st["complete"]
    result = migrate(cfg, resume=True)
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert result.totals["balanced"] and result.load["attempt"] == 2
    names = sorted(p.name for p in out.iterdir() if p.name != CONVERTER_NAME)
    assert (out / CONVERTER_NAME).exists() and len(names) == len(list(out.iterdir())) - 1
    assert names and all(n.startswith("mp2amp-a2-") for n in names), names
    found = _import_events(out)
    assert len(found) == len(set(found)) and set(found) == project.expected
    doc = orjson.loads((out / CONVERTER_NAME).read_bytes())
    pattern = re.compile(doc["keyValidatorConfig"]["filterPattern"])
    assert [n for n in names if pattern.search(n)] == names
    assert not pattern.search(CONVERTER_NAME) and not pattern.search("mp2amp-a1-00000.json.gz")
    st = status_json(work)
    assert st["complete"] and st["totals"]["sent"] == len(project.expected)
