"""A realistic synthetic Mixpanel project, with its ground truth (``mp2amp generate``)."""

from pathlib import Path

from mp2amp.native import warn_if_stale

warn_if_stale(Path(__file__).parent)  # compiled by `make setup`: see mp2amp.native

from mp2amp.generate.project import GenerateConfig, GenerateResult, generate_project  # noqa: E402

__all__ = ["GenerateConfig", "GenerateResult", "generate_project"]
