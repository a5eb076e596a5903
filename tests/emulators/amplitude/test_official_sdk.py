"""The official ``amplitude-analytics`` SDK against the emulator: what it sends is stored, and
it reacts to the emulator's 400/413/429 bodies the way its own response processor expects."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify
from amplitude_emulator_helpers import API_KEY, Api, Clock

PATHS = {False: "/2/httpapi", True: "/batch"}


class Outcomes:
    """The SDK callback: (event_type, user_id, device_id, code) per finished event."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str | None, int]] = []
        self._lock = threading.Lock()

    def __call__(self, event: BaseEvent, code: int, message: str | None = None) -> None:
        with self._lock:
            self.calls.append((event.event_type, event.user_id, event.device_id, code))

    def codes(self) -> list[int]:
        with self._lock:
            return [c[3] for c in self.calls]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def sdk_client(api: Api, use_batch: bool, **settings: Any) -> Iterator[tuple[Amplitude, Outcomes]]:
    outcomes = Outcomes()
    settings.setdefault("flush_interval_millis", 50)
    config = Config(server_url=api.base_url + PATHS[use_batch], use_batch=use_batch,
                    callback=outcomes, **settings)
    client = Amplitude(API_KEY, config)
    try:
        yield client, outcomes
    finally:
        client.shutdown()


@pytest.mark.parametrize("use_batch", [False, True])
def test_track_identify_group_identify_read_back_via_export(api: Api, use_batch: bool) -> None:
    with sdk_client(api, use_batch) as (client, outcomes):
        client.identify(Identify().set("plan", "pro").add("logins", 2),
                        EventOptions(user_id="sdk-user-1", device_id="sdk-device-1"))
        client.group_identify("org", "acme", Identify().set("tier", "gold"),
                              EventOptions(user_id="sdk-user-1"))
        client.flush()
        wait_for(lambda: outcomes.codes() == [200, 200], "identify calls")
        for n in range(3):
            client.track(BaseEvent("Song Played", user_id="sdk-user-1", device_id="sdk-device-1",
                                   event_properties={"n": n}, groups={"org": "acme"}))
        client.flush()
        wait_for(lambda: outcomes.codes() == [200] * 5, "tracked events")
    rows = api.exported_rows()
    assert sorted(r["event_type"] for r in rows) == ["$groupidentify", "$identify"] + ["Song Played"] * 3
    played = [r for r in rows if r["event_type"] == "Song Played"]
    assert sorted(r["event_properties"]["n"] for r in played) == [0, 1, 2]
    assert all(r["user_properties"] == {"plan": "pro", "logins": 2} for r in played)
    assert all(r["group_properties"] == {"org": {"acme": {"tier": "gold"}}} for r in played)
    assert all(r["library"].startswith("amplitude-python/") for r in played)
    assert len({r["$insert_id"] for r in rows}) == 5
    assert len({r["amplitude_id"] for r in rows if r["user_id"]}) == 1


def test_400_drops_exactly_the_listed_events(api: Api) -> None:
    # one request of all four: the SDK's own timer (flushes every flush_interval_millis) must
    # not send the first ones before the last is tracked (on a busy machine 50 ms passed once)
    with sdk_client(api, use_batch=True, flush_interval_millis=60_000) as (client, outcomes):
        for user_id in ("sdk-user-1", "ab", "sdk-user-3", "null"):
            client.track(BaseEvent("Clicked", user_id=user_id))
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 2, "the two rejected events' outcomes")
        client.flush()  # the SDK queued the other two again: send them now
        wait_for(lambda: len(outcomes.calls) == 4, "all four outcomes")
    dropped = sorted(c[1] or "" for c in outcomes.calls if c[3] == 400)
    assert dropped == ["ab", "null"]
    assert api.stats()["requests"] == {"400": 1, "200": 1}  # one rejection, one resend
    assert sorted(r["user_id"] for r in api.exported_rows()) == ["sdk-user-1", "sdk-user-3"]


def test_413_makes_the_sdk_send_smaller_batches(api: Api) -> None:
    blob = {f"p{k}": "x" * 1000 for k in range(300)}  # ~0.3 MB per event
    with sdk_client(api, use_batch=False, flush_queue_size=4) as (client, outcomes):
        for n in range(4):
            client.track(BaseEvent("Big", device_id=f"sdk-device-{n}", event_properties=blob))
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 4, "the four big events")
        assert client.configuration.flush_queue_size == 2
    assert outcomes.codes() == [200] * 4
    assert api.stats()["requests"]["413"] == 1
    assert len(api.exported_rows()) == 4


def test_413_on_a_single_event_drops_it(api: Api) -> None:
    huge = {f"p{k}": "x" * 1024 for k in range(1000)}  # just above 1 MB on its own
    with sdk_client(api, use_batch=False) as (client, outcomes):
        client.track(BaseEvent("Huge", device_id="sdk-device-1", event_properties=huge))
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 1, "the huge event's outcome")
    assert outcomes.codes() == [413]
    assert api.stats()["events_stored"] == 0


def test_429_daily_quota_drops_only_those_ids(start_emulator: Callable[..., Api]) -> None:
    api = start_emulator(daily_quota=5)
    with sdk_client(api, use_batch=True) as (client, outcomes):
        for n in range(8):
            device = "quota-device" if n < 6 else "fine-device"
            client.track(BaseEvent("Tapped", device_id=device, event_properties={"n": n}))
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 8, "all outcomes")
    assert sorted((c[2], c[3]) for c in outcomes.calls) == [("fine-device", 200)] * 2 + [
        ("quota-device", 429)] * 6
    assert sorted(r["device_id"] for r in api.exported_rows()) == ["fine-device"] * 2


def test_429_throttled_ids_wait_and_are_not_lost(start_emulator: Callable[..., Api],
                                                 clock: Clock) -> None:
    api = start_emulator(eps_limit=1)  # 30 events per ID per 30 s
    with sdk_client(api, use_batch=True) as (client, outcomes):
        for n in range(20):
            client.track(BaseEvent("Scrolled", device_id="busy-device", event_properties={"n": n}))
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 20, "the first 20 events")
        for n in range(20, 40):
            client.track(BaseEvent("Scrolled", device_id="busy-device", event_properties={"n": n}))
        client.track(BaseEvent("Scrolled", device_id="calm-device"))
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 21, "the calm device's event")
        assert outcomes.calls[20][2:] == ("calm-device", 200)
        assert api.stats()["requests"]["429"] == 1
        clock.advance(61)  # the SDK holds the throttled events 30 s; flush sends them now
        client.flush()
        wait_for(lambda: len(outcomes.calls) == 41, "the throttled events")
    assert outcomes.codes() == [200] * 41
    assert len(api.exported_rows()) == 41
