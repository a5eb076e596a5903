"""A realistic synthetic Mixpanel project, with its ground truth (``mp2amp generate``)."""

from mp2amp.generate.project import GenerateConfig, GenerateResult, generate_project

__all__ = ["GenerateConfig", "GenerateResult", "generate_project"]
