"""The pure transform: Mixpanel events -> Amplitude Batch API events (see ``events``)."""

from mp2amp.transform.events import Transformer
from mp2amp.transform.hotshard import restore_hotshard
from mp2amp.transform.insert_id import insert_id_for, mixpanel_insert_id
from mp2amp.transform.settings import RevenueSettings, TransformSettings

__all__ = [
    "RevenueSettings",
    "TransformSettings",
    "Transformer",
    "insert_id_for",
    "mixpanel_insert_id",
    "restore_hotshard",
]
