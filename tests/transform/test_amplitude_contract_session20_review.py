"""Session 20 review: the events ``mp2amp transform`` writes against Amplitude's field
contract (reference amplitude-api.md section 1, as the Amplitude emulator's validator
enforces it) and against Mixpanel's data (wild fixture records).

Driven through the real CLI (``mp2amp transform`` on small JSONL files, exact output).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.emulators.amplitude.validate import validate_events

WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def transform(tmp_path: Path, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    result = invoke("transform", str(data), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return events, json.loads(result.stdout)


def rec(name: str, **props: Any) -> dict[str, Any]:
    return {"event": name, "properties": {"time": 1704164645, "distinct_id": "user-12345",
                                          **props}}


def test_wild_export_records_pass_amplitudes_field_contract(tmp_path: Path) -> None:
    """Guard: every event the wild Mixpanel export records give is one the emulator's
    /batch validator accepts (with the loader's min_id_length = 1), and the summary adds up
    to the lines written."""
    data = WILD / "mixpanel-export-events.jsonl"
    out = tmp_path / "out.jsonl"
    result = invoke("transform", str(data), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads(result.stdout)["summary"]
    assert summary["events_out"] == len(events) == 17
    rejects = (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()
    assert sum(summary["rejected"].values()) == len(rejects)
    check = validate_events(events, 1)
    assert check.ok, check.error_body()
    by_platform = {e.get("platform") for e in events}
    assert {"iOS", "Android", "Web"} <= by_platform


def test_numeric_default_properties_become_one_text_per_number(tmp_path: Path) -> None:
    # JSON numbers 2 and 2.0 are one value in Mixpanel (a double, shown "2"); the README's
    # rule for numbers made text (IDs, group names, product ids, the plan's type: string)
    # is JavaScript's Number::toString, and docs/mapping.md promises "numbers as their
    # decimal text" for $app_version_string, $carrier, $manufacturer, $model, $brand.
    events, _ = transform(tmp_path, [
        rec("a", **{"mp_lib": "swift", "$os": "iOS", "$app_version_string": 2,
                    "$carrier": 310, "$model": 15}),
        rec("b", **{"mp_lib": "swift", "$os": "iOS", "$app_version_string": 2.0,
                    "$carrier": 310.0, "$model": 15.0}),
        rec("c", **{"mp_lib": "android", "$os": "Android", "$brand": 1e16,
                    "$manufacturer": 1e16}),
    ])
    by_name = {e["event_type"]: e for e in events}
    a, b, c = by_name["a"], by_name["b"], by_name["c"]
    assert (a["app_version"], a["carrier"], a["device_model"]) == ("2", "310", "15")
    assert (b["app_version"], b["carrier"], b["device_model"]) == ("2", "310", "15")
    assert c["device_brand"] == c["device_manufacturer"] == "10000000000000000"
