"""The uploader against a steerable fake over loopback: faults in, exact sets out."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mp2amp.errors import AuthError
from mp2amp.load import DeadLetterFile, RetriesExhausted, Uploader, UploadSettings
from mp2amp.load.deadletter import read_dead_letters


def settings(url: str, **kw: Any) -> UploadSettings:
    base: dict[str, Any] = dict(api_key="test-key", api_host=url, concurrency=4,
                                backoff_base=0.005, backoff_cap=0.05, throttle_wait=0.05,
                                project_throttle_wait=0.05)
    base.update(kw)
    return UploadSettings(**base)


async def upload(fake: Any, events: list[dict[str, Any]], observer: Any, *,
                 dlq: DeadLetterFile | None = None, batch_key: str = "w1",
                 **kw: Any) -> Any:
    url = await fake.start()
    try:
        async with Uploader(settings(url, **kw), observer=observer, dead_letters=dlq) as up:
            for i, e in enumerate(events):
                await up.submit(e, ("src.jsonl", i + 1), batch_key=batch_key)
            report = await up.close()
            # the uploader's own books are balanced: nothing queued, held or half-settled
            assert (up._queued, up._unsettled, up.holds.held_events, len(up._batches)) == \
                (0, 0, 0, 0)
            assert await up.close() is report
            return report
    finally:
        await fake.stop()


def test_clean_run_sends_every_event_once(fake_cls, gen_events, observer):
    fake = fake_cls()
    events = gen_events(5000)
    report = asyncio.run(upload(fake, events, observer))
    ids = sorted(e["insert_id"] for e in events)
    assert sorted(i for _, i in fake.stored) == ids
    assert sorted(observer.accepted_ids()) == ids
    assert report.accepted == 5000 and report.settled == report.submitted == 5000
    assert fake.bodies_gzip == report.requests
    assert all(o == {"min_id_length": 1} for o in fake.options_seen)
    assert set(observer.sent) == set(observer.accepted)
    assert sum(observer.sent.values()) == 5000


def test_faults_5xx_and_ingest_then_drop_end_with_exact_set(fake_cls, gen_events, observer):
    fake = fake_cls(fail_rate=0.3, drop_after_ingest_rate=0.2, seed=7)
    events = gen_events(4000)
    report = asyncio.run(upload(fake, events, observer, max_events=300))
    ids = sorted(e["insert_id"] for e in events)
    assert sorted(i for _, i in fake.stored) == ids
    assert sorted(observer.accepted_ids()) == ids
    assert report.retries > 0 and report.requests_by_status["connection_error"] > 0
    # an ingest-then-drop was resent with the same insert_ids (deduplicated by the server)
    assert max(fake.ingest_attempts.values()) >= 2


def test_a_request_that_times_out_after_ingest_is_resent_and_deduplicated(fake_cls, gen_events,
                                                                          observer):
    fake = fake_cls(hang_first=2)
    events = gen_events(300)
    report = asyncio.run(upload(fake, events, observer, timeout=0.3, max_events=100))
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    assert report.requests_by_status["connection_error"] == 2
    assert max(fake.ingest_attempts.values()) == 2


def test_per_device_order_and_never_two_requests_of_one_device(fake_cls, gen_events, observer):
    fake = fake_cls(fail_rate=0.2, seed=3)
    events = gen_events(6000, devices=40)
    asyncio.run(upload(fake, events, observer, max_events=100, concurrency=8))
    assert fake.overlap == 0
    assert fake.max_in_flight > 1  # lanes did run in parallel
    by_device: dict[str, list[str]] = {}
    for e in events:
        by_device.setdefault(e["device_id"], []).append(e["insert_id"])
    for device, expected in by_device.items():
        assert fake.arrival[device] == expected, device


def test_a_throttled_user_on_a_shared_device_keeps_the_devices_order(fake_cls, gen_events,
                                                                     observer):
    # device-00000 is shared by two users; only one of them is throttled, three times over
    events = gen_events(1200, devices=6)
    shared = [e for e in events if e["device_id"] == "device-00000"]
    for n, e in enumerate(shared):
        e["user_id"] = "user-a-00000" if n % 2 else "user-b-00000"
    fake = fake_cls(throttle_users={"user-b-00000": 3})
    report = asyncio.run(upload(fake, events, observer, max_events=60))
    assert report.throttles >= 3 and fake.throttle_users["user-b-00000"] <= 0
    for device in {e["device_id"] for e in events}:
        expected = [e["insert_id"] for e in events if e["device_id"] == device]
        assert fake.arrival[device] == expected, device


def test_413_splits_until_requests_fit(fake_cls, gen_events, observer):
    fake = fake_cls(max_bytes=20_000)
    events = gen_events(3000)
    report = asyncio.run(upload(fake, events, observer))
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    assert report.splits > 0 and fake.statuses[413] == report.splits


def test_400_drops_exactly_the_listed_events_and_resends_the_rest(fake_cls, gen_events,
                                                                   observer, tmp_path: Path):
    events = gen_events(1000)
    bad = {7, 150, 152, 999}
    for i in bad:
        if i % 2:
            events[i]["time"] = "yesterday"
        else:
            del events[i]["event_type"]
    fake = fake_cls()
    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=["test-key"])
    report = asyncio.run(upload(fake, events, observer, dlq=dlq))
    dlq.close()
    good = sorted(e["insert_id"] for i, e in enumerate(events) if i not in bad)
    assert sorted(i for _, i in fake.stored) == good
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted(r["line"] for r in rows) == sorted(i + 1 for i in bad)
    assert {r["source"] for r in rows} == {"src.jsonl"}
    assert {r["reason"] for r in rows} == {"invalid_field", "missing_field"}
    assert all("test-key" not in line for line in (tmp_path / "dead.jsonl").read_text().splitlines())
    assert report.dead_lettered == {"invalid_field": 2, "missing_field": 2}
    assert len(observer.dead) == 4 and report.settled == 1000


def test_a_400_naming_no_event_dead_letters_that_request_only(fake_cls, gen_events, observer,
                                                              tmp_path: Path):
    events = gen_events(400, devices=8)
    events[123]["event_type"] = "__poison__"
    dlq = DeadLetterFile(tmp_path / "dead.jsonl")
    report = asyncio.run(upload(fake_cls(), events, observer, dlq=dlq, max_events=20))
    dlq.close()
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    dead = {r["event"]["insert_id"] for r in rows}
    assert events[123]["insert_id"] in dead and 1 < len(dead) <= 20
    assert {r["reason"] for r in rows} == {"request_rejected"}
    assert "Invalid event JSON" in rows[0]["message"]
    assert report.accepted == 400 - len(dead) and report.settled == 400
    assert report.requests_by_status["400"] == 1  # terminal: not retried


def test_a_400_missing_a_request_field_dead_letters_that_batch_in_one_request(
        fake_cls, gen_events, observer, tmp_path: Path):
    # Amplitude's documented body: missing_field (the request's) plus an event index list
    events = gen_events(60, devices=3)
    events[20]["event_type"] = "__missing_api_key__"
    fake = fake_cls()
    dlq = DeadLetterFile(tmp_path / "dead.jsonl")
    report = asyncio.run(upload(fake, events, observer, dlq=dlq, concurrency=1,
                                max_events=12))
    dlq.close()
    batch = next(ids for _, ids, st in fake.requests if st == 400)
    assert events[20]["insert_id"] in batch and len(batch) == 12
    rows = read_dead_letters(tmp_path / "dead.jsonl")
    assert sorted(r["event"]["insert_id"] for r in rows) == sorted(batch)
    assert {r["reason"] for r in rows} == {"request_rejected"}
    assert "missing request field 'api_key'" in rows[0]["message"]
    assert report.requests_by_status["400"] == 1  # one request, not one per event
    assert report.dead_lettered == {"request_rejected": 12} and report.accepted == 48


def test_a_single_event_too_large_alone_is_dead_lettered(fake_cls, gen_events, observer):
    events = gen_events(50)
    events[10]["event_properties"]["blob"] = "z" * 30_000
    fake = fake_cls(max_bytes=20_000)
    report = asyncio.run(upload(fake, events, observer))
    assert report.dead_lettered == {"event_too_large": 1}
    assert [e["insert_id"] for e, _, _, _ in observer.dead] == [events[10]["insert_id"]]
    assert len(fake.stored) == 49


def test_429_holds_only_the_throttled_devices(fake_cls, gen_events, observer):
    # one hot device sends far above the limit; the others stay under it
    events = gen_events(800, devices=20)
    for e in events[::2]:
        e["device_id"] = "hot-device-1"
    fake = fake_cls(eps_limit=150)
    report = asyncio.run(upload(fake, events, observer, max_events=200))
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    assert report.throttles > 0
    hot = [e["insert_id"] for e in events if e["device_id"] == "hot-device-1"]
    assert fake.arrival["hot-device-1"] == hot
    # the cold devices were not made to wait behind the hot one
    position = {iid: n for n, iid in enumerate(fake.sequence)}
    cold = [e["insert_id"] for e in events if e["device_id"] != "hot-device-1"]
    assert max(position[i] for i in cold) < max(position[i] for i in hot)
    assert max(position[i] for i in cold) < len(fake.sequence) - 100
    assert fake.overlap == 0


def test_daily_quota_parks_then_retries_later_in_the_run(fake_cls, gen_events, observer):
    events = gen_events(600, devices=6)
    fake = fake_cls(quota_devices={"device-00001"})

    async def scenario() -> Any:
        url = await fake.start()
        try:
            up = Uploader(settings(url, park_delay=0.2, park_retries=5), observer=observer)
            async with up:
                for i, e in enumerate(events):
                    await up.submit(e, ("src", i + 1))
                assert await up.flush("run") == 4   # 6 devices over 4 lanes: 4 batches
                await asyncio.sleep(0.3)   # quota still exceeded: events are parked
                fake.quota_devices.clear()  # the rolling 24 h window moved on
                return await up.close()
        finally:
            await fake.stop()

    report = asyncio.run(scenario())
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    assert report.parked == 0 and not observer.parked
    assert fake.statuses[429] >= 1


def test_daily_quota_still_exceeded_at_the_end_is_reported_parked(fake_cls, gen_events,
                                                                  observer):
    events = gen_events(300, devices=3)
    fake = fake_cls(quota_devices={"device-00002"})
    report = asyncio.run(upload(fake, events, observer, park_retries=1))
    stuck = sorted(e["insert_id"] for e in events if e["device_id"] == "device-00002")
    assert sorted(e["insert_id"] for e, _, _ in observer.parked) == stuck
    assert {r for _, _, r in observer.parked} == {"daily_quota"}
    assert report.parked == len(stuck) and report.settled == 300
    assert sorted(i for _, i in fake.stored) == sorted(
        e["insert_id"] for e in events if e["device_id"] != "device-00002")


def test_a_device_with_parked_events_has_its_later_events_parked_not_sent(
        fake_cls, gen_events, observer):
    # Sending them once the quota had room again put them in Amplitude before the
    # device's earlier, parked events (delivered on --resume): out of time order.
    events = gen_events(600, devices=3)
    first, later = events[:300], events[300:]
    fake = fake_cls(quota_devices={"device-00002"})

    async def scenario() -> Any:
        url = await fake.start()
        try:
            up = Uploader(settings(url, park_retries=0), observer=observer)
            async with up:
                for i, e in enumerate(first):
                    await up.submit(e, ("src", i + 1), batch_key="w1")
                await up.flush("w1")
                for _ in range(200):  # until the device's first events are parked for good
                    if observer.parked:
                        break
                    await asyncio.sleep(0.01)
                fake.quota_devices.clear()  # Amplitude would take the device's events again
                for i, e in enumerate(later):
                    await up.submit(e, ("src", 301 + i), batch_key="w2")
                await up.flush("w2")
                return await up.close()
        finally:
            await fake.stop()

    report = asyncio.run(scenario())
    held = sorted(e["insert_id"] for e in events if e["device_id"] == "device-00002")
    assert sorted(e["insert_id"] for e, _, _ in observer.parked) == held
    assert sorted(i for _, i in fake.stored) == sorted(
        e["insert_id"] for e in events if e["device_id"] != "device-00002")
    assert report.parked == len(held) and report.settled == 600


def test_a_project_level_429_is_waited_out_not_counted_as_a_failure(fake_cls, gen_events,
                                                                    observer):
    fake = fake_cls(project_429_first=4)
    events = gen_events(100)
    report = asyncio.run(upload(fake, events, observer, max_retries=1, concurrency=1))
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    assert report.throttles == 4 and report.retries == 0


def test_invalid_api_key_stops_with_a_clear_message(fake_cls, gen_events, observer):
    fake = fake_cls(api_key="the-right-key")
    with pytest.raises(AuthError) as info:
        asyncio.run(upload(fake, gen_events(10), observer))
    msg = str(info.value)
    assert "API key" in msg and "AMPLITUDE_API_KEY" in msg and "test-key" not in msg
    assert not fake.stored and not observer.accepted


def test_server_down_for_good_stops_after_max_retries(fake_cls, gen_events, observer):
    fake = fake_cls(fail_rate=1.0, retry_after="0.01")
    with pytest.raises(RetriesExhausted, match="--resume"):
        asyncio.run(upload(fake, gen_events(50), observer, max_retries=3))
    assert not observer.accepted and len(observer.sent) >= 1


def test_unreachable_host_is_retried_then_stops(gen_events, observer):
    async def scenario() -> None:
        s = settings("http://127.0.0.1:9", max_retries=2, timeout=2)
        async with Uploader(s, observer=observer) as up:
            await up.submit(gen_events(1)[0], ("src", 1))
            await up.close()
    with pytest.raises(RetriesExhausted):
        asyncio.run(scenario())


def test_a_host_never_reached_stops_after_a_few_attempts_not_max_retries(gen_events, observer):
    """A wrong api_host or port is refused at once: 20 backed-off retries (meant for a
    flaky Amplitude) took ~11 minutes to say so. Never answered in this run: 5 attempts."""
    async def scenario() -> None:
        s = settings("http://127.0.0.1:9", max_retries=20, timeout=2)
        async with Uploader(s, observer=observer) as up:
            await up.submit(gen_events(1)[0], ("src", 1))
            await up.close()
    with pytest.raises(RetriesExhausted) as stopped:
        asyncio.run(scenario())
    assert str(stopped.value).startswith(
        "cannot connect to Amplitude at http://127.0.0.1:9/batch (Cannot connect to host")
    assert "5 times and never since this run started: check [amplitude] api_host" in \
        str(stopped.value)
    assert "--resume (nothing was lost)" in str(stopped.value)


def test_a_host_that_answered_before_gets_all_its_retries(gen_events, observer):
    async def scenario() -> None:
        s = settings("http://127.0.0.1:9", max_retries=7, timeout=2)
        async with Uploader(s, observer=observer) as up:
            up.sender.answered = True  # as after a first answer: a flaky Amplitude, not a typo
            await up.submit(gen_events(1)[0], ("src", 1))
            await up.close()
    with pytest.raises(RetriesExhausted, match="failed 8 times in a row"):
        asyncio.run(scenario())


# --- server-given waits (Retry-After) ------------------------------------------------

def first_with(fake: Any, insert_id: str, status: int) -> float:
    """Server time of the first request carrying this event that got ``status``."""
    return min(t for t, ids, st in fake.requests if insert_id in ids and st == status)


def test_a_429s_retry_after_holds_its_devices_while_the_rest_of_that_request_goes_on(
        fake_cls, gen_events, observer):
    wait = 1.5
    events = gen_events(400, devices=8)
    fake = fake_cls(throttle_devices={"device-00003": 1}, retry_after_429=str(wait))
    # one lane: the 429'd request mixes the throttled device with seven others
    report = asyncio.run(upload(fake, events, observer, concurrency=1, max_events=40))
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    assert report.throttles == 1 and fake.statuses[429] == 1
    t429, in_429, _ = next(r for r in fake.requests if r[2] == 429)
    hot = [e["insert_id"] for e in events if e["device_id"] == "device-00003"]
    cold_same_request = [i for i in in_429 if i not in hot]
    assert cold_same_request and set(hot) & set(in_429)
    # the throttled device comes back no sooner than Retry-After asked (not the 0.05 s
    # throttle_wait), and in its own order
    assert min(first_with(fake, i, 200) for i in hot if i in in_429) >= t429 + wait
    assert fake.arrival["device-00003"] == hot
    # the other devices of that very request, and every later request, did not wait
    cold = [e["insert_id"] for e in events if e["device_id"] != "device-00003"]
    assert max(first_with(fake, i, 200) for i in cold_same_request) < t429 + wait
    assert max(first_with(fake, i, 200) for i in cold) < t429 + wait


@pytest.mark.parametrize("kind", ["503", "project-429"])
def test_a_whole_request_retry_waits_for_retry_after_while_other_lanes_go_on(
        kind, fake_cls, gen_events, observer):
    wait = 1.5
    events = gen_events(400, devices=8)
    if kind == "503":
        fake = fake_cls(fail_first=1, retry_after=str(wait))
    else:
        fake = fake_cls(project_429_first=1, project_retry_after=str(wait))
    report = asyncio.run(upload(fake, events, observer, concurrency=4, max_events=20))
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in events)
    status = 503 if kind == "503" else 429
    assert fake.statuses[status] == 1 and report.requests == fake.statuses[200] + 1
    t_fail, failed, _ = next(r for r in fake.requests if r[2] == status)
    resent = min(first_with(fake, i, 200) for i in failed)
    assert resent >= t_fail + wait
    # the other lanes kept sending meanwhile: all their events were in before the resend
    lane_devices = {e["device_id"] for e in events if e["insert_id"] in failed}
    others = [e["insert_id"] for e in events if e["device_id"] not in lane_devices]
    assert others and max(first_with(fake, i, 200) for i in others) < t_fail + wait


@pytest.mark.parametrize("kind", ["device-429", "project-429", "503"])
def test_a_huge_retry_after_is_capped_and_logged(kind, fake_cls, gen_events, observer,
                                                 monkeypatch, caplog):
    # a proxy asking for a day: the run waits the cap (shrunk here), says so, and finishes
    monkeypatch.setattr("mp2amp.load.responses.MAX_SERVER_WAIT", 0.3)
    monkeypatch.setattr("mp2amp.load.sender.LONG_WAIT", 0.2)
    huge = "86400"
    if kind == "device-429":
        fake = fake_cls(throttle_devices={"device-00001": 1}, retry_after_429=huge)
    elif kind == "project-429":
        fake = fake_cls(project_429_first=1, project_retry_after=huge)
    else:
        fake = fake_cls(fail_first=1, retry_after=huge)
    events = gen_events(100, devices=4)
    caplog.set_level("WARNING", logger="mp2amp.load")

    async def bounded() -> Any:
        return await asyncio.wait_for(upload(fake, events, observer, concurrency=1), 20)

    report = asyncio.run(bounded())
    assert report.accepted == 100
    t_fail, failed, _ = next(r for r in fake.requests if r[2] != 200)
    waited = [i for i in failed
              if kind != "device-429" or i in {e["insert_id"] for e in events
                                                if e["device_id"] == "device-00001"}]
    assert min(first_with(fake, i, 200) for i in waited) >= t_fail + 0.3
    lines = [r.getMessage() for r in caplog.records if r.name == "mp2amp.load"]
    assert len(lines) == 1, lines
    assert "Retry-After: 86400 s, capped at 0.3 s: waiting 0.3 s" in lines[0], lines[0]
    # and the run's report keeps it (the log line may scroll away)
    assert (report.long_waits, report.retry_after_capped) == (1, 1)
    assert report.longest_wait == pytest.approx(0.3, abs=0.05)
    assert report.to_dict()["retry_after_capped"] == 1
