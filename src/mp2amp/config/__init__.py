"""The one configuration of a run: ``mp2amp.toml``, flags on top, secrets from the environment.

Every section is a frozen dataclass (``sections.py``); the loader (``loader.py``) is generic
and reads the field types, so adding an option is adding one field with a default (and, if
a value can be wrong in a way its type does not say, a ``check`` in the field's metadata or
a ``problems()`` method on the section). Adding a section is adding a field to ``Config``.
Every problem in a file is collected and reported at once (``ConfigError.problems``), each
naming its key.

Paths in the file are relative to the file's folder; paths given as overrides (flags, as
``Path`` objects) are relative to the working directory. Secrets are never read from the
file: a key such as ``api_key`` in the file is itself a problem. They are wrapped in
``Secret`` so that a printed or logged config shows ``***``.
"""

from mp2amp.config.loader import load_config
from mp2amp.config.sections import (
    DEFAULT_FILE,
    HASH_SALT_ENV,
    AmplitudeConfig,
    Config,
    MixpanelConfig,
    PrivacyConfig,
    RevenueConfig,
    RunConfig,
    Secret,
    SourceConfig,
    TimezoneChange,
    TransformConfig,
)

__all__ = [
    "DEFAULT_FILE",
    "HASH_SALT_ENV",
    "AmplitudeConfig",
    "Config",
    "MixpanelConfig",
    "PrivacyConfig",
    "RevenueConfig",
    "RunConfig",
    "Secret",
    "SourceConfig",
    "TimezoneChange",
    "TransformConfig",
    "load_config",
]
