"""Review of ``mp2amp transform`` (offline) and ``mp2amp generate``: bad paths, exit codes,
messages, accounting, equality with what ``migrate`` sends, and the generator's truth.

Tests marked ``xfail(strict=True)`` show a defect (the reason says what is wrong, what
should happen and where); the others pin edge cases no other test checks."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app

ENV_VARS = (
    "AMPLITUDE_API_KEY",
    "AMPLITUDE_SECRET_KEY",
    "MIXPANEL_SERVICE_ACCOUNT",
    "MIXPANEL_SECRET",
    "MP2AMP_HASH_SALT",
)


def invoke(*args: str) -> Any:
    """The CLI in process; an unexpected exception (a traceback for the user) is caught and
    shows as ``result.exception`` with exit code 1."""
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def flat(text: str) -> str:
    return " ".join(text.split())


def record(name: str, t: float, distinct: str, iid: str, **props: Any) -> dict[str, Any]:
    return {
        "event": name,
        "properties": {"time": t, "distinct_id": distinct, "$insert_id": iid, **props},
    }


def jsonl(*records: Any) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


GOOD = jsonl(
    *(
        record("Page View", 1_700_000_000 + 60 * i, f"user-{i % 3:04d}", f"iid-{i}")
        for i in range(6)
    )
)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_bytes(GOOD)
    return tmp_path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# --- transform: outputs that collide with inputs or are not files -----------------------


@pytest.mark.parametrize("flag", ["--out", "--rejects"])
def test_an_output_named_like_an_input_is_refused_and_the_input_kept(cwd: Path, flag: str) -> None:
    args = ["transform", "a.jsonl", flag, "a.jsonl", "--json"]
    if flag == "--rejects":
        args += ["--out", "events.jsonl"]
    result = invoke(*args)
    assert (cwd / "a.jsonl").read_bytes() == GOOD, "the input file was overwritten"
    assert result.exit_code == 2
    assert "a.jsonl" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("flag", "value"), [("--out", "outdir"), ("--rejects", "outdir"), ("--out", ".")]
)
def test_an_output_that_is_a_folder_is_a_clear_error(cwd: Path, flag: str, value: str) -> None:
    (cwd / "outdir").mkdir()
    args = ["transform", "a.jsonl", flag, value]
    if flag == "--rejects":
        args += ["--out", "events.jsonl"]
    result = invoke(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2
    assert "outdir" in result.stderr or "." in result.stderr
    assert leftovers(cwd) == []
    assert sorted(p.name for p in cwd.iterdir()) == ["a.jsonl", "outdir"] or sorted(
        p.name for p in cwd.iterdir()
    ) == [".mp2amp", "a.jsonl", "outdir"]


def test_rejects_file_equal_to_out_is_refused(cwd: Path) -> None:
    (cwd / "a.jsonl").write_bytes(GOOD + b"not json\n")
    result = invoke("transform", "a.jsonl", "--out", "x.jsonl", "--rejects", "x.jsonl")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2
    assert not (cwd / "x.jsonl").exists() and leftovers(cwd) == []


def test_an_output_in_a_missing_folder_is_a_clear_error(cwd: Path) -> None:
    result = invoke("transform", "a.jsonl", "--out", "nodir/x.jsonl")
    assert result.exit_code == 2 and result.exception is not None
    assert isinstance(result.exception, SystemExit)
    assert "cannot write nodir/x.jsonl: No such file or directory" in flat(result.stderr)
    assert result.stdout == ""


# --- transform: a failed run must not present its output as complete --------------------


def _lossy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that loses one record (simulated, as tests/cli/test_transform_cli.py does)."""
    import mp2amp.transform.offline as offline

    real = offline.transform_stream

    def lossy(*args: Any) -> Any:
        for i, outcome in enumerate(real(*args)):
            if i != 2:
                yield outcome

    monkeypatch.setattr(offline, "transform_stream", lossy)


def test_counts_that_do_not_add_up_leave_the_previous_output_in_place(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = invoke("transform", "a.jsonl", "--out", "out.jsonl", "--json")
    assert first.exit_code == 0, first.output
    good = (cwd / "out.jsonl").read_bytes()
    assert len(good.splitlines()) == 6
    _lossy(monkeypatch)
    result = invoke("transform", "a.jsonl", "--out", "out.jsonl", "--json")
    assert result.exit_code == 2
    assert "do not load it" in flat(result.stderr)
    assert (cwd / "out.jsonl").read_bytes() == good, "the incomplete output replaced the good one"


def test_ctrl_c_with_events_on_stdout_does_not_claim_nothing_was_written(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mp2amp.transform.offline as offline

    def interrupted(cfg: Any, paths: Any, out: Any, rejects: Any, **kw: Any) -> Any:
        out.write(b'{"event_type": "half"}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "transform_files", interrupted)
    result = invoke("transform", "a.jsonl")
    assert result.exit_code == 130
    assert '"half"' in result.stdout  # the event did reach stdout
    assert "nothing was written" not in result.stderr


def test_real_ctrl_c_in_pass_two_keeps_the_previous_output(tmp_path: Path) -> None:
    """SIGINT to a real process while it writes: exit 130, no .partial left, and the
    previous run's complete output is neither replaced nor removed."""
    from mp2amp.generate import GenerateConfig, generate_project

    generate_project(
        GenerateConfig(out=tmp_path / "p", users=2500, days=7, seed=3, dirty=0.0, gzip=False)
    )
    (tmp_path / "out.jsonl").write_bytes(b'{"previous": "run"}\n')
    (tmp_path / "out.jsonl.rejects.jsonl").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mp2amp", "transform", "p/events", "--out", "out.jsonl"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    partial = tmp_path / ".out.jsonl.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size > 0:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"previous": "run"}\n'
    assert leftovers(tmp_path) == []


# --- transform: damaged and odd inputs -------------------------------------------------


def test_a_gzip_cut_short_is_one_rejection_naming_file_and_line(cwd: Path) -> None:
    """The documented transform behaviour (docs/contracts.md §3): what decompressed is kept,
    one ``truncated_file`` rejection names the file and the line after the last record;
    the summary adds up. (``migrate`` stops on it by default: [source] damaged_files.)"""
    lines = [record("E", 1_700_000_000 + i, f"user-{i % 5:04d}", f"cut-{i}") for i in range(3000)]
    whole = gzip.compress(jsonl(*lines), mtime=0)
    (cwd / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    result = invoke("transform", "cut.jsonl.gz", "--out", "out.jsonl", "--json")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)["summary"]
    kept = summary["events_out"]
    assert 0 < kept < 3000
    assert summary["rejected"] == {"truncated_file": 1}
    assert summary["records_read"] == kept + 1 and summary["balanced"] is True
    rejects = [orjson.loads(x) for x in (cwd / "out.jsonl.rejects.jsonl").read_bytes().splitlines()]
    assert [(r["source"], r["line"], r["reason"]) for r in rejects] == [
        ("cut.jsonl.gz", kept + 1, "truncated_file")
    ]
    assert "restore the file and run again" in rejects[0]["message"]
    assert len((cwd / "out.jsonl").read_bytes().splitlines()) == kept


def test_every_record_is_accounted_for_and_rejects_name_file_and_line(cwd: Path) -> None:
    """emitted + identity + duplicates + skipped + rejected = read, across two files, with
    a split record, a cut line, a non-object, a junk id and a duplicate."""
    good = record("Buy", 1_700_000_000, "user-0001", "x-1", price=3)
    day1 = (
        orjson.dumps(good)
        + b"\n"
        + orjson.dumps(good)
        + b"\n"
        + b'{"event":"Buy","properties":{"time":1700000005,\n'
        + b'"distinct_id":"user-0002","$insert_id":"x-2"}}\n'
        + b'{"event":"Buy","properties":{"ti\n'
        + b"[1, 2]\n"
        + orjson.dumps(record("Buy", 1_700_000_009, "undefined", "x-3"))
        + b"\n"
    )
    (cwd / "day1.jsonl").write_bytes(day1)
    (cwd / "day2.jsonl").write_bytes(
        jsonl(
            {
                "event": "$identify",
                "properties": {
                    "time": 1_700_000_010,
                    "distinct_id": "user-0001",
                    "$anon_id": "dev-9",
                    "$identified_id": "user-0001",
                },
            },
            record("Buy", 1_700_000_011, "user-0003", "x-4"),
        )
    )
    result = invoke("transform", "day1.jsonl", "day2.jsonl", "--out", "out.jsonl", "--json")
    assert result.exit_code == 0, result.output
    s = orjson.loads(result.stdout)["summary"]
    assert (s["records_read"], s["events_out"], s["duplicates"], s["identity_records"]) == (
        8,
        3,
        1,
        1,
    )
    assert s["rejected"] == {"malformed_json": 1, "missing_id": 1, "not_an_object": 1}
    rejects = [orjson.loads(x) for x in (cwd / "out.jsonl.rejects.jsonl").read_bytes().splitlines()]
    assert sorted((r["source"], r["line"], r["reason"]) for r in rejects) == [
        ("day1.jsonl", 5, "malformed_json"),
        ("day1.jsonl", 6, "not_an_object"),
        ("day1.jsonl", 7, "missing_id"),
    ]


def test_a_pipe_as_input_is_named_as_a_pipe(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "mp2amp", "transform", "/dev/stdin", "--out", "out.jsonl"],
        input=GOOD,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    err = flat(proc.stderr.decode())
    assert proc.returncode == 2 and "Traceback" not in err
    assert "does not exist" not in err
    assert "not a regular file" in err or "pipe" in err


# --- transform equals migrate ------------------------------------------------------------


@contextmanager
def capture_batch() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback Amplitude that accepts every request and keeps the events it got."""
    got: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            events = orjson.loads(body).get("events", [])
            with lock:
                got.extend(events)
            answer = orjson.dumps(
                {
                    "code": 200,
                    "events_ingested": len(events),
                    "payload_size_bytes": len(body),
                    "server_upload_time": int(time.time() * 1000),
                }
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def transform_and_migrate(root: Path, source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """insert_id -> event, as ``mp2amp transform`` writes it and as ``migrate`` sends it."""
    from mp2amp.config import load_config
    from mp2amp.pipeline.migrate import EXIT_OK, migrate

    result = invoke("transform", str(source), "--out", str(root / "t.jsonl"), "--json")
    assert result.exit_code == 0, result.output
    offline = [orjson.loads(x) for x in (root / "t.jsonl").read_bytes().splitlines()]
    with capture_batch() as (url, sent):
        cfg = load_config(
            None,
            {
                "source.files": [str(source)],
                "amplitude.api_host": url,
                "run.workdir": str(root / "mwork"),
            },
            env={"AMPLITUDE_API_KEY": "review-key"},
        )
        run = migrate(
            cfg, upload_overrides={"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}
        )
    assert run.exit_code == EXIT_OK, run.as_dict()
    by_t = {e["insert_id"]: e for e in offline}
    by_m = {e["insert_id"]: e for e in sent}
    assert len(by_t) == len(offline) and len(by_m) == len(sent)
    assert by_t.keys() == by_m.keys()
    return by_t, by_m


def test_transform_equals_migrate_on_a_time_ordered_file(cwd: Path) -> None:
    source = cwd / "sorted.jsonl"
    source.write_bytes(
        jsonl(
            *(
                record(
                    "View",
                    1_700_000_000 + 300 * i,
                    f"user-{i % 2:04d}",
                    f"s-{i}",
                    **{"$device_id": f"dev-{i % 2}", "$user_id": f"user-{i % 2:04d}"},
                )
                for i in range(8)
            )
        )
    )
    by_t, by_m = transform_and_migrate(cwd, source)
    assert by_t == by_m


def test_transform_equals_migrate_on_an_unsorted_file(cwd: Path) -> None:
    ids = {"$device_id": "dev-1", "$user_id": "user-0001"}
    source = cwd / "unsorted.jsonl"
    source.write_bytes(
        jsonl(
            record("B", 1_700_001_200, "user-0001", "u-2", **ids),
            record("A", 1_700_000_000, "user-0001", "u-1", **ids),
            record("C", 1_700_000_600, "user-0001", "u-3", **ids),
        )
    )
    by_t, by_m = transform_and_migrate(cwd, source)
    assert {k: e["session_id"] for k, e in by_t.items()} == {
        k: e["session_id"] for k, e in by_m.items()
    }


def test_transform_keeps_the_same_copy_of_a_duplicate_as_migrate(cwd: Path) -> None:
    source = cwd / "dup.jsonl"
    source.write_bytes(
        jsonl(
            record("Buy", 1_700_000_000.9, "user-0001", "same", note="resent"),
            record("Buy", 1_700_000_000.1, "user-0001", "same", note="first"),
        )
    )
    by_t, by_m = transform_and_migrate(cwd, source)
    assert by_t == by_m


# --- generate: arguments ----------------------------------------------------------------


def run_generate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mp2amp", "generate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("start", "days"), [("9999-12-31", "2"), ("0001-01-01", "1")])
def test_generate_start_at_the_calendar_edges_is_a_clear_error(
    tmp_path: Path, start: str, days: str
) -> None:
    proc = run_generate(
        "--out", "p", "--users", "5", "--days", days, "--start", start, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-300:]
    assert "Traceback" not in proc.stderr and "--start" in proc.stderr
    assert not (tmp_path / "p").exists()


def test_generate_out_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = run_generate("--out", "afile/sub", "--users", "5", "--days", "1", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-300:]
    assert "Traceback" not in proc.stderr and "afile/sub" in proc.stderr


def test_generate_lists_every_bad_argument_at_once(tmp_path: Path) -> None:
    proc = run_generate(
        "--out",
        "p",
        "--start",
        "2024-13-01",
        "--users",
        "0",
        "--days",
        "0",
        "--dirty",
        "1",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    text = flat(proc.stderr)
    for message in (
        "--start must be a date",
        "--users must be between 1",
        "--days must be between 1",
        "--dirty must be a rate",
    ):
        assert message in text


@pytest.mark.parametrize("value", ["nan", "inf", "-0.001"])
def test_generate_refuses_a_dirty_rate_that_is_not_a_rate(tmp_path: Path, value: str) -> None:
    proc = run_generate("--out", "p", "--dirty", value, "--json", cwd=tmp_path)
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)  # stdout is one JSON object: the error
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "ConfigError")
    assert "--dirty must be a rate between 0 and 0.2" in flat(proc.stderr)
    assert not (tmp_path / "p").exists()


# --- generate: truth agrees with the files ----------------------------------------------


@pytest.fixture(scope="module")
def orig_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mp2amp.generate import GenerateConfig, generate_project

    out = tmp_path_factory.mktemp("orig") / "p"
    generate_project(
        GenerateConfig(
            out=out,
            users=250,
            days=4,
            seed=13,
            dirty=0.0,
            id_merge="original",
            legacy_time=True,
            timezone="Europe/Berlin",
            start=date(2024, 3, 29),
        )
    )
    return out


def _lines(root: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for path in sorted((root / "events").glob("*.jsonl.gz")):
        for n, raw in enumerate(gzip.decompress(path.read_bytes()).splitlines(), start=1):
            yield f"events/{path.name}", n, orjson.loads(raw)


def _truth(root: Path) -> dict[str, tuple[str, str]]:
    with gzip.open(root / "truth/event_person.tsv.gz", "rt", encoding="utf-8") as fh:
        return {k: (u, d) for k, u, d in (line.rstrip("\n").split("\t") for line in fh)}


CHARGES = {
    "Order Completed": ("revenue", 1),
    "Order Refunded": ("refund_amount", -1),
    "Plan Upgraded": ("mrr", 1),
    "Money Transfer Sent": ("fee_usd", 1),
    "Subscription Started": ("price", 1),
    "Subscription Renewed": ("price", 1),
}


def test_profile_revenue_matches_the_events_of_each_person(orig_project: Path) -> None:
    """Lifetime Revenue and $transactions of each profile = the charges of the events the
    truth gives that person (original ID merge, legacy time, a DST change inside)."""
    from datetime import UTC, datetime

    truth = _truth(orig_project)
    revenue: dict[str, float] = defaultdict(float)
    charges: dict[str, int] = defaultdict(int)
    for file, line, rec in _lines(orig_project):
        if rec["event"] not in CHARGES:
            continue
        prop, sign = CHARGES[rec["event"]]
        props = rec["properties"]
        user = truth[props.get("$insert_id") or f"@{file}:{line}"][0]
        assert user, rec
        revenue[user] += sign * props[prop]
        charges[user] += 1
    profiles = {
        str(p["$distinct_id"]): p["$properties"]
        for p in (
            orjson.loads(x)
            for x in gzip.decompress(
                (orig_project / "profiles/users.jsonl.gz").read_bytes()
            ).splitlines()
        )
    }
    with_revenue = {u for u, p in profiles.items() if "Lifetime Revenue" in p}
    assert with_revenue == set(revenue) and len(revenue) > 20
    for user, total in revenue.items():
        props = profiles[user]
        assert props["Lifetime Revenue"] == pytest.approx(total, abs=0.011), user
        assert len(props["$transactions"]) == min(charges[user], 100)
        if charges[user] <= 100:
            assert sum(t["$amount"] for t in props["$transactions"]) == pytest.approx(
                total, abs=0.011
            )
        for t in props["$transactions"]:
            datetime.strptime(t["$time"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def test_truth_people_profiles_and_identity_table_agree(orig_project: Path) -> None:
    """Every user in event_person has a profile and vice versa; each identity-table row
    resolves to a profile, and an id it maps is used by events of that user only."""
    truth = _truth(orig_project)
    users = {u for u, _ in truth.values() if u}
    profiles = {
        str(orjson.loads(x)["$distinct_id"])
        for x in gzip.decompress(
            (orig_project / "profiles/users.jsonl.gz").read_bytes()
        ).splitlines()
    }
    assert users == profiles
    table = {
        r["distinct_id"]: r["resolved_distinct_id"]
        for r in (
            orjson.loads(x)
            for x in gzip.decompress(
                (orig_project / "identity/mappings.jsonl.gz").read_bytes()
            ).splitlines()
        )
    }
    assert set(table.values()) <= profiles
    checked = 0
    for file, line, rec in _lines(orig_project):
        props = rec["properties"]
        if rec["event"] in ("$identify", "$create_alias", "$merge"):
            continue
        did = props.get("distinct_id")
        if did in table and "$user_id" not in props:
            assert truth[props.get("$insert_id") or f"@{file}:{line}"][0] == table[did]
            checked += 1
    assert checked > 0


def test_daily_counts_of_a_legacy_time_project_are_utc_days(orig_project: Path) -> None:
    """Legacy time is project-local epoch (Berlin, DST on 2024-03-31): daily counts must
    bucket the real instant by UTC day. Recounted here with the offset of each instant."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")

    def utc_of(local_epoch: float) -> datetime:
        for hours in (1, 2):  # CET / CEST
            utc = datetime.fromtimestamp(local_epoch, tz=UTC) - timedelta(hours=hours)
            if utc.astimezone(tz).utcoffset() == timedelta(hours=hours):
                return utc
        raise AssertionError(local_epoch)

    truth = _truth(orig_project)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for file, line, rec in _lines(orig_project):
        if rec["event"] in ("$identify", "$create_alias", "$merge"):
            continue
        key = rec["properties"].get("$insert_id") or f"@{file}:{line}"
        assert key in truth
        day = utc_of(rec["properties"]["time"]).strftime("%Y-%m-%d")
        counts[rec["event"]][day] += 1
    expected = json.loads((orig_project / "truth/daily_counts.json").read_text())
    assert {k: dict(v) for k, v in counts.items()} == expected


def test_same_seed_same_bytes_for_original_legacy_dirty_plain(tmp_path: Path) -> None:
    from mp2amp.generate import GenerateConfig, generate_project

    def tree(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    kw: dict[str, Any] = {
        "users": 120,
        "days": 3,
        "seed": 77,
        "dirty": 0.05,
        "id_merge": "original",
        "legacy_time": True,
        "gzip": False,
        "industries": ("fintech", "streaming"),
        "timezone": "Asia/Kolkata",
    }
    generate_project(GenerateConfig(out=tmp_path / "a", **kw))
    generate_project(GenerateConfig(out=tmp_path / "b", **kw))
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert any(k.startswith("events/") and k.endswith(".jsonl") for k in a)
    summary = json.loads(a["truth/summary.json"])
    assert all(
        summary["dirt"][k] > 0
        for k in (
            "duplicates",
            "malformed_lines",
            "split_lines",
            "junk_ids",
            "short_ids",
            "type_changes",
        )
    )
