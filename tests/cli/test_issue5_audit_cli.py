"""Issue 5 audit, through the CLI: ``mp2amp status`` mid-run and on a broken window,
the per-window check of ``mp2amp migrate`` for every term of the invariant, and
``mp2amp demo``'s exit code and output (``--json`` included)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import mp2amp.pipeline.demo as demo
import mp2amp.pipeline.migrate as pipeline_migrate
import mp2amp.pipeline.readback as readback
from mp2amp.cli import app
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.pipeline.observer import LedgerObserver

KEY = "cli-audit-key"
TZ = "America/Los_Angeles"


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-audit-project")
    subprocess.run([sys.executable, "-m", "mp2amp", "generate", "--out", str(root / "p"),
                    "--users", "40", "--days", "3", "--seed", "9", "--timezone", TZ],
                   check=True, capture_output=True, timeout=120)
    return root / "p" / "events"


@pytest.fixture
def amp_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("AMPLITUDE_API_KEY", "MIXPANEL_SERVICE_ACCOUNT", "MIXPANEL_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AMPLITUDE_API_KEY", KEY)
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY))
    with emu.running() as url:
        yield url


def config(tmp_path: Path, files: Path, url: str, concurrency: int = 1) -> Path:
    path = tmp_path / "mp2amp.toml"
    path.write_text(f'[mixpanel]\ntimezone = "{TZ}"\n[source]\nfiles = ["{files}"]\n'
                    f'[amplitude]\napi_host = "{url}"\n[run]\nworkdir = "{tmp_path / "work"}"\n'
                    f"concurrency = {concurrency}\n")
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


class Crash(Exception):
    """Stands for a kill right after Amplitude's 200, before the ledger recorded it."""


def test_status_mid_run_shows_states_batches_in_flight_and_window_rows(
        tmp_path: Path, day_files: Path, amp_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, day_files, amp_url)
    original = LedgerObserver.on_batch_accepted
    seen = {"n": 0}

    def die_on_the_second(self: LedgerObserver, batch_id: str, events: Any) -> None:
        seen["n"] += 1
        if seen["n"] == 2:
            raise Crash
        original(self, batch_id, events)

    with monkeypatch.context() as m:
        m.setattr(LedgerObserver, "on_batch_accepted", die_on_the_second)
        with pytest.raises(Crash):
            invoke("migrate", "-c", str(cfg), "--quiet")

    got = invoke("status", "-c", str(cfg), "--json")
    assert got.exit_code == 0, got.stderr
    st = orjson.loads(got.stdout)
    assert st["complete"] is False and st["problems"] == []
    assert st["batches"] == {"done": 1, "in_flight": 1}
    assert sum(st["states"].values()) == 3 and set(st["states"]) <= {"identity", "loaded"}
    assert st["states"].get("identity", 0) >= 2
    assert [Path(w["window"]).name for w in st["windows"]] == sorted(
        p.name for p in day_files.iterdir())
    assert st["totals"]["sent"] == sum(w["sent"] for w in st["windows"]) > 0
    assert all(w["read"] > 0 for w in st["windows"])  # staged: record counts known

    text = invoke("status", "-c", str(cfg), "--windows")
    assert text.exit_code == 0
    out = flat(text.stdout)
    assert "batches done 1, sent but not confirmed 1 (sent again by --resume)" in out \
        and "mp2amp in progress" in out  # the run stopped: nothing is in flight
    for w in st["windows"]:
        assert Path(w["window"]).name in out and w["state"] in out

    # the resume finishes it: status then says complete, every window loaded
    resumed = invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    final = orjson.loads(invoke("status", "-c", str(cfg), "--json").stdout)
    assert final["complete"] is True and final["states"] == {"loaded": 3}
    assert final["batches"]["in_flight"] == 0
    assert final["totals"] == orjson.loads(resumed.stdout)["totals"]


@pytest.mark.parametrize(("key", "delta"), [
    ("duplicates", 3),          # accounted for more than was read
    ("identity_records", 2),
    ("records_read", 4),        # read more than was accounted for
])
def test_a_broken_window_is_named_by_migrate_and_status(
        tmp_path: Path, day_files: Path, amp_url: str, key: str, delta: int) -> None:
    cfg = config(tmp_path, day_files, amp_url, concurrency=2)
    first = invoke("migrate", "-c", str(cfg), "--quiet", "--json")
    assert first.exit_code == 0, first.stderr
    # the ledger's counts of the second window change by `delta`
    db = sqlite3.connect(tmp_path / "work" / "ledger.sqlite")
    with db:
        window, counts = db.execute(
            "SELECT window_id, counts FROM windows ORDER BY seq LIMIT 1 OFFSET 1").fetchone()
        c = orjson.loads(counts)
        c[key] = int(c.get(key, 0)) + delta
        db.execute("UPDATE windows SET counts = ? WHERE window_id = ?",
                   (orjson.dumps(c).decode(), window))
        if key == "records_read":  # `read` is what was staged (the load read as much back)
            db.execute("UPDATE windows SET records = records + ? WHERE window_id = ?",
                       (delta, window))
    db.close()

    text = invoke("migrate", "-c", str(cfg), "--resume", "--quiet")
    assert text.exit_code == 1, text.stderr
    message = flat(text.stderr)
    assert f"does not add up: {window}: read " in message
    assert message.count("does not add up:") == 1  # only that window

    as_json = invoke("migrate", "-c", str(cfg), "--resume", "--json")
    assert as_json.exit_code == 1
    result = orjson.loads(as_json.stdout)
    assert result["totals"]["balanced"] is False
    assert [p.split(": read ")[0] for p in result["problems"]] == [window]
    read, accounted = result["problems"][0].split(": read ")[1].split(" but accounted for ")
    diff = int(read) - int(accounted.split()[0])
    assert diff == (delta if key == "records_read" else -delta)

    st = invoke("status", "-c", str(cfg), "--json")
    assert st.exit_code == 0
    got = orjson.loads(st.stdout)
    assert got["complete"] is True and got["totals"]["balanced"] is False
    assert got["problems"] == result["problems"][-1:]
    shown = invoke("status", "-c", str(cfg))
    assert f"does not add up: {window}: read" in flat(shown.stderr)


# --- mp2amp demo ------------------------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import tempfile

    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_demo_json_passes_with_faults(temp_root: Path) -> None:
    result = invoke("demo", "--events", "2000", "--fail-rate", "0.1", "--drop-rate", "0.05",
                    "--json")
    assert result.exit_code == 0, result.stderr
    got = orjson.loads(result.stdout)
    assert got["ok"] is True and got["migration"]["totals"]["balanced"] is True
    rows = got["event_types"]
    assert rows and all(r["ok"] for r in rows)
    assert sum(r["amplitude_export"] for r in rows) == got["migration"]["totals"]["sent"]
    # faults were injected and ridden out
    statuses = got["migration"]["load"]["requests_by_status"]
    assert any(s.startswith("5") for s in statuses) and got["migration"]["load"]["retries"] > 0


def test_demo_text_shows_the_table_and_the_invariant(temp_root: Path) -> None:
    result = invoke("demo", "--events", "2000", "--fail-rate", "0", "--drop-rate", "0")
    assert result.exit_code == 0, result.stderr
    out = flat(result.stdout)
    assert "Mixpanel vs Amplitude, events per type" in out
    for col in ("Mixpanel raw", "expected", "Amp export", "Amp segment."):
        assert col in out
    assert "invariant: read " in out and ": holds" in out
    assert "demo OK" in out


def _losing_one(real: Any, event_type: str) -> Any:
    def export_counts(*args: Any) -> Any:
        by_type, by_day, rest = real(*args)
        by_type = Counter(by_type)
        by_day = Counter(by_day)
        by_type[event_type] -= 1
        day = next(d for (t, d) in sorted(by_day) if t == event_type)
        by_day[(event_type, day)] -= 1
        return by_type, by_day, rest

    return export_counts


@pytest.mark.parametrize("where", ["export", "segmentation"])
def test_demo_exits_1_when_amplitude_holds_one_event_less(
        temp_root: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """What Amplitude's APIs read back is one Product Viewed short: the per-type comparison
    (not a patched verdict) must fail the demo, name the type, and keep the folder."""
    if where == "export":
        monkeypatch.setattr(demo, "export_counts", _losing_one(readback.export_counts,
                                                               "Product Viewed"))
    else:
        real = readback.segmentation_totals

        def segmentation(url: str, key: str, secret: str, event_type: str,
                         *args: Any) -> dict[str, int]:
            got = dict(real(url, key, secret, event_type, *args))
            if event_type == "Product Viewed":
                day = sorted(got)[0]
                got[day] -= 1
            return got

        monkeypatch.setattr(demo, "segmentation_totals", segmentation)
    result = invoke("demo", "--events", "2000", "--fail-rate", "0", "--drop-rate", "0",
                    "--json")
    assert result.exit_code == 1, result.stderr
    got = orjson.loads(result.stdout)
    assert got["ok"] is False and got["workdir_kept"] is True
    bad = [r["event_type"] for r in got["event_types"] if not r["ok"]]
    assert bad == ["Product Viewed"]
    if where == "export":
        assert any(m.startswith("Product Viewed on ") for m in got["daily_mismatches"])

    text = invoke("demo", "--events", "2000", "--fail-rate", "0", "--drop-rate", "0")
    assert text.exit_code == 1
    assert "MISMATCH" in text.stdout and "demo FAILED" in flat(text.stderr)


def test_demo_exits_1_when_the_migration_does_not_add_up(
        temp_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Amplitude matches, but a window of the migration does not add up: still a failure."""
    real = pipeline_migrate.migrate

    def unbalanced(config: Any, **kwargs: Any) -> Any:
        result = real(config, **kwargs)
        result.windows[0].duplicate += 1
        result.totals["balanced"] = False
        return result

    monkeypatch.setattr(demo, "migrate", unbalanced)
    result = invoke("demo", "--events", "2000", "--fail-rate", "0", "--drop-rate", "0",
                    "--json")
    assert result.exit_code == 1
    got = orjson.loads(result.stdout)
    assert got["ok"] is False and all(r["ok"] for r in got["event_types"])
    assert got["migration"]["exit_code"] == 1 and got["migration"]["problems"]
