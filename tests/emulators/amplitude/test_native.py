"""The mypyc-compiled emulator ingestion path (``mp2amp.native``) is the pure-Python one.

The same requests go through validation, the throttle and the ID table here, with the
compiled modules every other test uses, and in a subprocess whose import system sees only
the ``.py`` files (``tools/pure_python.py``). Every answer (400 bodies with their failing
indices, per-ID counts, throttle verdicts, Amplitude IDs) must be the same bytes. The
requests: every wild Amplitude request and export event, the events ``mp2amp transform``
makes of a dirty generated project, and such events with each field set to odd values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import mp2amp.emulators.amplitude.validate
from mp2amp.cli import app
from mp2amp.generate import GenerateConfig, generate_project

ROOT = Path(__file__).resolve().parents[3]
WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = ROOT.parent / "shared" / "fixtures" / "wild"
COMPILED = str(mp2amp.emulators.amplitude.validate.__file__).endswith(
    sysconfig.get_config_var("EXT_SUFFIX") or ".so")

ODD: list[Any] = ["", "x" * 1100, "caf\u00e9", 1, 1.5, True, None, [1, "a"], {"k": 1},
                  {"d": {"d": {"d": 1}}}, "null", "0", "abc", -1, 2**70]
FIELDS = ("event_type", "user_id", "device_id", "time", "insert_id", "session_id",
          "event_properties", "user_properties", "groups", "platform", "price", "quantity",
          "revenue", "location_lat", "ip")

# answers() of the requests in argv[3], from the .py sources (tools/pure_python.py)
_PURE = """
import importlib.util, sys
sys.path.insert(0, sys.argv[1])
import pure_python
pure_python.install()
spec = importlib.util.spec_from_file_location("native_check", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import mp2amp.emulators.amplitude.validate as validate
assert validate.__file__.endswith(".py"), validate.__file__
sys.stdout.buffer.write(module.answers_json(open(sys.argv[3], "rb").read()))
"""


def answers_json(requests_json: bytes) -> bytes:
    """What validation, the throttle and the ID table say of each request, in order."""
    from mp2amp.emulators.amplitude.ids import Identities
    from mp2amp.emulators.amplitude.throttle import Limiter
    from mp2amp.emulators.amplitude.validate import validate_events

    ids, limiter, out = Identities(), Limiter(), []
    for n, request in enumerate(json.loads(requests_json)):  # json: 2**70 is a value here
        per_device: dict[str, int] = {}
        per_user: dict[str, int] = {}
        result = validate_events(request["events"], request["min_id_length"],
                                 (per_device, per_user))
        answer: list[Any] = [result.ok, sorted(result.failing_indices()), result.error_body(),
                             per_device, per_user]
        if result.ok:
            verdict = limiter.admit(per_device, per_user, 1_700_000_000.0 + n / 4, 30, 10**6)
            answer.append([verdict.ok, verdict.throttled_devices, verdict.throttled_users])
            answer.append([ids.assign(e.get("user_id") or None, e.get("device_id") or None)
                           for e in request["events"]])
        out.append(answer)
    return orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS)


def _requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    requests = []
    for line in (WILD / "amplitude-httpv2-requests.jsonl").read_bytes().splitlines():
        payload = orjson.loads(line)
        requests.append({"events": payload.get("events", []),
                         "min_id_length": (payload.get("options") or {}).get("min_id_length", 5)})
    exported = [orjson.loads(line) for line in
                (WILD / "amplitude-export-events.jsonl").read_bytes().splitlines()]
    requests.append({"events": exported, "min_id_length": 5})
    generate_project(GenerateConfig(out=tmp_path / "project", users=300, days=3, seed=4,
                                    dirty=0.05))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["transform", "project/events", "--out", "out.jsonl"])
    assert result.exit_code == 0, result.stdout
    events = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    for start in range(0, len(events), 100):
        requests.append({"events": events[start:start + 100], "min_id_length": 1})
    for i, field in enumerate(FIELDS):
        odd = [{**events[(i * len(ODD) + k) % len(events)], field: value}
               for k, value in enumerate(ODD)]
        requests.append({"events": odd, "min_id_length": 5})
        requests.append({"events": [*odd, 7, "not an event"], "min_id_length": 3})
    return requests


@pytest.mark.skipif(not COMPILED, reason="no compiled build: the emulator runs as pure "
                    "Python (tools/compile_native.py found no C compiler)")
def test_compiled_and_pure_python_ingestion_answer_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = _requests(tmp_path, monkeypatch)
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(requests), encoding="utf-8")
    compiled = answers_json(path.read_bytes())
    pure = subprocess.run([sys.executable, "-c", _PURE, str(ROOT / "tools"), __file__,
                           str(path)], capture_output=True, timeout=300)
    assert pure.returncode == 0, pure.stderr.decode()
    parsed = orjson.loads(compiled)
    assert len(parsed) == len(requests)
    # not vacuous: accepted requests with IDs assigned, and refused ones with 400 bodies
    assert sum(1 for a in parsed if a[0]) > 40 and sum(1 for a in parsed if not a[0]) > 25
    assert pure.stdout == compiled
