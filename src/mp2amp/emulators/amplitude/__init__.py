"""A local, faithful emulator of Amplitude's HTTP APIs (ingestion, identify, export,
segmentation, user privacy), persisted under a data directory. See the README section
``mp2amp emulate amplitude`` and reference/amplitude-api.md §10 for the behaviour model.
"""

from pathlib import Path

from mp2amp.native import warn_if_stale

warn_if_stale(Path(__file__).parent)  # its ingestion path is compiled: see mp2amp.native

from mp2amp.emulators.amplitude.config import AmplitudeConfig  # noqa: E402
from mp2amp.emulators.amplitude.server import AmplitudeEmulator  # noqa: E402
from mp2amp.emulators.amplitude.validate import ValidationResult, validate_events  # noqa: E402

__all__ = ["AmplitudeConfig", "AmplitudeEmulator", "ValidationResult", "validate_events"]
