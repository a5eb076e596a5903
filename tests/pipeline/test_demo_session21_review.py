"""Review of `mp2amp demo` after session 21's revenue proof (d7b968b, d43ba6e): the revenue
line and the ``--json`` ``revenue`` object, an empty revenue, the exit code when only the
revenue is wrong (the kept Amplitude emulator's stored events tampered with, as
``tests/cli/test_emulate_demo_review.py`` does), and a demo folder kept by an mp2amp from
before the demo configured ``[transform.revenue]``.

The demos here are small (``--events 1000``); the CLI runs as a user runs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import mp2amp.pipeline.demo as demo

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
for _var in ("AMPLITUDE_API_KEY", "MIXPANEL_SECRET", "MIXPANEL_SERVICE_ACCOUNT",
             "MP2AMP_DEMO_WORKDIR"):
    ENV.pop(_var, None)

EVENTS = "1000"
OPTIONS = ("--events", EVENTS, "--fail-rate", "0", "--drop-rate", "0")


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "demo", *OPTIONS, *args],
                          capture_output=True, text=True, env=ENV, timeout=120)


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A passing kept demo (seed 7: three orders with revenue)."""
    work = tmp_path_factory.mktemp("kept") / "demo"
    res = _demo("--workdir", str(work), "--json")
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["revenue"]["ok"] is True and doc["revenue"]["expected_events"] > 0
    return work


def _copy(kept: Path, tmp_path: Path) -> Path:
    work = tmp_path / "demo"
    shutil.copytree(kept, work)
    return work


def _tamper_revenue(work: Path, change: Any) -> int:
    """Change the ``revenue`` of the first stored event that has one in the Amplitude
    emulator's files; returns how many were changed (1)."""
    changed = 0
    for path in sorted((work / "amplitude-data" / "events").glob("*.jsonl")):
        out = []
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            for event in record.get("body", {}).get("events", []):
                if not changed and isinstance(event.get("revenue"), (int, float)):
                    event["revenue"] = change(event["revenue"])
                    changed += 1
            out.append(orjson.dumps(record))
        path.write_bytes(b"\n".join(out) + b"\n")
    return changed


# --- guards -------------------------------------------------------------------------------

def test_only_a_wrong_revenue_exits_1_with_the_revenue_mismatch(
        kept: Path, tmp_path: Path) -> None:
    work = _copy(kept, tmp_path)
    assert _tamper_revenue(work, lambda v: v + 1.0) == 1
    res = _demo("--workdir", str(work), "--quiet")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    # the counts still match: only the revenue (per event and in total) is wrong
    assert "daily mismatch" not in res.stderr
    assert re.search(r"^revenue: expected .*: MISMATCH$", res.stderr, re.M), res.stderr
    assert re.search(r"^  revenue on 2024-03-\d\d: expected [\d,]+\.\d\d, Amplitude's export "
                     r"has [\d,]+\.\d\d$", res.stderr, re.M), res.stderr
    assert "demo FAILED" in res.stderr

    doc = orjson.loads(_demo("--workdir", str(work), "--json").stdout)
    assert doc["ok"] is False and doc["daily_mismatches"] == []
    assert all(r["ok"] for r in doc["event_types"])
    revenue = doc["revenue"]
    assert revenue["ok"] is False
    assert round(revenue["export"] - revenue["expected"], 2) == 1.0
    assert {k: v for k, v in doc["events"]["problems"].items() if v} == {"wrong_revenue": 1}


def test_an_empty_revenue_matches_as_zero() -> None:
    # seed 21 at 1,000 events has no order: nothing expected, nothing exported
    res = subprocess.run([sys.executable, "-m", "mp2amp", "demo", *OPTIONS, "--seed", "21",
                          "--quiet"], capture_output=True, text=True, env=ENV, timeout=120)
    assert res.returncode == 0, res.stderr
    assert re.search(r"^revenue: expected 0\.00 over 0 event\(s\) \(Mixpanel's records, by "
                     r"\[transform\.revenue\]\), Amplitude export 0\.00 over 0, segmentation "
                     r"not compared \(revenue_amount refused, 400: .*\): match$",
                     res.stdout, re.M), res.stdout


# --- defects (fixed) --------------------------------------------------------------------

def test_a_huge_revenue_in_amplitude_is_a_mismatch_not_a_crash(
        kept: Path, tmp_path: Path) -> None:
    work = _copy(kept, tmp_path)
    assert _tamper_revenue(work, lambda _: 1e307) == 1
    res = _demo("--workdir", str(work), "--json")
    assert "Traceback" not in res.stderr, res.stderr[-600:]
    assert res.returncode == 1
    doc = orjson.loads(res.stdout)  # the result, as --json promises
    assert doc["ok"] is False and doc["revenue"]["ok"] is False
    assert doc["events"]["problems"].get("wrong_revenue") == 1


def test_a_demo_folder_kept_before_the_revenue_config_says_how_to_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the demo as it was before d7b968b: no [transform.revenue] in its migration's config
    real = demo.load_config

    def before_revenue(path: Any = None, overrides: Any = None, **kw: Any) -> Any:
        return real(path, {k: v for k, v in (overrides or {}).items()
                           if k != "transform.revenue"}, **kw)

    work = tmp_path / "old-demo"
    with monkeypatch.context() as patch:
        patch.setattr(demo, "load_config", before_revenue)
        patch.setattr(demo, "DEMO_REVENUE", {})
        old = demo.run_demo(int(EVENTS), work, fail_rate=0.0, drop_rate=0.0)
    assert old.exit_code == 0 and (work / "work" / "ledger.sqlite").is_file()

    res = _demo("--workdir", str(work), "--quiet")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    err = " ".join(res.stderr.split())  # as the console wrapped it
    assert (f"the demo folder {work} was migrated by an earlier mp2amp with another "
            "configuration: give --workdir a new folder, or delete this one") in err, err
    # README: a stopped demo's error says how to go on with `mp2amp demo --workdir DIR`
    # (as options that differ: "give --workdir a new folder, or delete this one")
    assert "resume with the original settings" not in err, err
    assert "--workdir" in err or "delete" in err, err
    assert '"events":' not in err, err  # not the run's raw fingerprint
