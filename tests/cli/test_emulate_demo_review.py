"""Review: `mp2amp emulate amplitude`, `mp2amp emulate mixpanel` and `mp2amp demo` run as a
user runs them (real processes, loopback ports, small demos)."""

from __future__ import annotations

import base64
import gzip
import io
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
for _var in (
    "AMPLITUDE_API_KEY",
    "MIXPANEL_SECRET",
    "MIXPANEL_SERVICE_ACCOUNT",
    "MP2AMP_DEMO_WORKDIR",
):
    ENV.pop(_var, None)
KEY, SECRET = "rv-key", "rv-secret"


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mp2amp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
    )


def _first_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The first stdout line, or "" when the process ends (or stays silent) first."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return ""
        return proc.stdout.readline().strip()
    finally:
        sel.close()


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def _refused(args: list[str], timeout: float = 30.0) -> tuple[int | None, str, str]:
    """Run a command that should refuse to start: (exit code, first stdout line, stderr).
    A process that starts serving instead is stopped and reported with exit code None."""
    proc = _spawn(*args)
    line = _first_line(proc, timeout)
    if line.startswith("http://"):
        _stop(proc)
        return None, line, ""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, line + out, err


def _post_json(url: str, doc: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=orjson.dumps(doc), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, orjson.loads(res.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=30
        ) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _export(url: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    params = urllib.parse.urlencode(
        {
            "start": (now - timedelta(hours=2)).strftime("%Y%m%dT%H"),
            "end": (now + timedelta(hours=1)).strftime("%Y%m%dT%H"),
        }
    )
    status, body = _get(f"{url}/api/2/export?{params}", (KEY, SECRET))
    if status == 404:
        return []
    assert status == 200, body
    out = []
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in archive.namelist():
            for line in gzip.decompress(archive.read(name)).splitlines():
                if line.strip():
                    out.append(orjson.loads(line))
    return out


def _amp(data: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = _spawn(
        "emulate",
        "amplitude",
        "--port",
        "0",
        "--data",
        str(data),
        "--api-key",
        KEY,
        "--secret-key",
        SECRET,
        *extra,
    )
    url = _first_line(proc)
    if not url.startswith("http://127.0.0.1:"):
        _, err = _stop(proc)
        raise AssertionError(f"no URL on the first line: {url!r}; stderr: {err}")
    return proc, url


def _ev(etype: str, user: str, device: str, insert_id: str, **more: Any) -> dict[str, Any]:
    return {
        "event_type": etype,
        "user_id": user,
        "device_id": device,
        "insert_id": insert_id,
        "time": int(time.time() * 1000),
        **more,
    }


# --- emulate amplitude ------------------------------------------------------------


def test_amplitude_state_survives_a_sigterm_restart(tmp_path: Path) -> None:
    data = tmp_path / "amp"
    proc, url = _amp(data)
    try:
        status, body = _post_json(
            url + "/batch",
            {
                "api_key": KEY,
                "events": [
                    _ev(
                        "Opened",
                        "rv-user-1",
                        "rv-device-1",
                        "ins-1",
                        user_properties={"plan": "pro"},
                    ),
                    _ev("Opened", "rv-user-2", "rv-device-2", "ins-2"),
                ],
            },
        )
        assert status == 200, body
        before = {e["user_id"]: e["amplitude_id"] for e in _export(url)}
    finally:
        code, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert "Traceback" not in err
    assert (data / "state.json").is_file()

    proc, url2 = _amp(data)
    try:
        events = _export(url2)
        assert sorted(e["insert_id"] if "insert_id" in e else e["$insert_id"] for e in events) == [
            "ins-1",
            "ins-2",
        ]
        # a repeated insert_id is still a duplicate after the restart (dedup kept)
        status, body = _post_json(
            url2 + "/batch",
            {
                "api_key": KEY,
                "events": [
                    _ev("Opened", "rv-user-1", "rv-device-1", "ins-1"),
                    _ev("Clicked", "rv-user-1", "rv-device-1", "ins-3"),
                    _ev("Clicked", "rv-user-3", "rv-device-3", "ins-4"),
                ],
            },
        )
        assert status == 200, body
        after = _export(url2)
        stats = orjson.loads(_get(url2 + "/_emulator/stats")[1])
    finally:
        code, err = _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert len(after) == 4
    assert stats["events_stored"] == 4 and stats["duplicates_ignored"] == 1
    clicked = {e["user_id"]: e for e in after if e["event_type"] == "Clicked"}
    assert clicked["rv-user-1"]["amplitude_id"] == before["rv-user-1"]  # same person
    assert clicked["rv-user-3"]["amplitude_id"] not in before.values()  # no ID reused
    assert clicked["rv-user-1"]["user_properties"].get("plan") == "pro"


def test_amplitude_ids_survive_a_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "amp"
    proc, url = _amp(data)
    try:
        assert (
            _post_json(
                url + "/batch",
                {"api_key": KEY, "events": [_ev("Opened", "k-user-1", "k-device-1", "k-1")]},
            )[0]
            == 200
        )
        first = _export(url)[0]["amplitude_id"]
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    proc, url = _amp(data)
    try:
        assert (
            _post_json(
                url + "/batch",
                {
                    "api_key": KEY,
                    "events": [
                        _ev("Opened", "k-user-1", "k-device-1", "k-2"),
                        _ev("Opened", "k-user-2", "k-device-2", "k-3"),
                    ],
                },
            )[0]
            == 200
        )
        ids = {
            e["insert_id"] if "insert_id" in e else e["$insert_id"]: e["amplitude_id"]
            for e in _export(url)
        }
    finally:
        _stop(proc)
    assert ids["k-1"] == ids["k-2"] == first
    assert ids["k-3"] != first


def test_amplitude_fail_rate_one_answers_5xx_and_stores_nothing(tmp_path: Path) -> None:
    proc, url = _amp(tmp_path / "amp", "--fail-rate", "1")
    try:
        status, _ = _post_json(
            url + "/batch",
            {"api_key": KEY, "events": [_ev("Opened", "f-user-1", "f-device-1", "f-1")]},
        )
        stats = orjson.loads(_get(url + "/_emulator/stats")[1])
    finally:
        _stop(proc)
    assert status in (500, 502, 503, 504)
    assert stats["events_stored"] == 0


def test_amplitude_drop_rate_and_latency_take_effect(tmp_path: Path) -> None:
    proc, url = _amp(tmp_path / "amp", "--drop-after-ingest-rate", "1", "--latency-ms", "400")
    try:
        t0 = time.monotonic()
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            _post_json(
                url + "/batch",
                {"api_key": KEY, "events": [_ev("Opened", "d-user-1", "d-device-1", "d-1")]},
            )
        took = time.monotonic() - t0
        stats = orjson.loads(_get(url + "/_emulator/stats")[1])
    finally:
        _stop(proc)
    assert took >= 0.35
    assert stats["events_stored"] == 1  # stored, then the connection was dropped
    assert stats["requests"].get("dropped") == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--fail-rate", "-0.1"], "fail_rate"),
        (["--drop-after-ingest-rate", "1.5"], "drop_after_ingest_rate"),
        (["--latency-ms", "-5"], "latency_ms"),
        (["--timezone", "Europe/Atlantis"], "Europe/Atlantis"),
        (["--daily-quota", "0"], "daily_quota"),
    ],
)
def test_amplitude_bad_option_values_exit_2_naming_them(
    tmp_path: Path, args: list[str], named: str
) -> None:
    code, _, err = _refused(
        ["emulate", "amplitude", "--port", "0", "--data", str(tmp_path / "amp"), *args]
    )
    assert code == 2, err
    assert named in err and "Traceback" not in err


def test_amplitude_data_that_is_a_file_or_unwritable_exits_2(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for where in (afile, afile / "sub"):
        code, _, err = _refused(["emulate", "amplitude", "--port", "0", "--data", str(where)])
        assert code == 2, err
        assert str(where) in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["amplitude", "mixpanel"])
def test_port_out_of_range_is_refused_without_a_traceback(tmp_path: Path, command: str) -> None:
    data = tmp_path / "d"
    data.mkdir()
    code, _, err = _refused(["emulate", command, "--port", "70000", "--data", str(data)])
    assert "Traceback" not in err, err[-300:]
    assert code == 2 and "--port" in err


# --- emulate mixpanel -------------------------------------------------------------


@pytest.fixture(scope="module")
def mp_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mp") / "project"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mp2amp",
            "generate",
            "--out",
            str(out),
            "--users",
            "5",
            "--days",
            "2",
        ],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=120,
    )
    return out


def test_mixpanel_busy_port_is_a_clear_error(mp_project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = _refused(
            ["emulate", "mixpanel", "--data", str(mp_project), "--port", str(port)]
        )
    assert "Traceback" not in err, err[-300:]
    assert code == 2 and str(port) in err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_mixpanel_nonpositive_export_rate_limit_is_refused(mp_project: Path, value: str) -> None:
    proc = _spawn(
        "emulate",
        "mixpanel",
        "--data",
        str(mp_project),
        "--port",
        "0",
        "--export-rate-limit",
        value,
    )
    url = _first_line(proc)
    answer = None
    if url.startswith("http://"):
        meta = orjson.loads((mp_project / "project.json").read_bytes())
        params = urllib.parse.urlencode(
            {"project_id": meta["project_id"], "from_date": meta["start"], "to_date": meta["start"]}
        )
        answer = _get(f"{url}/api/2.0/export?{params}", ("u", "s"))
    code, err = _stop(proc)
    assert answer is None, f"started and answered the export with {answer[0]}"
    assert code == 2 and "export-rate-limit" in err.replace("_", "-")


def test_mixpanel_unwritable_received_folder_is_a_clear_error(
    mp_project: Path, tmp_path: Path
) -> None:
    data = tmp_path / "proj"
    data.mkdir()
    (data / "project.json").write_bytes((mp_project / "project.json").read_bytes())
    (data / "received").write_text("not a folder")
    proc = _spawn("emulate", "mixpanel", "--data", str(data), "--port", "0")
    url = _first_line(proc)
    answer = None
    if url.startswith("http://"):
        body = urllib.parse.urlencode(
            {
                "data": orjson.dumps(
                    {"event": "x", "properties": {"time": int(time.time())}}
                ).decode()
            }
        ).encode()
        try:
            with urllib.request.urlopen(url + "/track", data=body, timeout=30) as res:
                answer = res.status
        except urllib.error.HTTPError as exc:
            answer = exc.code
    code, err = _stop(proc)
    assert answer is None, f"started; /track answered {answer}"
    assert code == 2 and "received" in err


def test_mixpanel_sigterm_stops_with_exit_0_and_bad_values_exit_2(
    mp_project: Path, tmp_path: Path
) -> None:
    proc = _spawn("emulate", "mixpanel", "--data", str(mp_project), "--port", "0")
    assert _first_line(proc).startswith("http://127.0.0.1:")
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 0 and "Traceback" not in err
    for args, named in (
        (["--fail-rate", "-0.5"], "fail_rate"),
        (["--fail-rate", "1.01"], "fail_rate"),
        (["--timezone", "Mars/Olympus"], "Mars/Olympus"),
    ):
        code2, _, err2 = _refused(
            ["emulate", "mixpanel", "--data", str(mp_project), "--port", "0", *args]
        )
        assert code2 == 2 and named in err2 and "Traceback" not in err2, (args, err2)
    afile = tmp_path / "afile"
    afile.write_text("x")
    code3, _, err3 = _refused(["emulate", "mixpanel", "--data", str(afile), "--port", "0"])
    assert code3 == 2 and "not a directory" in err3 and "Traceback" not in err3


def test_mixpanel_fail_rate_one_faults_the_export(mp_project: Path) -> None:
    meta = orjson.loads((mp_project / "project.json").read_bytes())
    params = urllib.parse.urlencode(
        {"project_id": meta["project_id"], "from_date": meta["start"], "to_date": meta["start"]}
    )
    bodies = {}
    for rate in ("0", "1"):
        proc = _spawn(
            "emulate",
            "mixpanel",
            "--data",
            str(mp_project),
            "--port",
            "0",
            "--fail-rate",
            rate,
            "--seed",
            "3",
        )
        url = _first_line(proc)
        try:
            try:
                bodies[rate] = _get(f"{url}/api/2.0/export?{params}", ("u", "s"))
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                bodies[rate] = (-1, repr(exc).encode())
        finally:
            _stop(proc)
    assert bodies["0"][0] == 200 and bodies["0"][1].count(b"\n") > 5
    assert bodies["1"] != bodies["0"]


# --- demo -------------------------------------------------------------------------


def _demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mp2amp", "demo", "--events", "1000", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=300,
    )


DOCUMENTED_KEYS = {
    "ok",
    "workdir",
    "workdir_kept",
    "seconds",
    "generated",
    "migration",
    "event_types",
    "daily_mismatches",
    "mixpanel_unreadable",  # records with no event name (cut lines): no row
    "events",  # the per-event check (pipeline/proof.py)
    "revenue",  # total revenue, expected vs Amplitude (pipeline/proof_revenue.py)
}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--events", "999"], "--events"),
        (["--fail-rate", "0.95"], "--fail-rate"),
        (["--drop-rate", "-0.1"], "--drop-rate"),
    ],
)
def test_demo_bad_values_exit_2_naming_the_option(args: list[str], named: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mp2amp", "demo", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert res.returncode == 2
    assert named in res.stderr and "Traceback" not in res.stderr


def test_demo_workdir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = _demo("--workdir", str(afile), "--json")
    assert res.returncode == 2
    doc = orjson.loads(res.stdout)  # stdout is one JSON object: the error
    assert doc["exit_code"] == 2
    assert (doc["error"]["kind"], doc["error"]["type"]) == ("terminal", "InputError")
    assert "it is a file" in res.stderr and "Traceback" not in res.stderr


def test_demo_kept_workdir_resumes_and_a_tampered_amplitude_fails_it(tmp_path: Path) -> None:
    from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
    from mp2amp.pipeline import demo

    work = tmp_path / "demo"
    first = _demo("--workdir", str(work), "--json", "--fail-rate", "0.2", "--drop-rate", "0.1")
    assert first.returncode == 0, first.stderr
    doc = orjson.loads(first.stdout)  # stdout is the JSON document alone
    assert set(doc) == DOCUMENTED_KEYS
    assert doc["ok"] is True and doc["workdir_kept"] is True
    assert doc["workdir"] == str(work) and doc["daily_mismatches"] == []
    assert all(r["ok"] for r in doc["event_types"]) and doc["event_types"]
    assert doc["migration"]["totals"]["balanced"] is True
    assert doc["generated"]["legacy_time"] is False
    for sub in ("mixpanel-project", "amplitude-data", "work/ledger.sqlite"):
        assert (work / sub).exists(), sub

    again = _demo("--workdir", str(work), "--json")
    assert again.returncode == 0, again.stderr
    doc2 = orjson.loads(again.stdout)
    assert doc2["migration"]["resumed"] is True
    assert [(r["event_type"], r["amplitude_export"]) for r in doc2["event_types"]] == [
        (r["event_type"], r["amplitude_export"]) for r in doc["event_types"]
    ]

    # tamper with Amplitude: one more event of a migrated type, on a migrated day
    row = max(doc["event_types"], key=lambda r: r["expected"])
    emu = AmplitudeEmulator(
        AmplitudeConfig(
            data_dir=work / "amplitude-data", api_key=demo._AMP_KEY, secret_key=demo._AMP_SECRET
        )
    )
    when = int(datetime(2024, 3, 5, 12, tzinfo=UTC).timestamp() * 1000)
    with emu.running() as url:
        status, body = _post_json(
            url + "/batch",
            {
                "api_key": demo._AMP_KEY,
                "events": [
                    {
                        "event_type": row["event_type"],
                        "user_id": "tamper-user-1",
                        "insert_id": "tamper-1",
                        "time": when,
                    }
                ],
            },
        )
    assert status == 200, body
    bad = _demo("--workdir", str(work), "--json")
    assert bad.returncode == 1, bad.stderr
    doc3 = orjson.loads(bad.stdout)
    assert doc3["ok"] is False and doc3["daily_mismatches"]
    wrong = [r for r in doc3["event_types"] if not r["ok"]]
    assert [r["event_type"] for r in wrong] == [row["event_type"]]
    assert wrong[0]["amplitude_export"] == row["expected"] + 1

    # other options on the kept folder: refused, naming the option
    other = _demo("--workdir", str(work), "--legacy-time")
    assert other.returncode == 2 and "--legacy-time" in other.stderr
    assert "Traceback" not in other.stderr


def test_demo_legacy_time_and_the_temporary_folder(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    res = _demo("--legacy-time", "--json", env={**ENV, "TMPDIR": str(tmp)})
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["generated"]["legacy_time"] is True and doc["ok"] is True
    assert doc["workdir_kept"] is False and not Path(doc["workdir"]).exists()
    assert list(tmp.iterdir()) == []


def test_demo_text_output_says_ok_and_names_the_folder(tmp_path: Path) -> None:
    res = _demo("--workdir", str(tmp_path / "w"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "demo OK" in res.stdout and str(tmp_path / "w") in res.stdout
    assert "holds" in res.stdout and "Traceback" not in res.stderr
