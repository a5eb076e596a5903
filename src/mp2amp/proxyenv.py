"""Proxies from the environment, as curl and requests honour them, never for loopback.

The Export API, Engage and Amplitude clients use ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
``NO_PROXY`` (a corporate proxy). A machine set up with a proxy and no ``NO_PROXY`` would
then send requests for the local emulators (``mp2amp demo``, an ``api_host`` on
127.0.0.1) to the proxy, which cannot reach them: loopback is added to ``NO_PROXY``.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
from collections.abc import MutableMapping

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def bypass_proxy_for_loopback(environ: MutableMapping[str, str] | None = None) -> None:
    """Add loopback hosts to ``NO_PROXY`` and ``no_proxy`` when a proxy is set, keeping
    the hosts either spelling held: both get the same list, as urllib and aiohttp read
    the lower-case one first. A ``*`` (no proxy for anything) is left alone: urllib
    honours it only as the whole value."""
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in PROXY_VARIABLES):
        return
    hosts: list[str] = []
    for name in ("no_proxy", "NO_PROXY"):
        for host in env.get(name, "").split(","):
            if host.strip() == "*":
                return
            if host.strip() and host.strip() not in hosts:
                hosts.append(host.strip())
    merged = ",".join(hosts + [h for h in LOOPBACK if h not in hosts])
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = merged


def proxy_for(url: str) -> str | None:
    """The environment's proxy for ``url`` (``HTTPS_PROXY`` / ``HTTP_PROXY`` by its scheme,
    none for a ``NO_PROXY`` host), as aiohttp's trust_env picks it, but without reading
    ``~/.netrc``: a session that trusts the environment adds a netrc login for the host
    as an Authorization header (the user's credentials would go to Amplitude)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme) or None
