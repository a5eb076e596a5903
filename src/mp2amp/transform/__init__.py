"""The pure transform: Mixpanel events -> Amplitude Batch API events (see ``events``)."""

from pathlib import Path

from mp2amp.native import warn_if_stale

warn_if_stale(Path(__file__).parent)  # the per-event path is compiled: see mp2amp.native

from mp2amp.transform.events import Transformer  # noqa: E402
from mp2amp.transform.hotshard import restore_hotshard  # noqa: E402
from mp2amp.transform.insert_id import insert_id_for, mixpanel_insert_id  # noqa: E402
from mp2amp.transform.settings import RevenueSettings, TransformSettings  # noqa: E402

__all__ = [
    "RevenueSettings",
    "TransformSettings",
    "Transformer",
    "insert_id_for",
    "mixpanel_insert_id",
    "restore_hotshard",
]
