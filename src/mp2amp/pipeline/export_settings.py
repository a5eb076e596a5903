"""The Mixpanel Export API's settings of a ``mp2amp migrate`` run, from its config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mp2amp.config import Config
from mp2amp.extract.api import MixpanelSettings


def mixpanel_settings(config: Config,
                      overrides: Mapping[str, Any] | None) -> MixpanelSettings | None:
    m = config.mixpanel
    # files are read whatever the environment says: its Mixpanel credentials are only for
    # the Export API, which a run of files never asks (their checks would refuse it)
    if config.source.files or (m.service_account is None and m.secret is None):
        return None
    # Millisecond times: the export's default rounds to seconds, which loses the order of
    # a device's close events and gives other insert_ids than the same events read from
    # files (the id hashes the time in ms; Mixpanel ingests ms).
    kwargs: dict[str, Any] = {"per_hour": m.export_per_hour, "per_second": m.export_per_second,
                              "time_in_ms": True}
    kwargs.update(overrides or {})
    return MixpanelSettings.from_config(m, **kwargs)
