"""Session 27 review (helper-321), fixed in session 28 by insert_id scheme 4: two stored
Mixpanel events without ``$insert_id``, alike in their second of a seconds export (a
double tap; a ``/track`` sent twice) and told apart only by Mixpanel's ingestion stamps,
got one content-hash insert_id, so one was counted as a duplicate and never sent.
Mixpanel never dedups events without ``$insert_id`` (reference 3.1), so it counts both.

Scheme 4 keeps ``mp_processing_time_ms`` / ``$mp_api_timestamp_ms`` in the content hash
(every copy of one stored event carries the same stamps). A run started under scheme 3
goes on making scheme-3 ids (``TransformSettings.insert_id_scheme``, the ledger's
fingerprint): its batches sent again carry the ids they were first sent with."""

from __future__ import annotations

import pytest

from mp2amp.errors import ConfigError
from mp2amp.models import Resolved
from mp2amp.transform.events import Transformer
from mp2amp.transform.insert_id import event_insert_id
from mp2amp.transform.settings import TransformSettings

TAP = {"distinct_id": "user-abcdef", "button": "buy", "mp_lib": "swift", "time": 1700000000}


def test_two_stored_taps_in_one_second_keep_two_ids() -> None:
    first = {**TAP, "mp_processing_time_ms": 1700000000500}
    second = {**TAP, "mp_processing_time_ms": 1700000000900}
    assert event_insert_id("Tap", first, 1700000000000) != \
        event_insert_id("Tap", second, 1700000000000)


def test_one_stored_event_read_twice_keeps_one_id() -> None:
    stamped = {**TAP, "mp_processing_time_ms": 1700000000500}
    respelled = {**stamped, "time": 1700000000.0, "$mp_api_endpoint": "api.mixpanel.com"}
    assert event_insert_id("Tap", stamped, 1700000000000) == \
        event_insert_id("Tap", respelled, 1700000000000)


def _sent(settings: TransformSettings, props: dict[str, object]) -> str:
    transformer = Transformer(settings)
    ids = Resolved(user_id="user-abcdef", device_id=None)
    for _ in range(3):  # the general path, then the memoized one: one id
        out = transformer.event({"event": "Tap", "properties": dict(props)}, ids)
        assert isinstance(out, dict), out
    return str(out["insert_id"])


def test_a_scheme_3_run_keeps_making_its_ids() -> None:
    """The ids a scheme-3 run (any run an earlier release started) sent: the value the
    earlier release computed, pinned; the stamps left out of it, as they were."""
    first = {**TAP, "mp_processing_time_ms": 1700000000500}
    second = {**TAP, "mp_processing_time_ms": 1700000000900}
    old = TransformSettings(insert_id_scheme=3)
    assert _sent(old, first) == _sent(old, second) == "mp-043095aca25c65e8ddc9bc39dd906180"
    assert _sent(TransformSettings(), first) == "mp-5c67eafba9385a012de6d2bfb14ea5c0"
    assert _sent(TransformSettings(), second) != _sent(TransformSettings(), first)
    with_id = {**first, "$insert_id": "abcdefabcdef12"}  # the $insert_id path: one id for both
    assert _sent(old, with_id) == _sent(TransformSettings(), with_id) \
        == "abcdefabcdef12-d205bbe23f036f23"


@pytest.mark.parametrize("scheme", [1, 2, 5])
def test_a_scheme_it_does_not_make_is_refused(scheme: int) -> None:
    with pytest.raises(ConfigError, match=f"insert_id scheme {scheme}: this mp2amp makes ids "
                       "of scheme 3 or 4"):
        TransformSettings(insert_id_scheme=scheme)
