"""The official ``mixpanel`` Python SDK, pointed at the emulator, lands track/people/import calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mp2amp.emulators.mixpanel import read_received

mixpanel = pytest.importorskip("mixpanel")

TOKEN = "tok-123"


def consumer_kwargs(url: str) -> dict[str, Any]:
    # the SDK builds https:// URLs from api_host; the per-endpoint URLs reach plain http
    return {"events_url": f"{url}/track", "people_url": f"{url}/engage", "groups_url": f"{url}/groups",
            "import_url": f"{url}/import", "request_timeout": 5, "retry_limit": 0}


def test_consumer_track_people_groups_import(kit: Any, tmp_path: Path, serve: Any) -> None:
    data = kit.build_project(tmp_path / "p")
    creds = mixpanel.ServiceAccountCredentials("sa-user", "sa-secret", "4242")
    old = int(time.time()) - 30 * 86400
    with serve(data, clock=time.time) as (url, _):
        mp = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(credentials=creds, **consumer_kwargs(url)))
        mp.track("user-1", "Signed Up", {"plan": "pro"})
        mp.people_set("user-1", {"$email": "user1@example.com", "plan": "pro"})
        mp.group_set("company_id", "acme", {"name": "Acme"})
        mp.import_data(None, "user-1", "Old Order", old, {"amount": 12.5})
        mp.merge(None, "user-1", "device-9")  # ($merge goes to /import; alias() ignores custom consumers)
        legacy = mixpanel.Mixpanel(TOKEN, consumer=mixpanel.Consumer(**consumer_kwargs(url)))
        legacy.import_data("api-key", "user-2", "Legacy Import", old, api_secret="api-secret-1")
        with pytest.raises(mixpanel.MixpanelException, match="Invalid credentials"):
            legacy.import_data(None, "user-3", "No Auth", old, api_secret="wrong")

    tracked = read_received(data, "track")
    assert [(e["event"], e["properties"]["distinct_id"]) for e in tracked] == [("Signed Up", "user-1")]
    assert tracked[0]["properties"]["mp_lib"] == "python" and tracked[0]["properties"]["token"] == TOKEN
    [person] = read_received(data, "engage")
    assert person["$distinct_id"] == "user-1" and person["$set"] == {"$email": "user1@example.com", "plan": "pro"}
    assert read_received(data, "groups")[0]["$group_id"] == "acme"
    imported = read_received(data, "import")
    assert [(e["event"], e["properties"].get("time")) for e in imported] == [
        ("Old Order", old), ("$merge", None), ("Legacy Import", old)]
    assert imported[1]["properties"]["$distinct_ids"] == ["user-1", "device-9"]


def test_buffered_consumer_sends_batches(kit: Any, tmp_path: Path, serve: Any) -> None:
    data = kit.build_project(tmp_path / "p")
    creds = mixpanel.ServiceAccountCredentials("sa-user", "sa-secret", "4242")
    with serve(data, clock=time.time) as (url, emulator):
        buffered = mixpanel.BufferedConsumer(max_size=50, credentials=creds, **consumer_kwargs(url))
        mp = mixpanel.Mixpanel(TOKEN, consumer=buffered)
        for i in range(120):
            mp.track(f"user-{i % 7}", "Viewed Page", {"i": i})
        for i in range(30):
            mp.people_set(f"user-{i}", {"i": i})
            mp.import_data(None, f"user-{i}", "Backfill", int(time.time()) - 10 * 86400, {"i": i})
        buffered.flush()
        requests_seen = dict(emulator.state.stats)
    assert [e["properties"]["i"] for e in read_received(data, "track")] == list(range(120))
    assert len(read_received(data, "engage")) == 30 and len(read_received(data, "import")) == 30
    assert requests_seen["track_requests"] == 3  # 50 + 50 + 20: JSON arrays of up to 50
    assert requests_seen["import_200"] == 1
