"""Proxies from the environment, as curl and requests honour them, never for loopback.

The Export API, Engage and Amplitude clients use ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
``NO_PROXY`` (a corporate proxy). A machine set up with a proxy and no ``NO_PROXY`` would
then send requests for the local emulators (``mp2amp demo``, an ``api_host`` on
127.0.0.1) to the proxy, which cannot reach them: loopback is added to ``NO_PROXY``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def bypass_proxy_for_loopback(environ: MutableMapping[str, str] | None = None) -> None:
    """Add loopback hosts to ``NO_PROXY`` and ``no_proxy`` when a proxy is set."""
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in PROXY_VARIABLES):
        return
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h.strip() for h in env.get(name, "").split(",") if h.strip()]
        missing = [h for h in LOOPBACK if h not in hosts]
        if missing:
            env[name] = ",".join(hosts + missing)
