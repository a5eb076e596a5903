"""Real-data coverage review: every record of shared/fixtures/wild through the parts that had
no test running all of them.

Already covered elsewhere (each runs every record of its file): file extraction
(tests/extract/test_files.py), the Export API client (tests/extract/test_export.py), the
Engage pager (tests/extract/test_engage_wild.py), staging (tests/pipeline/test_staging.py),
identity (tests/identity/test_wild.py), the transform (tests/transform/test_wild.py), both
emulators (tests/emulators/*/test_wild.py), `mp2amp transform` on the export file
(tests/cli/test_transform_cli.py). Here:

* ``mp2amp migrate`` end to end, from files and from the Mixpanel emulator's Export API (UTC
  and legacy Pacific projects), into the Amplitude emulator, and with ``output_dir`` (the
  S3-import sink), compared with ``mp2amp transform`` on the same files (which thereby runs
  on the ingestion-payload file too);
* the uploader and its response classifier on every real HTTP V2 request body;
* the S3-import sink on every real HTTP V2 event;
* the read-back (``pipeline/readback.py``) on every real Amplitude export line.

Tests marked ``xfail(strict=True)`` document defects.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import gzip
import io
import shutil
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from mp2amp.config import load_config
from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.amplitude.store import EventStore
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator
from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.responses import classify
from mp2amp.load.s3sink import CONVERTER_NAME, S3ImportSink
from mp2amp.models import Resolved
from mp2amp.pipeline import readback
from mp2amp.pipeline.migrate import EXIT_OK, MigrateResult, migrate
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.settings import RevenueSettings

WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wild"

pytestmark = pytest.mark.skipif(not WILD.is_dir(), reason=f"wild fixtures not present at {WILD}")

EXPORT = "mixpanel-export-events.jsonl"
INGEST = "mixpanel-ingestion-payloads.jsonl"
HTTPV2 = "amplitude-httpv2-requests.jsonl"
AMP_EXPORT = "amplitude-export-events.jsonl"
API_KEY = "wild-review-key"
SECRET = "wild-review-secret"
FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "throttle_wait": 0.2}
MIXPANEL_FAST = {"per_hour": 10_000, "per_second": 100, "backoff_base": 0.01, "backoff_cap": 0.05}
MS_ABOVE = 100_000_000_000  # a larger Mixpanel "time" is already in milliseconds


def raw_lines(name: str) -> list[bytes]:
    return [line for line in (WILD / name).read_bytes().splitlines() if line.strip()]


def provenance(name: str) -> dict[int, dict[str, Any]]:
    out = {}
    for line in raw_lines("provenance.jsonl"):
        entry = orjson.loads(line)
        if entry["file"] == name:
            out[entry["line"]] = entry
    return out


def time_ms(t: float) -> int:
    return int(t) if t > MS_ABOVE else round(t * 1000)


# --- what each real Mixpanel record must become -----------------------------------------
# mixpanel-export-events.jsonl, UTC project, both ID merge modes (no identity events in this
# file, and each record's ids speak for themselves):
# line -> ("event", user_id, device_id) | ("dead", reason) | ("skipped", rule)
EXPORT_OUTCOME: dict[int, tuple[str, ...] | tuple[str, str | None, str | None]] = {
    **{n: ("event", "test@test.com", None) for n in range(1, 6)},  # Adobe import-API records
    **{n: ("event", "test1@test.com", None) for n in range(6, 9)},
    9: ("event", None, "849DBA18-C0AB-4A49-9A23-B5434834A238"),  # iOS swift, anonymous
    10: ("event", None, "16D83774-01E3-46AD-AD1D-2C73AB954D8A"),
    11: ("event", None, "4088C1FA-6088-41D6-A1FD-0D17E349030A"),
    12: ("event", None, "EBCD024A-3970-4915-A719-82DF68DADAA4"),
    13: ("event", "1d694fd9-31a5-4b99-9eef-ae63112063ed", None),  # Segment classic
    14: ("event", "609ce8fb4092701c69df9846", None),  # Segment Actions
    15: ("event", "user123", "123"),  # $device:123 + $user_id
    16: ("dead", "missing_id"),  # the docs' export samples carry no distinct_id at all
    17: ("dead", "missing_id"),
    18: ("dead", "missing_id"),
    19: ("event", "hotshard@mixpanel.com", None),  # time in ms
    20: ("skipped", "hotshard_record"),
    21: ("event", "77473", "cb95b742-e130-4eab-80a3-081051291893"),  # react-native
}
# mixpanel-ingestion-payloads.jsonl as an input file: the five event lines are sent, the
# identity events fed to the graph, the rest dead-lettered with the documented reason.
INGEST_DEAD = {
    **{n: "not_an_event" for n in (1, 3, 4, 5, 6, 17, 21, 23, 25, 26, 27)},
    11: "not_an_object",  # a /import JSON-array body on one .jsonl line (contracts §2)
    12: "missing_time",
    13: "missing_time",
    16: "time_out_of_range",  # mixpanel-python's test time 1000.1
}
INGEST_IDENTITY = (14, 15, 18, 19, 20, 22, 24)
# line -> (user_id, device_id) of the event it becomes (both ID merge modes)
INGEST_EVENTS = {
    2: ("whuuuuuut", "18b3b6362f3b2-083ef01abede78-17525634-1fa400-18b3b6362f3b2"),  # float s
    7: (None, "18b4e0ca3e2427-0b87eda4203b97-17525634-1fa400-18b4e0ca3e2427"),  # $device:
    8: ("hn_user_01", None),
    9: ("hn_user_02", None),
    10: ("user801@example.com", None),  # /track with time in ms
}
# properties that become top-level Amplitude fields (or are Mixpanel's own stamps)
NOT_EVENT_PROPERTIES = {
    "time",
    "distinct_id",
    "mp_processing_time_ms",
    "mp_country_code",
    "token",
    "ip",
}


def export_outcome(n: int, mode: str = "simplified") -> tuple[Any, ...]:
    if n == 13 and mode == "original":
        # Segment's UUID distinct_id without $device_id and never linked: an anonymous device
        # in Original ID Merge (a user ID by Simplified's backward-compatibility rule)
        return ("event", None, "1d694fd9-31a5-4b99-9eef-ae63112063ed")
    return EXPORT_OUTCOME[n]


def expected_export_events(mode: str = "simplified") -> Counter[tuple[Any, ...]]:
    want: Counter[tuple[Any, ...]] = Counter()
    for n, line in enumerate(raw_lines(EXPORT), 1):
        outcome = export_outcome(n, mode)
        if outcome[0] == "event":
            rec = orjson.loads(line)
            want[(rec["event"], time_ms(rec["properties"]["time"]), outcome[1], outcome[2])] += 1
    return want


# --- emulators and migrate -----------------------------------------------------------------


@contextmanager
def amplitude(data: Path, **kw: Any) -> Iterator[str]:
    emu = AmplitudeEmulator(
        AmplitudeConfig(data_dir=data, api_key=API_KEY, secret_key=SECRET, **kw)
    )
    with emu.running() as url:
        yield url


def stored(data: Path) -> list[dict[str, Any]]:
    """What the Amplitude emulator stored, its own bookkeeping keys (``_a``, ``_t``...) off."""
    return [
        {k: v for k, v in e.items() if not k.startswith("_")}
        for e in EventStore(data).iter_events()
    ]


def dead_letters(work: Path) -> list[dict[str, Any]]:
    path = work / "dead-letters.jsonl"
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def run_migrate(
    overrides: dict[str, Any], env: dict[str, str] | None = None, **kw: Any
) -> MigrateResult:
    cfg = load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY, **(env or {})})
    return migrate(cfg, upload_overrides=FAST, **kw)


def transform_cli(
    files: list[str], work: Path, mode: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``mp2amp transform`` on the same files: what migrate must have sent, field for field."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "t.toml").write_text(f'[mixpanel]\nid_merge = "{mode}"\n[run]\nworkdir = "{work}"\n')
    out = work / "t.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mp2amp",
            "transform",
            "-c",
            str(work / "t.toml"),
            *files,
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [orjson.loads(x) for x in out.read_bytes().splitlines()], orjson.loads(proc.stdout)


def copy_inputs(dest: Path, *names: str) -> list[str]:
    dest.mkdir(parents=True)
    for name in names:
        shutil.copy(WILD / name, dest / name)
    return [str(dest / name) for name in names]


def by_insert_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {e["insert_id"]: e for e in events}
    assert len(out) == len(events), "an insert_id twice"
    return out


# === mp2amp migrate, files -> Amplitude emulator ==========================================


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_migrate_every_real_mixpanel_record_from_files(tmp_path: Path, mode: str) -> None:
    files = copy_inputs(tmp_path / "in", EXPORT, INGEST)
    with amplitude(tmp_path / "amp") as url:
        result = run_migrate(
            {
                "source.files": files,
                "mixpanel.id_merge": mode,
                "amplitude.api_host": url,
                "run.workdir": str(tmp_path / "work"),
            }
        )
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert {
        k: result.totals[k]
        for k in (
            "read",
            "sent",
            "identity",
            "duplicate",
            "skipped",
            "rejected",
            "dead_lettered",
            "parked",
        )
    } == {
        "read": 21 + 27,
        "sent": 17 + 5,
        "identity": 7,
        "duplicate": 0,
        "skipped": 1,
        "rejected": 3 + len(INGEST_DEAD),
        "dead_lettered": 0,
        "parked": 0,
    }
    got = stored(tmp_path / "amp")
    # each event stored once (the emulator keeps a repeated insert_id once: count the keys)
    assert len(by_insert_id(got)) == 22

    # the export file: every event record arrives once, with its ids and its time in ms
    export_events = [
        e
        for e in got
        if e["time"] >= 1_600_000_000_000
        and e["event_type"]
        not in ("don't click me button", "page enter", "test_event", "Played Song")
    ]
    assert Counter(
        (e["event_type"], e["time"], e.get("user_id"), e.get("device_id")) for e in export_events
    ) == expected_export_events(mode)
    # ... and every custom property, as sent (string prices stay strings, nesting kept)
    for n, line in enumerate(raw_lines(EXPORT), 1):
        if EXPORT_OUTCOME[n][0] != "event":
            continue
        rec = orjson.loads(line)
        (event,) = [
            e
            for e in export_events
            if e["event_type"] == rec["event"]
            and e["time"] == time_ms(rec["properties"]["time"])
            and e.get("user_id") == export_outcome(n, mode)[1]
        ]
        custom = {
            k: v
            for k, v in rec["properties"].items()
            if not k.startswith("$") and k not in NOT_EVENT_PROPERTIES
        }
        assert {k: event["event_properties"].get(k) for k in custom} == custom, n
        insert_id = rec["properties"].get("$insert_id")
        assert event["insert_id"].startswith(f"{insert_id}-" if insert_id else "mp-"), n

    # dead letters: one per refused record, naming its file and line, the record as read
    rows = dead_letters(tmp_path / "work")
    want = sorted(
        [(files[0], n, "missing_id") for n, o in EXPORT_OUTCOME.items() if o[0] == "dead"]
        + [(files[1], n, r) for n, r in INGEST_DEAD.items()]
    )
    assert sorted((r["source"], r["line"], r["reason"]) for r in rows) == want
    assert all(r["stage"] == "transform" for r in rows)
    ingest = raw_lines(INGEST)
    for row in rows:
        source_lines = raw_lines(EXPORT) if row["source"] == files[0] else ingest
        raw = source_lines[row["line"] - 1]
        # the record as read; the JSON-array line (not an object) kept as its raw text
        assert row["record"] == (
            raw.decode() if row["reason"] == "not_an_object" else orjson.loads(raw)
        ), (row["source"], row["line"])

    # the five event lines of the ingestion file: once each, their times in ms, their ids
    want_ingest = Counter()
    for n, (user, device) in INGEST_EVENTS.items():
        rec = orjson.loads(ingest[n - 1])
        want_ingest[(rec["event"], time_ms(rec["properties"]["time"]), user, device)] += 1
    assert (
        Counter(
            (e["event_type"], e["time"], e.get("user_id"), e.get("device_id"))
            for e in got
            if e not in export_events
        )
        == want_ingest
    )

    # `mp2amp transform` on the same files gives exactly what migrate stored (README: "the
    # output is what migrate sends for the same input, field for field")
    events, doc = transform_cli(files, tmp_path / "transform", mode)
    assert by_insert_id(events) == by_insert_id(got)
    assert doc["summary"] == {
        "records_read": 48,
        "events_out": 22,
        "identity_records": 7,
        "duplicates": 0,
        "skipped": {"hotshard_record": 1},
        "rejected": {
            "missing_id": 3,
            "not_an_event": 11,
            "not_an_object": 1,
            "missing_time": 2,
            "time_out_of_range": 1,
        },
        "files": 2,
        "balanced": True,
    }


def test_migrate_again_with_resume_sends_nothing_twice(tmp_path: Path) -> None:
    """Every real record migrated, then the run resumed: nothing is fetched or sent again
    and the dead letters are rendered once each."""
    files = copy_inputs(tmp_path / "in", EXPORT, INGEST)
    with amplitude(tmp_path / "amp") as url:
        overrides = {
            "source.files": files,
            "amplitude.api_host": url,
            "run.workdir": str(tmp_path / "work"),
        }
        first = run_migrate(overrides)
        again = run_migrate(overrides, resume=True)
    assert first.exit_code == again.exit_code == EXIT_OK
    assert again.totals["sent"] == first.totals["sent"] == 22
    assert len(stored(tmp_path / "amp")) == 22
    assert len(dead_letters(tmp_path / "work")) == 3 + len(INGEST_DEAD)


# === mp2amp migrate, Mixpanel emulator's Export API -> Amplitude emulator ====================


def _utc_day(t: float) -> date:
    return datetime.fromtimestamp(t / 1000 if t > MS_ABOVE else t, UTC).date()


def mixpanel_project(
    root: Path, by_day: dict[date, list[bytes]], timezone: str, legacy: bool
) -> Path:
    (root / "events").mkdir(parents=True)
    (root / "profiles").mkdir()
    for day, lines in by_day.items():
        (root / "events" / f"{day.isoformat()}.jsonl.gz").write_bytes(
            gzip.compress(b"\n".join(lines) + b"\n")
        )
    (root / "profiles" / "users.jsonl.gz").write_bytes(gzip.compress(b""))
    (root / "project.json").write_bytes(
        orjson.dumps(
            {"project_id": 4242, "timezone": timezone, "legacy_time": legacy, "group_keys": []}
        )
    )
    return root


def migrate_export(
    root: Path, work: Path, amp: Path, first: date, last: date, **overrides: Any
) -> MigrateResult:
    mp = MixpanelEmulator(
        MixpanelConfig(data_dir=root, export_per_hour=None, export_per_second=None)
    )
    with mp.running() as mp_url, amplitude(amp) as url:
        return run_migrate(
            {
                "source.from_date": first.isoformat(),
                "source.to_date": last.isoformat(),
                "source.export_window_days": 31,
                "mixpanel.api_host": mp_url,
                "mixpanel.project_id": 4242,
                "amplitude.api_host": url,
                "run.workdir": str(work),
                **overrides,
            },
            env={"MIXPANEL_SECRET": "wild-secret"},
            mixpanel_overrides=MIXPANEL_FAST,
        )


def test_migrate_every_real_export_record_through_the_export_api(tmp_path: Path) -> None:
    """The 21 real Raw Export records in a (post-2023, UTC) project's day files, migrated
    through the Mixpanel emulator's Export API: the same Amplitude events, field for field,
    as from the file; the refused records named by export window and line."""
    lines = raw_lines(EXPORT)
    by_day: dict[date, list[bytes]] = {}
    for line in lines:
        by_day.setdefault(_utc_day(orjson.loads(line)["properties"]["time"]), []).append(line)
    root = mixpanel_project(tmp_path / "mp", by_day, "UTC", legacy=False)
    result = migrate_export(root, tmp_path / "work", tmp_path / "amp", min(by_day), max(by_day))
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert (
        result.totals["read"],
        result.totals["sent"],
        result.totals["skipped"],
        result.totals["rejected"],
    ) == (21, 17, 1, 3)
    got = stored(tmp_path / "amp")
    assert (
        Counter((e["event_type"], e["time"], e.get("user_id"), e.get("device_id")) for e in got)
        == expected_export_events()
    )
    # field for field what the same records give from the file (insert_ids included: the
    # Export API's millisecond times hash like the file's seconds)
    files = copy_inputs(tmp_path / "in", EXPORT)
    events, _ = transform_cli(files, tmp_path / "transform", "simplified")
    assert by_insert_id(got) == by_insert_id(events)
    rows = dead_letters(tmp_path / "work")
    window = f"export:{min(by_day).isoformat()}..2020-11-12"
    assert [(r["source"], r["line"], r["reason"]) for r in rows] == [
        (window, 1, "missing_id"),
        (window, 2, "missing_id"),
        (window, 3, "missing_id"),
    ]
    # the records as the Export API gave them (time_in_ms=true): lines 16, 18, 17
    want = [orjson.loads(lines[n - 1]) for n in (16, 18, 17)]
    for rec in want:
        rec["properties"]["time"] *= 1000
    assert [r["record"] for r in rows] == want


def test_migrate_legacy_pacific_records_lands_them_at_their_utc_instant(tmp_path: Path) -> None:
    """The records whose ``time`` is 7 h / 8 h behind Mixpanel's own UTC ingestion stamps
    come from legacy US/Pacific projects. Served by such a project's Export API and migrated
    with ``legacy_time``, each must reach Amplitude at its real UTC instant: at most two
    minutes before Mixpanel processed it (as the emulator's own wild test bounds it)."""
    prov = provenance(EXPORT)
    pacific = [
        line
        for n, line in enumerate(raw_lines(EXPORT), 1)
        if any(
            t.startswith(("time-is-7h-behind", "time-is-8h-behind")) for t in prov[n]["shape_tags"]
        )
    ]
    assert len(pacific) == 9
    by_wall_day: dict[date, list[bytes]] = {}
    for line in pacific:
        wall = datetime.fromtimestamp(orjson.loads(line)["properties"]["time"], UTC).date()
        by_wall_day.setdefault(wall, []).append(line)
    root = mixpanel_project(tmp_path / "mp", by_wall_day, "America/Los_Angeles", legacy=True)
    result = migrate_export(
        root,
        tmp_path / "work",
        tmp_path / "amp",
        min(by_wall_day),
        max(by_wall_day),
        **{"mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True},
    )
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    assert (result.totals["read"], result.totals["sent"]) == (9, 9)
    got = {
        (
            e["event_type"],
            e.get("user_id") or e.get("device_id"),
            e["event_properties"].get("item_name"),
        ): e
        for e in stored(tmp_path / "amp")
    }
    zone = ZoneInfo("America/Los_Angeles")
    for line in pacific:
        rec = orjson.loads(line)
        props = rec["properties"]
        event = got[(rec["event"], props["distinct_id"], props.get("item_name"))]
        wall = datetime.fromtimestamp(props["time"], UTC).replace(tzinfo=None)
        utc_ms = int(wall.replace(tzinfo=zone).timestamp()) * 1000
        assert event["time"] == utc_ms, rec["event"]
        assert 0 <= props["mp_processing_time_ms"] - event["time"] < 120_000, rec["event"]


# === mp2amp migrate with output_dir: the S3-import sink ======================================


def test_migrate_to_import_files_writes_every_real_event_once_in_time_order(tmp_path: Path) -> None:
    files = copy_inputs(tmp_path / "in", EXPORT, INGEST)
    out = tmp_path / "import"
    result = run_migrate(
        {
            "source.files": files,
            "amplitude.output_dir": str(out),
            "run.workdir": str(tmp_path / "work"),
        }
    )
    assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
    (data,) = sorted(out.glob("*.json.gz"))
    written = [orjson.loads(x) for x in gzip.decompress(data.read_bytes()).splitlines()]
    events, _ = transform_cli(files, tmp_path / "transform", "simplified")
    assert by_insert_id(written) == by_insert_id(events)
    assert [e["time"] for e in written] == sorted(e["time"] for e in written)
    assert len(dead_letters(tmp_path / "work")) == 3 + len(INGEST_DEAD)


# === the uploader and its classifier on every real HTTP V2 request body =====================


def httpv2_bodies() -> list[dict[str, Any]]:
    bodies = [orjson.loads(x) for x in raw_lines(HTTPV2)]
    assert len(bodies) == 6
    for body in bodies:  # the docs' and RudderStack's placeholder keys -> the emulator's
        assert body["api_key"] in ("YOUR_API_KEY", "am2")
        body["api_key"] = API_KEY
    return bodies


# line -> verdict kind, and for a "sort" the dead-letter reason of each event index.
# Line 6 (RudderStack Android) sends location_lat/lng as strings: §1.3 types them Float and
# §1.8 reports such fields per index (events_with_invalid_fields).
HTTPV2_VERDICT: dict[int, tuple[str, dict[int, str]]] = {
    **{n: ("accepted", {}) for n in (1, 2, 3, 4, 5)},
    6: ("sort", {0: "invalid_field"}),
}


def test_every_real_httpv2_body_gets_its_verdict_from_the_classifier(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    with amplitude(tmp_path / "amp") as url:
        for n, body in enumerate(httpv2_bodies(), 1):
            req = urllib.request.Request(
                url + "/2/httpapi",
                data=orjson.dumps(body),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, answer = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, exc.read()
            ids = [(e.get("device_id"), e.get("user_id")) for e in body["events"]]
            verdict = classify(status, answer, ids=ids)
            kind, dead = HTTPV2_VERDICT[n]
            assert (verdict.kind, {i: r for i, (r, _) in verdict.dead.items()}) == (kind, dead), n
            if dead:
                assert "location_lat" in verdict.dead[0][1]
                assert not verdict.throttled and not verdict.parked


class Observer:
    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.dead: list[tuple[tuple[str, int], str, str]] = []

    def on_batch_sent(self, batch_id: str, n: int) -> None:
        pass

    def on_batch_accepted(self, batch_id: str, events: list[Any]) -> None:
        self.accepted.extend(e.event for e in events)

    def on_dead_letter(
        self, event: dict[str, Any], origin: tuple[str, int], reason: str, message: str
    ) -> None:
        self.dead.append((origin, reason, message))

    def on_parked(
        self, event: dict[str, Any], origin: tuple[str, int], reason: str, batch_id: str
    ) -> None:
        raise AssertionError(f"parked {origin}")


@pytest.mark.parametrize("endpoint", ["httpapi", "batch"])
@pytest.mark.parametrize("together", [False, True], ids=["one-request-each", "one-request"])
def test_every_real_httpv2_event_through_the_uploader(
    tmp_path: Path, endpoint: str, together: bool
) -> None:
    """Each real event submitted with its origin (file, line): the valid ones stored exactly
    as sent, the one with string coordinates dead-lettered ``invalid_field`` naming its file
    and line, whether it shares a request with the others or not."""
    bodies = httpv2_bodies()
    observer = Observer()
    dlq = DeadLetterFile(tmp_path / "dead.jsonl")

    async def main(url: str) -> Any:
        settings = UploadSettings(
            api_key=API_KEY,
            api_host=url,
            endpoint=endpoint,
            concurrency=1 if together else 4,
            **FAST,
        )
        async with Uploader(settings, observer=observer, dead_letters=dlq) as up:
            for n, body in enumerate(bodies, 1):
                for event in body["events"]:
                    await up.submit(event, (HTTPV2, n), batch_key="all" if together else f"l{n}")
            return await up.close()

    with amplitude(tmp_path / "amp") as url:
        report = asyncio.run(main(url))
    dlq.close()
    assert (report.submitted, report.accepted, dict(report.dead_lettered)) == (
        6,
        5,
        {"invalid_field": 1},
    )
    assert [(o, r) for o, r, _ in observer.dead] == [((HTTPV2, 6), "invalid_field")]
    assert "location_lat" in observer.dead[0][2]
    sent = [e for body in bodies[:5] for e in body["events"]]
    assert sorted(map(orjson.dumps, observer.accepted)) == sorted(map(orjson.dumps, sent))
    got = stored(tmp_path / "amp")
    assert len(got) == 5
    for event in sent:  # stored exactly as sent (time 0 and session_id -1 included)
        (match,) = [
            g
            for g in got
            if g["event_type"] == event["event_type"] and g.get("user_id") == event.get("user_id")
        ]
        assert {k: match.get(k) for k in event} == event


# === the S3-import sink on every real HTTP V2 event ==========================================

# reference §1.3: the event table and the official Python SDK's wire names
HTTPV2_FIELDS = {
    "user_id",
    "device_id",
    "event_type",
    "time",
    "event_properties",
    "user_properties",
    "groups",
    "group_properties",
    "$skip_user_properties_sync",
    "user_agent",
    "app_version",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "carrier",
    "country",
    "region",
    "city",
    "dma",
    "language",
    "price",
    "quantity",
    "revenue",
    "productId",
    "revenueType",
    "currency",
    "location_lat",
    "location_lng",
    "ip",
    "idfa",
    "idfv",
    "adid",
    "android_id",
    "android_app_set_id",
    "event_id",
    "session_id",
    "insert_id",
    "plan",
    "ingestion_metadata",
    "partner_id",
    "library",
    "version_name",
}


def sink_all(tmp_path: Path, events: list[dict[str, Any]]) -> tuple[list[bytes], dict[str, Any]]:
    out = tmp_path / "import"
    sink = S3ImportSink(str(out), run_id="wild", staging_dir=tmp_path)
    for n, event in enumerate(events, 1):
        assert sink.write(event, (HTTPV2, n))
    report = sink.close()
    assert report.events == len(events) and report.files_in_time_order
    lines = [
        x
        for f in sorted(out.glob("wild-*.json.gz"))
        for x in gzip.decompress(f.read_bytes()).splitlines()
    ]
    return lines, orjson.loads((out / CONVERTER_NAME).read_bytes())


def test_s3_sink_writes_every_real_httpv2_event_once_in_time_order(tmp_path: Path) -> None:
    events = [e for body in httpv2_bodies() for e in body["events"]]
    lines, _ = sink_all(tmp_path, events)
    assert sorted(lines) == sorted(orjson.dumps(e) for e in events)
    assert [orjson.loads(x)["time"] for x in lines] == sorted(e["time"] for e in events)


def test_s3_converter_maps_every_field_of_the_real_httpv2_events(tmp_path: Path) -> None:
    events = [e for body in httpv2_bodies() for e in body["events"]]
    _, config = sink_all(tmp_path, events)
    mapped = set(config["converterConfig"]["convertToAmplitudeFunc"])
    # the documented ones only (RudderStack's extra "app_name" is no Amplitude field)
    present = {k for e in events for k in e} & HTTPV2_FIELDS
    assert present - mapped == set()


def test_s3_converter_keeps_the_currency_the_transform_emits_for_a_real_record(
    tmp_path: Path,
) -> None:
    # the real Adobe import-API record (line 1, item_price "800.00"), with a currency added
    record = orjson.loads(raw_lines(EXPORT)[0])
    record["properties"]["currency"] = "eur"
    transformer = Transformer(
        TransformSettings(revenue=RevenueSettings(price="item_price", currency="currency"))
    )
    event = transformer.event(record, Resolved("test@test.com", None))
    assert isinstance(event, dict) and event["currency"] == "EUR" and event["price"] == 800.0
    lines, config = sink_all(tmp_path, [event])
    assert orjson.loads(lines[0])["currency"] == "EUR"
    assert "currency" in config["converterConfig"]["convertToAmplitudeFunc"]


# === the read-back on every real Amplitude export line =======================================


def _export_zip(lines: list[bytes], start: str, end: str) -> bytes | None:
    """The Export API's answer for upload hours ``start``..``end`` (``YYYYMMDDTHH``): a zip
    of per-hour gzipped JSON-lines files (reference §5.1); None when no line is in range."""
    by_hour: dict[datetime, list[bytes]] = {}
    for line in lines:
        upload = datetime.strptime(orjson.loads(line)["server_upload_time"], "%Y-%m-%d %H:%M:%S.%f")
        by_hour.setdefault(upload.replace(minute=0, second=0, microsecond=0), []).append(line)
    first, last = (datetime.strptime(x, "%Y%m%dT%H") for x in (start, end))
    hours = sorted(h for h in by_hour if first <= h <= last)
    if not hours:
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for hour in hours:
            archive.writestr(
                f"187520/187520_{hour:%Y-%m-%d}_{hour.hour}#0.json.gz",
                gzip.compress(b"\n".join(by_hour[hour])),
            )
    return buf.getvalue()


@contextmanager
def export_server(lines: list[bytes]) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    token = "Basic " + base64.b64encode(f"{API_KEY}:{SECRET}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            import urllib.parse

            seen.append(self.path)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            body = _export_zip(lines, query["start"][0], query["end"][0])
            status = 401 if self.headers.get("Authorization") != token else (200 if body else 404)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if status == 200 and body else 0))
            self.end_headers()
            if status == 200 and body:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _real_export_counts() -> tuple[Counter[str], Counter[tuple[str, str]]]:
    rows = [orjson.loads(x) for x in raw_lines(AMP_EXPORT)]
    return (
        Counter(r["event_type"] for r in rows),
        Counter((r["event_type"], r["event_time"][:10]) for r in rows),
    )


def test_readback_counts_every_real_export_line(tmp_path: Path) -> None:
    lines = raw_lines(AMP_EXPORT)
    assert len(lines) == 6
    by_type_want, by_day_want = _real_export_counts()
    since = datetime(2020, 11, 24, 9, tzinfo=UTC)
    until = datetime(2025, 7, 17, 10, tzinfo=UTC)
    with export_server(lines) as (url, seen):
        by_type, by_day, total = readback.export_counts(url, API_KEY, SECRET, since, until)
    assert (by_type, by_day, total) == (by_type_want, by_day_want, 6)
    # 2020-11-24..2025-07-17 is asked at most 365 days at a time, each range once
    assert len(seen) == 5 and all(p.startswith("/api/2/export?start=") for p in seen)


def _ms(export_time: str) -> int:
    parsed = datetime.strptime(export_time, "%Y-%m-%d %H:%M:%S.%f")
    return calendar.timegm(parsed.timetuple()) * 1000 + parsed.microsecond // 1000


_KEPT = (
    "event_type",
    "user_id",
    "device_id",
    "event_properties",
    "user_properties",
    "groups",
    "session_id",
    "event_id",
    "platform",
    "os_name",
    "os_version",
    "country",
    "region",
    "city",
    "language",
    "library",
)


def test_readback_through_the_emulator_counts_every_real_export_line_on_its_event_day(
    tmp_path: Path,
) -> None:
    """The real export lines re-imported through /batch (as the emulator's wild test does),
    then read back through the emulator's Export API over the upload hours, and through
    segmentation on each event's own day."""
    import urllib.request

    rows = [orjson.loads(x) for x in raw_lines(AMP_EXPORT)]
    events = []
    for row in rows:
        event = {k: row[k] for k in _KEPT if row.get(k) is not None}
        event["user_id"] = row["user_id"]
        event.update(time=_ms(row["event_time"]), insert_id=row["$insert_id"])
        events.append(event)
    now = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    with amplitude(tmp_path / "amp", now=lambda: now.timestamp()) as url:
        req = urllib.request.Request(
            url + "/batch",
            method="POST",
            data=orjson.dumps({"api_key": API_KEY, "events": events}),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        since, until = readback.upload_hours(now, now + timedelta(minutes=1))
        by_type, by_day, total = readback.export_counts(url, API_KEY, SECRET, since, until)
        by_type_want, by_day_want = _real_export_counts()
        assert (by_type, by_day, total) == (by_type_want, by_day_want, 6)
        for (etype, day), n in by_day_want.items():
            d = date.fromisoformat(day)
            assert readback.segmentation_totals(url, API_KEY, SECRET, etype, d, d) == {day: n}
