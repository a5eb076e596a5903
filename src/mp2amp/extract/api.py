"""Where and how to call Mixpanel's read APIs: hosts by residency, auth, limits.

Hosts (reference mixpanel-api.md §1.1, §2.1): Raw Export on ``data``, ``data-eu`` or
``data-in.mixpanel.com``; Engage on ``mixpanel.com``, ``eu.mixpanel.com`` or
``in.mixpanel.com``. ``api_host`` replaces both (an emulator or a proxy).

Auth (§1.2): a service account (``user:secret``, Basic, with ``project_id`` in the query)
or the deprecated project API secret (Basic, secret as user, empty password).
Secrets are kept out of ``repr`` and out of every message.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mp2amp.errors import ConfigError, redact_userinfo

if TYPE_CHECKING:
    from mp2amp.config.sections import MixpanelConfig

EXPORT_HOSTS = {"us": "https://data.mixpanel.com", "eu": "https://data-eu.mixpanel.com",
                "in": "https://data-in.mixpanel.com"}
QUERY_HOSTS = {"us": "https://mixpanel.com", "eu": "https://eu.mixpanel.com",
               "in": "https://in.mixpanel.com"}
EXPORT_PATH = "/api/2.0/export"
ENGAGE_PATH = "/api/query/engage"


@dataclass(frozen=True)
class MixpanelSettings:
    """Everything the export and engage clients need. Build with ``from_env`` or directly.

    The limits default to Mixpanel's published Raw Export limits (§1.7): 60 queries an
    hour, 3 a second, 100 concurrent. Raise them only against an emulator.
    """

    project_id: int | None = None
    region: str = "us"
    api_host: str | None = None
    service_account: str | None = field(default=None, repr=False)  # "user:secret"
    api_secret: str | None = field(default=None, repr=False)
    per_hour: int = 60
    per_second: int = 3
    max_concurrent: int = 100
    query_per_hour: int = 60  # Engage (Query API): 60 an hour, 5 at once (§2.4)
    query_concurrent: int = 5
    max_attempts: int = 8  # failures per window, before the run stops with the last error
    max_rate_limited: int = 50  # 429s per window (waited out, not failures) before it stops
    backoff_base: float = 2.0  # seconds; jittered exponential backoff between attempts
    backoff_cap: float = 300.0
    # No cap on a whole window: a big day streams for a long time, and a cap would make it
    # fail the same way on every attempt. Silence is what counts as a drop: a day may take
    # minutes to start (§1.5), so the read timeout is generous.
    timeout: float | None = None
    read_timeout: float = 300.0
    # A host that drops packets silently would cost the system's ~2 min per attempt.
    connect_timeout: float = 30.0
    events: Sequence[str] = ()  # export only these event names (the ``event`` parameter)
    where: str | None = None
    time_in_ms: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.region not in EXPORT_HOSTS:
            problems.append(f"mixpanel.region must be one of us, eu, in (got {self.region!r})")
        if self.service_account is None and self.api_secret is None:
            problems.append("no Mixpanel credentials: set MIXPANEL_SERVICE_ACCOUNT "
                            "(user:secret) or MIXPANEL_SECRET in the environment")
        if self.service_account is not None:
            if ":" not in self.service_account:
                problems.append("MIXPANEL_SERVICE_ACCOUNT must look like user:secret")
            if self.project_id is None:
                problems.append("mixpanel.project_id is required with a service account")
        if self.api_host is not None and _has_userinfo(self.api_host):
            # the requests carry their own Authorization, which cannot go with these
            problems.append(f"mixpanel.api_host {redact_userinfo(self.api_host)!r} carries "
                            "credentials (user:password@): Mixpanel's come only from "
                            "MIXPANEL_SERVICE_ACCOUNT or MIXPANEL_SECRET; remove them from "
                            "the URL")
        for name in ("per_hour", "per_second", "max_concurrent", "max_attempts",
                     "max_rate_limited", "query_per_hour", "query_concurrent"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if problems:
            raise ConfigError(problems, source="Mixpanel settings")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> MixpanelSettings:
        """Settings with credentials from ``MIXPANEL_SERVICE_ACCOUNT`` or ``MIXPANEL_SECRET``
        (the service account wins when both are set)."""
        env = os.environ if env is None else env
        account = env.get("MIXPANEL_SERVICE_ACCOUNT") or None
        secret = None if account else (env.get("MIXPANEL_SECRET") or None)
        return cls(service_account=account, api_secret=secret, **kwargs)

    @classmethod
    def from_config(cls, mixpanel: MixpanelConfig, **kwargs: Any) -> MixpanelSettings:
        """Settings from the ``[mixpanel]`` section of ``mp2amp.toml`` (secrets from the
        environment, as the config loader read them); ``kwargs`` set limits and filters."""
        account = mixpanel.service_account.reveal() if mixpanel.service_account else None
        secret = None if account else (mixpanel.secret.reveal() if mixpanel.secret else None)
        return cls(project_id=mixpanel.project_id, region=mixpanel.region,
                   api_host=mixpanel.api_host, service_account=account, api_secret=secret,
                   **kwargs)

    def base(self, hosts: Mapping[str, str]) -> str:
        return (self.api_host or hosts[self.region]).rstrip("/")

    @property
    def export_url(self) -> str:
        return self.base(EXPORT_HOSTS) + EXPORT_PATH

    @property
    def engage_url(self) -> str:
        return self.base(QUERY_HOSTS) + ENGAGE_PATH

    def auth_header(self) -> str:
        user_pass = self.service_account if self.service_account else f"{self.api_secret}:"
        return "Basic " + base64.b64encode(user_pass.encode()).decode("ascii")

    def auth_params(self) -> dict[str, str]:
        """``project_id`` goes in the query with service-account auth (and does no harm
        with a secret when known)."""
        return {"project_id": str(self.project_id)} if self.project_id is not None else {}

    @property
    def auth_kind(self) -> str:
        return "service account" if self.service_account else "project API secret"


def _has_userinfo(url: str) -> bool:
    try:
        return urlsplit(url).username is not None
    except ValueError:  # not a URL: the request says so (the config loader checks it first)
        return False


# True whatever the run has done so far: earlier windows may already be in Amplitude.
RESUME_KEEPS = "the run is recorded: what Amplitude already accepted is not sent again"


def forbidden_message(service: str, body: str, auth_kind: str,
                      then: str = f"run the same command with --resume ({RESUME_KEEPS})"
                      ) -> str:
    """A 403: the credentials are valid but not for this project (a service account
    without a role in it, or a project_id of another project). Rotating the secret would
    not help, so the message names mixpanel.project_id first. Mixpanel's body names the
    project, never the secret."""
    said = " ".join(body.split())[:200] or "(empty body)"
    return (f"{service}: Mixpanel answered 403 ({said}) with the {auth_kind} credentials: "
            "check that mixpanel.project_id is the project these credentials belong to (a "
            f"service account needs a role in that project), then {then}")
