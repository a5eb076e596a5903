"""Geo: country names as Amplitude shows them; all four location fields together."""

from __future__ import annotations

from typing import Any

from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings
from mp2amp.transform.geo import COUNTRY_NAMES, country_name
from mp2amp.transform.privacy import PrivacyRules


def run(props: dict[str, Any], **settings: Any) -> dict[str, Any]:
    record = {"event": "e", "properties": {"time": 1700000000, **props}}
    out = Transformer(TransformSettings(**settings)).event(record, Resolved("user-1", None))
    assert isinstance(out, dict), out
    return out


def test_table_is_complete_iso_3166() -> None:
    assert len(COUNTRY_NAMES) == 250  # 249 ISO codes + XK
    assert all(len(code) == 2 and code.isupper() for code in COUNTRY_NAMES)
    assert len(set(COUNTRY_NAMES.values())) == len(COUNTRY_NAMES)


def test_names_match_amplitude_examples_and_maxmind_spelling() -> None:
    assert country_name("US") == "United States"
    assert country_name("IN") == "India"
    assert country_name("gb") == "United Kingdom"
    assert country_name("KR") == "South Korea"
    assert country_name("CD") == "DR Congo"
    assert country_name("XX") is None and country_name(1) is None


def test_all_four_location_fields_are_set_together() -> None:
    out = run({"mp_country_code": "US", "$city": "Meridian"})
    assert (out["country"], out["region"], out["city"], out["dma"]) == (
        "United States", None, "Meridian", None)
    assert "city" not in out["event_properties"]


def test_no_location_fields_without_geo() -> None:
    out = run({"plan": "pro"})
    assert not {"country", "region", "city", "dma"} & out.keys()


def test_unknown_country_code_is_kept_as_a_property() -> None:
    out = run({"mp_country_code": "EU", "$region": "Berlin"})
    assert out["country"] is None and out["region"] == "Berlin"
    assert out["event_properties"]["country_code"] == "EU"


def test_coordinates_only_as_a_pair() -> None:
    out = run({"$latitude": 44.3371, "$longitude": "-73.0918"})
    assert out["location_lat"] == 44.3371 and out["location_lng"] == -73.0918
    lone = run({"$latitude": 44.3371})
    assert "location_lat" not in lone and lone["event_properties"]["latitude"] == 44.3371
    bad = run({"$latitude": 144.0, "$longitude": 10.0})
    assert "location_lat" not in bad and bad["event_properties"]["latitude"] == 144.0


def test_ip_kept_or_dropped_and_never_a_flag_value() -> None:
    assert run({"ip": "203.0.113.9"})["ip"] == "203.0.113.9"
    dropped = run({"ip": "203.0.113.9"}, keep_ip=False)
    assert "ip" not in dropped and "ip" not in dropped["event_properties"]
    assert "ip" not in run({"ip": 0}) and "ip" not in run({"ip": "1"})
    assert "ip" not in run({"ip": "0.0.0.0"})
    strict = run({"ip": "203.0.113.9"}, privacy=PrivacyRules(keep_ip=False))
    assert "ip" not in strict  # the stricter of the two settings wins
    custom = run({"IP Address": "198.51.100.60"})  # a custom property stays custom
    assert custom["event_properties"]["IP Address"] == "198.51.100.60" and "ip" not in custom
