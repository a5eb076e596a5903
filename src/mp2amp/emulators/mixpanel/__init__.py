"""A faithful local emulator of Mixpanel's export, engage, lexicon and ingestion APIs.

``MixpanelEmulator(MixpanelConfig(data_dir=...))`` serves a project written by
``mp2amp generate`` (layout: docs/contracts.md §1); see the README section
"mp2amp emulate mixpanel" for routes, limits, faults and the control endpoints.
"""

from mp2amp.emulators.mixpanel.config import FAULT_KINDS, MixpanelConfig, ProjectInfo, load_project
from mp2amp.emulators.mixpanel.engage import data_group_id
from mp2amp.emulators.mixpanel.server import MixpanelEmulator
from mp2amp.emulators.mixpanel.store import read_received

__all__ = [
    "FAULT_KINDS",
    "MixpanelConfig",
    "MixpanelEmulator",
    "ProjectInfo",
    "data_group_id",
    "load_project",
    "read_received",
]
