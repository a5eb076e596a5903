"""Session-20 review: ``mp2amp migrate`` uploading through HTTP V2 (``endpoint = "httpapi"``)
instead of the Batch API, against the Amplitude emulator over loopback.

HTTP V2's own limits (amplitude-api.md §1.7, §1.8): under 1 MB and at most 2000 events a
request, 30 events/s per device or user averaged over 30 s, 429 bodies with
``eps_threshold`` / ``throttled_*`` and no documented daily-quota fields.

No defect was found in this area in this review: the tests below are guards of the behaviour
checked (requests within 1 MB / 2000 events, 413 splits, 429 holds of the throttled device
only, resume, faults together, a generated project ending with exactly the transform's ids).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from migrate_kit import (
    API_KEY,
    FAST,
    amplitude,
    assert_exactly_once,
    get_json,
    run_until_crash,
)

from mp2amp.config import load_config
from mp2amp.emulators.amplitude import ingest as ingest_module
from mp2amp.pipeline.migrate import EXIT_OK, migrate

T0 = 1_709_251_200  # 2024-03-01 UTC


def write_project(folder: Path, n: int, device_of: Callable[[int], str], pad: int = 0,
                  user_of: Callable[[int], str] | None = None) -> tuple[Path, frozenset[str]]:
    """One day file of ``n`` Mixpanel events; returns it and the (device, insert_id) keys
    Amplitude must end with (the transform appends a digest to Mixpanel's insert_id)."""
    events = folder / "events"
    events.mkdir(parents=True)
    with open(events / "2024-03-01.jsonl", "wb") as fh:
        for i in range(n):
            device = device_of(i)
            user = user_of(i) if user_of else device
            props: dict[str, Any] = {"time": T0 + i, "distinct_id": user, "$device_id": device,
                                     "$user_id": user, "$insert_id": f"hv2{i:07d}"}
            if pad:
                props["blob"] = "x" * pad
            fh.write(orjson.dumps({"event": "Big" if pad else "E", "properties": props}) + b"\n")
    return events, frozenset()


def config(events: Path, work: Path, url: str, **extra: Any) -> Any:
    overrides = {"source.files": [str(events)], "amplitude.api_host": url,
                 "amplitude.endpoint": "httpapi", "run.workdir": str(work),
                 "mixpanel.timezone": "UTC"}
    overrides.update(extra)
    return load_config(None, overrides, env={"AMPLITUDE_API_KEY": API_KEY})


def stored_source_ids(url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, iid, n in get_json(url + "/_emulator/insert_ids"):
        source = iid.rsplit("-", 1)[0]
        out[source] = out.get(source, 0) + n
    return out


def assert_each_once(url: str, n: int) -> None:
    counts = stored_source_ids(url)
    expected = {f"hv2{i:07d}" for i in range(n)}
    missing = expected - counts.keys()
    extra = counts.keys() - expected
    twice = {k: v for k, v in counts.items() if v != 1}
    assert not missing and not extra and not twice, (
        f"{len(missing)} missing {sorted(missing)[:3]}, {len(extra)} unexpected, "
        f"{len(twice)} stored more than once {list(twice.items())[:3]}")


def spy_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int, Any]]:
    """(endpoint, raw body bytes, events, options) of every request the emulator handles."""
    seen: list[tuple[str, int, int, Any]] = []
    original = ingest_module.Ingestor.handle

    def handle(self: Any, payload: Any, endpoint: str, body: bytes, remote: Any = None) -> Any:
        events = payload.get("events") if isinstance(payload, dict) else None
        options = payload.get("options") if isinstance(payload, dict) else None
        seen.append((endpoint, len(body), len(events or []), options))
        return original(self, payload, endpoint, body, remote)

    monkeypatch.setattr(ingest_module.Ingestor, "handle", handle)
    return seen


def fast_clock(speed: float) -> Callable[[], float]:
    t0 = time.time()
    return lambda: t0 + (time.time() - t0) * speed


# --- guards -----------------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [True, False])
def test_http_v2_requests_stay_under_its_1mb_and_2000_events(tmp_path: Path, gzip: bool,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    n = 3000
    events, _ = write_project(tmp_path, n, lambda i: "ab" if i % 50 == 7 else f"device-{i % 50:04d}",
                              pad=900)
    seen = spy_requests(monkeypatch)
    with amplitude(tmp_path / "amp") as url:
        result = migrate(config(events, tmp_path / "work", url, **{"amplitude.gzip": gzip}),
                         upload_overrides={**FAST, "concurrency": 2})
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_each_once(url, n)
        stats = get_json(url + "/_emulator/stats")
    assert seen and {e for e, *_ in seen} == {"httpapi"}
    assert max(size for _, size, _, _ in seen) <= 1_000_000
    assert max(k for _, _, k, _ in seen) <= 2000
    assert "413" not in stats["requests"]
    assert all(opt == {"min_id_length": 1} for *_, opt in seen)


def test_a_413_on_http_v2_splits_until_requests_fit(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a tighter limit on the way (a proxy, an older plan): 150 kB; batches are cut at 1 MB
    n = 1500
    events, _ = write_project(tmp_path, n, lambda i: f"device-{i % 40:04d}", pad=500)
    monkeypatch.setattr("mp2amp.emulators.amplitude.server.max_bytes",
                        lambda endpoint: 150_000)
    with amplitude(tmp_path / "amp") as url:
        result = migrate(config(events, tmp_path / "work", url),
                         upload_overrides={**FAST, "concurrency": 2})
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_each_once(url, n)
        stats = get_json(url + "/_emulator/stats")
    assert stats["requests"].get("413", 0) > 0
    assert result.load["splits"] > 0
    assert not result.load["dead_lettered"]


def test_a_hot_device_on_http_v2_is_throttled_alone_and_every_event_lands_once(
        tmp_path: Path) -> None:
    n = 3000
    events, _ = write_project(tmp_path, n, lambda i: "hot-device" if i % 4 else f"dev-{i % 40:03d}")
    with amplitude(tmp_path / "amp", now=fast_clock(20.0)) as url:
        result = migrate(config(events, tmp_path / "work", url),
                         upload_overrides={**FAST, "concurrency": 2, "throttle_wait": 1.5})
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_each_once(url, n)
        stats = get_json(url + "/_emulator/stats")
    assert stats["requests"].get("429", 0) > 0
    assert result.load["throttles"] > 0


def test_a_crashed_http_v2_run_resumes_to_each_event_once(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    n = 3000
    events, _ = write_project(tmp_path, n, lambda i: f"device-{i % 50:04d}", pad=900)
    with amplitude(tmp_path / "amp") as url:
        cfg = config(events, tmp_path / "work", url, **{"run.concurrency": 2})
        run_until_crash(cfg, monkeypatch, 2)
        result = migrate(cfg, resume=True)
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_each_once(url, n)


def test_http_v2_every_fault_at_once_keeps_each_event_once_and_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import order_breaks
    n = 2500
    events, _ = write_project(tmp_path, n, lambda i: "hot-device" if i % 3 else f"dev-{i % 20:03d}",
                              pad=300, user_of=lambda i: "hot-user" if i % 5 == 0 else f"u-{i % 20:03d}")
    monkeypatch.setattr("mp2amp.emulators.amplitude.server.max_bytes", lambda e: 120_000)
    with amplitude(tmp_path / "amp", now=fast_clock(20.0), fail_rate=0.15,
                   drop_after_ingest_rate=0.1, seed=4) as url:
        result = migrate(config(events, tmp_path / "work", url),
                         upload_overrides={**FAST, "concurrency": 3, "throttle_wait": 1.5})
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_each_once(url, n)
    assert not order_breaks(tmp_path / "amp")


def test_a_generated_project_over_http_v2_lands_exactly_the_transforms_events(
        tmp_path: Path) -> None:
    from migrate_kit import TIMEZONE, make_config, mp2amp, transform_outcome
    mp2amp("generate", "--out", str(tmp_path / "p"), "--users", "120", "--days", "3",
           "--seed", "11", "--timezone", TIMEZONE)
    events = tmp_path / "p" / "events"
    expected, _, _ = transform_outcome(events, tmp_path / "transform")
    with amplitude(tmp_path / "amp", now=fast_clock(20.0)) as url:
        cfg = make_config(events, tmp_path / "work", url, **{"amplitude.endpoint": "httpapi"})
        result = migrate(cfg, upload_overrides={**FAST, "concurrency": 3, "throttle_wait": 1.5})
        assert result.exit_code == EXIT_OK, result.as_dict()["problems"]
        assert_exactly_once(url, expected)
    assert result.totals["balanced"]
