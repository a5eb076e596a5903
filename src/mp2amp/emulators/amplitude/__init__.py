"""A local, faithful emulator of Amplitude's HTTP APIs (ingestion, identify, export,
segmentation, user privacy), persisted under a data directory. See the README section
``mp2amp emulate amplitude`` and reference/amplitude-api.md §10 for the behaviour model.
"""

from mp2amp.emulators.amplitude.config import AmplitudeConfig
from mp2amp.emulators.amplitude.server import AmplitudeEmulator
from mp2amp.emulators.amplitude.validate import ValidationResult, validate_events

__all__ = ["AmplitudeConfig", "AmplitudeEmulator", "ValidationResult", "validate_events"]
