"""Every real Mixpanel record in the wild fixtures goes through the transform.

Each record ends in exactly one expected outcome; every emitted event passes the Amplitude
emulator's validator. The expectations below are per record (file, line, index in batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.emulators.amplitude.validate import validate_events
from mp2amp.errors import Rejection
from mp2amp.models import Resolved, Skip
from mp2amp.transform import Transformer, TransformSettings

WILD = Path("/work/shared/fixtures/wild")
if not WILD.exists():  # a checkout outside the team machine
    WILD = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "wild"
FILES = ("mixpanel-export-events.jsonl", "mixpanel-ingestion-payloads.jsonl")
IDS = Resolved("wild-user-1", "wild-device-1")

# Records that are not events (or not sendable) and the outcome they must get.
EXPECTED: dict[tuple[str, int], str] = {
    ("mixpanel-export-events.jsonl", 20): "skip:hotshard_record",
    **{("mixpanel-ingestion-payloads.jsonl", n): "reject:not_an_event"
       for n in (1, 3, 4, 5, 6, 17, 21, 23, 25, 26, 27)},
    ("mixpanel-ingestion-payloads.jsonl", 12): "reject:missing_time",
    ("mixpanel-ingestion-payloads.jsonl", 13): "reject:missing_time",
    **{("mixpanel-ingestion-payloads.jsonl", n): "skip:identity_record"
       for n in (14, 15, 18, 19, 20, 22, 24)},
    ("mixpanel-ingestion-payloads.jsonl", 16): "reject:time_out_of_range",  # python test 1000.1
}


def wild_records() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for name in FILES:
        for number, line in enumerate((WILD / name).read_text().splitlines(), 1):
            parsed = orjson.loads(line)
            for item in parsed if isinstance(parsed, list) else [parsed]:
                out.append((name, number, item))
    return out


RECORDS = wild_records()
SETTINGS = {
    "utc": TransformSettings(),
    "legacy-pacific": TransformSettings(legacy_time=True, timezone="America/Los_Angeles",
                                        group_keys=("company",), keep_ip=False),
}


def outcome(out: Any) -> str:
    if isinstance(out, Rejection):
        return f"reject:{out.reason}"
    if isinstance(out, Skip):
        return f"skip:{out.rule}"
    return "event"


@pytest.mark.parametrize("mode", sorted(SETTINGS))
def test_every_wild_record_has_its_expected_outcome_and_events_validate(mode: str) -> None:
    transformer = Transformer(SETTINGS[mode])
    events = []
    assert len(RECORDS) >= 49
    for name, number, record in RECORDS:
        out = transformer.event(record, IDS)
        assert outcome(out) == EXPECTED.get((name, number), "event"), (name, number, out)
        if isinstance(out, dict):
            events.append(out)
            assert transformer.event(record, IDS) == out
    result = validate_events(events, 1)
    assert result.ok, result.error_body()
    assert len(events) == len(RECORDS) - len(EXPECTED) == 27


def by_event(name: str) -> list[dict[str, Any]]:
    t = Transformer(SETTINGS["legacy-pacific"])
    outs = [t.event(r, IDS) for _, _, r in RECORDS if r.get("event") == name]
    return [o for o in outs if isinstance(o, dict)]


def test_legacy_times_land_just_before_mixpanel_ingestion() -> None:
    # Records tagged "time-is-7h/8h-behind-ingest-timestamp": corrected to UTC they sit
    # seconds before Mixpanel's UTC processing time, in summer (PDT) and winter (PST).
    for _, _, record in RECORDS:
        props = record.get("properties", {})
        processed = props.get("mp_processing_time_ms")
        if record.get("event") in ("Accept user agreement", "Items purchased") and processed:
            out = Transformer(SETTINGS["legacy-pacific"]).event(record, IDS)
            assert isinstance(out, dict)
            assert 0 <= processed - out["time"] < 3_600_000


def test_ios_swift_record_maps_like_amplitude_swift() -> None:
    out = by_event("Alert opened")[0]
    assert (out["platform"], out["os_name"], out["os_version"]) == ("iOS", "ios", "14.2")
    assert (out["device_model"], out["carrier"], out["app_version"]) == (
        "iPhone10,2", "Verizon", "1.12.0")
    assert (out["country"], out["region"], out["city"], out["dma"]) == (
        "United States", "California", "Sacramento", None)
    assert out["event_properties"]["Screen deep-linked"] == "filter"


def test_react_native_android_record() -> None:
    out = by_event("Install")[0]
    assert (out["platform"], out["device_brand"], out["device_model"]) == (
        "Android", "samsung", "SM-A266B")
    assert out["country"] == "United Kingdom" and out["app_version"] == "5.2.5"
    assert "$is_reshuffled" not in out["event_properties"]


def test_segment_wordpress_web_record() -> None:
    out = by_event("Viewed E-commerce Page")[0]
    assert (out["platform"], out["os_name"], out["os_version"]) == ("Web", "Chrome", "91")
    assert out["event_properties"]["[Amplitude] Page Domain"] == "unblockdata.com"


def test_stringified_json_and_nesting_are_kept_as_sent() -> None:
    out = by_event("custom_event")[0]
    props = out["event_properties"]
    assert props["area"] == '{"displayText":"Malab, Nuh, Mewat","id":1189005}'
    assert props["nested"] == {"level1": {"level2": "value"}} and props["count"] == 42


def test_shared_insert_ids_stay_distinct_events() -> None:
    ids = [o["insert_id"] for name in ("Items sold", "Sign off", "Item Purchased")
           for o in by_event(name)]
    assert len(ids) == len(set(ids)) == 7


def test_ip_is_dropped_when_privacy_says_so() -> None:
    out = by_event("Played Song")[0]
    assert "ip" not in out and "ip" not in out["event_properties"]
