"""Settings of the pure per-event transform, built once from the config (``config.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mp2amp.errors import ConfigError
from mp2amp.transform.insert_id import RESUMABLE_SCHEMES
from mp2amp.transform.insert_id import SCHEME as INSERT_ID_SCHEME

if TYPE_CHECKING:
    from mp2amp.transform.plan import TrackingPlan
    from mp2amp.transform.privacy import PrivacyRules


@dataclass(frozen=True, slots=True)
class RevenueSettings:
    """Which event properties carry revenue, by their Mixpanel names (read as the tracking
    plan made them, wherever it renames or moves them; the plan's new name is accepted
    too, unless it is also a Mixpanel name the plan moves away: ``configured.ambiguous``).

    Mixpanel has no reserved event-level revenue field, so nothing is hoisted unless a name
    is configured. ``items`` names a list-of-objects property of multi-item orders whose
    objects use the same ``price``/``quantity``/``product_id`` names; events named in
    ``refund_events`` are refunds (amounts made negative, ``revenueType`` "refund").
    """

    price: str | None = None
    quantity: str | None = None
    revenue: str | None = None
    product_id: str | None = None
    revenue_type: str | None = None
    currency: str | None = None
    items: str | None = None
    refund_events: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return any((self.price, self.revenue, self.items))

    @property
    def property_names(self) -> tuple[str, ...]:
        """Every configured property name (the event properties revenue is read from)."""
        return tuple(name for name in (self.price, self.quantity, self.revenue, self.product_id,
                                       self.revenue_type, self.currency, self.items) if name)

    def problems(self) -> list[str]:
        """Checks the config loader reports (with the table's prefix)."""
        if any(not name for name in self.refund_events):
            return ["refund_events: names must be non-empty"]
        return []


@dataclass(frozen=True, slots=True)
class TransformSettings:
    """Everything ``Transformer`` needs; immutable, so a run cannot change it half-way.

    ``timezone_changes``: ``(date_from "YYYY-MM-DD", zone)`` pairs for legacy projects whose
    timezone setting changed; ``timezone`` applies before the first ``date_from``.
    ``amplitude_event_names``: rename Mixpanel's automatic events to Amplitude's own
    (``$mp_web_page_view`` -> ``[Amplitude] Page Viewed`` ...); off by default so event
    counts reconcile name for name.
    """

    timezone: str = "UTC"
    legacy_time: bool = False
    timezone_changes: tuple[tuple[str, str], ...] = ()
    revenue: RevenueSettings = field(default_factory=RevenueSettings)
    group_keys: tuple[str, ...] = ()
    keep_ip: bool = True
    plan: TrackingPlan | None = None
    privacy: PrivacyRules | None = None
    amplitude_event_names: bool = False
    library: str | None = None
    """Top-level ``library`` value; ``None`` means ``mp2amp/<version>``."""
    insert_id_scheme: int = INSERT_ID_SCHEME
    """How insert_ids are made (``insert_id.RESUMABLE_SCHEMES``): a resumed run's own, so
    that the batches it sends again carry the ids they were first sent with."""

    def __post_init__(self) -> None:
        if self.insert_id_scheme not in RESUMABLE_SCHEMES:
            raise ConfigError([f"insert_id scheme {self.insert_id_scheme}: this mp2amp makes "
                               f"ids of scheme {' or '.join(map(str, RESUMABLE_SCHEMES))}"])
