"""Second-pass review (session 16) of commit 39a0fac: transform's refusal of an --out an
input folder or glob holds, the config report that joins the tracking plan's problems,
JSON array elements numbered by their start line, and export downloads that hit a full disk.

A test marked ``xfail(strict=True)`` shows a defect; its reason says what is wrong."""

from __future__ import annotations

import builtins
import errno
import gzip
import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.errors import ConfigError
from shared_kit import amplitude_emulator

KEY = "second-review-key"
SECRET = "emulator-secret"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}
FAST_MP = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}
T0 = 1_704_103_200  # 2024-01-01T10:00:00Z


def flat(text: str) -> str:
    return " ".join(text.split())


def _event(n: int, pad: str = "") -> dict[str, Any]:
    return {"event": "Tap", "properties": {"time": T0 + n, "distinct_id": f"user-{n % 5}",
                                           "$insert_id": f"iid-{n:05d}", "pad": pad}}


# --- JSON arrays: numbers that are lines, not records ------------------------------------


def test_a_damaged_gzip_array_counts_the_records_read_not_the_last_line(tmp_path: Path) -> None:
    """files._iter_stream says "damaged after record {count}" with count = the last record's
    ``line``: for a pretty-printed array that is now a line number (the element's first
    line), so a file of which 30 records were read is said to be damaged after "record 2xx"."""
    from mp2amp.extract.files import iter_records

    elements = [_event(n, "x" * 40) for n in range(400)]
    packed = gzip.compress(json.dumps(elements, indent=2).encode())
    path = tmp_path / "day.json.gz"
    path.write_bytes(packed[: len(packed) // 2])
    read = list(iter_records([str(path)]))
    good = [r for r in read if r.record is not None]
    last = read[-1]
    assert last.rejection is not None and last.rejection.reason == "truncated_file"
    assert len(good) < good[-1].line  # the premise: lines run ahead of records
    message = last.rejection.message
    assert f"after record {good[-1].line}" not in message, message
    assert f"after record {len(good)}" in message or f"line {good[-1].line}" in message, message


# --- the config report: one round of fixing ----------------------------------------------


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_plan_that_is_not_utf8_is_a_config_problem_not_a_traceback(tmp_path: Path) -> None:
    _write(tmp_path, "plan.yaml", b"properties:\n  caf\xe9:\n    type: string\n")
    joint = _write(tmp_path, "joint.toml",
                   '[transform]\nplan = "plan.yaml"\nsession_gap_minutes = "soon"\n')
    alone = _write(tmp_path, "alone.toml", '[transform]\nplan = "plan.yaml"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(joint, env={})
    assert any("plan.yaml" in p and "UTF-8" in p for p in raised.value.problems), \
        raised.value.problems
    with pytest.raises(ConfigError) as raised:
        load_config(alone, env={}).transform_settings()
    assert any("plan.yaml" in p and "UTF-8" in p for p in raised.value.problems)


def test_a_hashed_property_the_plan_types_joins_a_failing_config_report(tmp_path: Path) -> None:
    _write(tmp_path, "plan.yaml", "properties:\n  email:\n    type: number\n")
    body = ('[transform]\nplan = "plan.yaml"\n[privacy]\nhash_salt = "s"\n'
            'hash_properties = ["email"]\n')
    ok = _write(tmp_path, "ok.toml", body)
    bad = _write(tmp_path, "bad.toml", body + "[run]\nconcurrency = 999\n")
    with pytest.raises(ConfigError) as alone:
        load_config(ok, env={}).transform_settings()
    hashed = [p for p in alone.value.problems if "is hashed (hex text" in p]
    assert hashed  # the premise: on its own, the config's only problem
    with pytest.raises(ConfigError) as joint:
        load_config(bad, env={})
    assert any("run.concurrency" in p for p in joint.value.problems)
    assert all(p in joint.value.problems for p in hashed), joint.value.problems


# --- export: a full disk while a day downloads on a resume -------------------------------


class _FullDisk:
    """A ``.jsonl.part`` whose writes fail as on a full disk."""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def test_a_full_disk_while_a_resume_downloads_a_day_again_says_resume_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume whose staged and downloaded days were deleted (to free space) downloads the
    day again; the disk fills during it. The stop says to free space and --resume, leaves no
    half window, and the next resume delivers every event exactly once."""
    from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
    from mp2amp.errors import TerminalError
    from mp2amp.extract import export as export_module
    from mp2amp.ledger import Ledger
    from mp2amp.pipeline.migrate import migrate

    data = tmp_path / "mp"
    (data / "events").mkdir(parents=True)
    records = [_event(n) for n in range(6)]
    (data / "events" / "2024-01-01.jsonl").write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in records))
    emu = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret=SECRET,
                                          export_per_hour=None, export_per_second=None))
    work = tmp_path / "work"
    up = {**FAST, "max_events": 2, "concurrency": 1}
    done = Ledger.batch_done
    calls: list[int] = []

    def crash(self: Ledger, batch_id: str, **counts: int) -> str:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a kill right after Amplitude's 200
        return done(self, batch_id, **counts)

    def opened(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by caller
        return _FullDisk(f) if str(path).endswith(".jsonl.part") else f

    with emu.running() as mp_url, amplitude_emulator(tmp_path / "amp", KEY) as amp_url:
        cfg = load_config(None, {
            "source.from_date": "2024-01-01", "source.to_date": "2024-01-01",
            "mixpanel.api_host": mp_url, "amplitude.api_host": amp_url,
            "run.workdir": str(work), "run.concurrency": 1},
            env={"AMPLITUDE_API_KEY": KEY, "MIXPANEL_SECRET": SECRET})
        monkeypatch.setattr(Ledger, "batch_done", crash)
        with pytest.raises(KeyboardInterrupt):
            migrate(cfg, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        for file in [*(work / "staged").rglob("*"), *(work / "export").rglob("*")]:
            if file.is_file():
                file.unlink()
        monkeypatch.setattr(export_module, "open", opened, raising=False)
        with pytest.raises(TerminalError) as stopped:
            migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        monkeypatch.undo()
        message = str(stopped.value)
        assert message.startswith("the disk is full") and "--resume" in message, message
        assert not list((work / "export").glob("*.part"))
        result = migrate(cfg, resume=True, upload_overrides=up, mixpanel_overrides=FAST_MP)
        assert result.exit_code == 0
        with urllib.request.urlopen(amp_url + "/_emulator/insert_ids") as answer:
            stored = [iid for _, iid, _ in orjson.loads(answer.read())]
    assert len(stored) == len(set(stored)) == len(records)
