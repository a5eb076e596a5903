"""Proxies from the environment, as curl and requests honour them, never for loopback.

The Export API, Engage and Amplitude clients use ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
``ALL_PROXY`` / ``NO_PROXY`` (a corporate proxy), through ``proxy_for``: their sessions do
not trust the environment, which would also send a ~/.netrc login for the API host. A
machine set up with a proxy and no ``NO_PROXY`` would then send requests for the local
emulators (``mp2amp demo``, an ``api_host`` on 127.0.0.1) to the proxy, which cannot
reach them: ``proxy_for`` never gives a proxy for loopback, and loopback is added to
``NO_PROXY`` for the libraries that read it. A ``NO_PROXY`` entry ``host:port``
(``[::1]:8080``, ``10.0.0.0/8:8080``) matches on that port only; a trailing dot on an entry
or a host is ignored, as curl does. Upper-case ``HTTP_PROXY`` is not used while
``REQUEST_METHOD`` is set (urllib's rule: in a CGI environment a request's ``Proxy:``
header becomes ``HTTP_PROXY``, httpoxy), and a warning says so once.
"""

from __future__ import annotations

import ipaddress
import logging
import netrc
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping, MutableMapping

import aiohttp

from mp2amp.errors import ConfigError, redact_userinfo

log = logging.getLogger("mp2amp.proxy")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                   "all_proxy")
LOOPBACK = ("localhost", "127.0.0.1", "::1")
PROXY_SCHEMES = ("http", "https")  # what aiohttp can talk to (no socks)
DEFAULT_PORTS = {"http": 80, "https": 443}  # a NO_PROXY host:port is matched on these too

# A request that reached no server: refused, no route, DNS, TLS, a connect that timed out,
# or a proxy that answered its CONNECT with an error. Safe to send again.
NEVER_CONNECTED = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                   aiohttp.ClientHttpProxyError)
# A proxy's answers that no retry changes: it wants credentials (407), or its policy refuses
# the host (403). Any other (a 502 from a proxy that cannot reach the API) counts as a
# connection never made.
PROXY_REFUSALS = frozenset({403, 407})


def proxy_fix(status: int, host: str, proxy: str | None = None) -> str:
    """What to do about a proxy's refusal (``PROXY_REFUSALS``) to reach ``host``;
    ``proxy``: the URL the request went through, as ``proxy_for`` gave it."""
    if status == 407:
        sent = _netrc_sent.get(proxy or "")
        if sent is not None:  # the login was not the user's to see in the URL: say where
            netrc_host, path = sent
            return (f"It refused the login {path} keeps for the proxy host {netrc_host} "
                    "(sent because the proxy's URL has none): correct that machine entry's "
                    "login and password, or write user:password@ before the host in the "
                    "proxy's URL in HTTPS_PROXY / HTTP_PROXY (that login is then used "
                    "instead)")
        return ("It wants credentials, or refused the ones given: write them into the "
                "proxy's URL in HTTPS_PROXY / HTTP_PROXY as user:password@ before its host")
    return (f"Its policy refuses {host}: ask for it to be allowed, or, if {host} can be "
            "reached without the proxy, add it to NO_PROXY")


def proxy_failure_text(exc: BaseException) -> str:
    """A connection error's words for a message, with no credentials of any URL in it."""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy answered {exc.status} {exc.message}"
    return redact_userinfo(str(exc) or type(exc).__name__)


_unreadable_netrc: set[str] = set()  # said once per process, not on every request
# Proxy URLs given a ~/.netrc login -> (the proxy's host, the netrc file): a 407 names them
_netrc_sent: dict[str, tuple[str, str]] = {}
_http_proxy_ignored: set[str] = set()  # the warning below, once per process


def bypass_proxy_for_loopback(environ: MutableMapping[str, str] | None = None) -> None:
    """Add loopback hosts to ``NO_PROXY`` and ``no_proxy`` when a proxy is set, keeping
    the hosts of the list urllib and curl read (the lower-case one when set): both get
    that list, so a host only the other spelling names still goes through the proxy, as
    it would for curl. Nothing changes when the value urllib reads is ``*`` (no proxy for
    anything); a ``*`` that is not the whole value matches nothing for urllib and curl, so
    it is dropped from the list and a spelling that is exactly ``*`` kept."""
    env = os.environ if environ is None else environ
    if not any(env.get(name) for name in PROXY_VARIABLES) or _no_proxy_value(env) == "*":
        return
    hosts: list[str] = []
    for host in _no_proxy_value(env).split(","):
        if host.strip() not in ("", "*") and host.strip() not in hosts:
            hosts.append(host.strip())
    merged = ",".join(hosts + [h for h in LOOPBACK if h not in hosts])
    for name in ("NO_PROXY", "no_proxy"):
        if env.get(name) != "*":
            env[name] = merged


def _no_proxy_value(env: Mapping[str, str]) -> str:
    """The NO_PROXY list urllib and curl read: the lower-case one when set (even empty)."""
    return env["no_proxy"] if "no_proxy" in env else env.get("NO_PROXY", "")


def proxy_for(url: str) -> str | None:
    """The environment's proxy for ``url``: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by its scheme,
    else ``ALL_PROXY`` (as curl and requests), none for a ``NO_PROXY`` host. A proxy
    written without a scheme (``host:3128``) is ``http://`` as for curl; a proxy without a
    login gets the one ~/.netrc ($NETRC) keeps for the proxy's own host (a ``machine``
    entry, never ``default``), as aiohttp's trust_env gave it. Raises ``ConfigError`` for
    a proxy no request can go through (socks) named for the URL's scheme; a socks
    ``ALL_PROXY`` is left to the tools that take it. Loopback never gets a proxy, whatever
    the environment holds."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    host = _without_dot(parts.hostname.lower())
    if _is_loopback(host) or _bypassed(host, _port(parts)):
        return None
    proxies = urllib.request.getproxies()  # without HTTP_PROXY when REQUEST_METHOD is set
    own = (proxies.get(parts.scheme) or "").strip()
    proxy = own or (proxies.get("all") or "").strip()
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    scheme = urllib.parse.urlsplit(proxy).scheme.lower()
    if proxy and scheme not in PROXY_SCHEMES and not own:
        proxy = ""  # a machine-wide socks ALL_PROXY (for other tools): not asked for here
    if not own and parts.scheme == "http":  # worded from the route taken, decided above
        _say_http_proxy_ignored(host, bool(proxy))
    if not proxy:
        return None
    if scheme not in PROXY_SCHEMES:
        raise ConfigError([
            f"the proxy {redact_userinfo(proxy)} from the environment ({parts.scheme.upper()}"
            f"_PROXY or ALL_PROXY) is {scheme}://, but mp2amp goes only through http:// or "
            f"https:// proxies: set an HTTP proxy there, or add {parts.hostname} to NO_PROXY "
            "to reach it directly, then run the same command again"],
            source="the environment")
    _check_proxy_url(proxy, parts.scheme)
    return with_netrc_login(proxy)


def _say_http_proxy_ignored(host: str, via_all: bool) -> None:
    """Warn once that an upper-case ``HTTP_PROXY`` is not used: urllib drops it while
    ``REQUEST_METHOD`` is set, as a CGI server may have made it from a request's
    ``Proxy:`` header (httpoxy); the lower-case ``http_proxy`` is always the user's."""
    if not os.environ.get("HTTP_PROXY") or "REQUEST_METHOD" not in os.environ \
            or "HTTP_PROXY" in _http_proxy_ignored:
        return
    _http_proxy_ignored.add("HTTP_PROXY")
    log.warning("HTTP_PROXY is not used for http:// URLs (%s) because REQUEST_METHOD is "
                "set: there it may come from a web request's Proxy: header (httpoxy). "
                "Requests to http:// hosts go %s; to use that proxy, set it in the "
                "lower-case http_proxy, or unset REQUEST_METHOD", host,
                "through ALL_PROXY" if via_all else "directly, without a proxy")


def _port(parts: urllib.parse.SplitResult) -> int | None:
    """The port a URL's request goes to, its scheme's default when it names none."""
    try:
        return parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is no number: no host:port entry can match it
        return None


def _without_dot(name: str) -> str:
    """``name`` without one trailing dot: ``amplitude.com.`` is ``amplitude.com`` (curl)."""
    return name[:-1] if name.endswith(".") else name


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8, ``::1`` (and ::ffff:127.x): the local emulators."""
    address = _ip(host)
    if address is None:
        return host == "localhost"
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _bypassed(host: str, port: int | None = None) -> bool:
    """``NO_PROXY`` names ``host`` (lower-case, no trailing dot): a ``*`` as the whole
    value and the platform's settings as urllib reads them, then each entry as curl
    matches it (``_entry_matches``)."""
    if urllib.request.proxy_bypass(host):
        return True
    address = _ip(host)
    return any(_entry_matches(entry, host, address, port)
               for entry in _no_proxy_value(os.environ).split(","))


def _entry_matches(entry: str, host: str, address: IPAddress | None,
                   port: int | None) -> bool:
    """One ``NO_PROXY`` entry names ``host`` on ``port``: the host or a domain it is in
    (a leading and a trailing dot ignored), an IP address, or a CIDR range holding it
    (10.0.0.0/8, [fd00::]/16); a trailing ``:port`` (IPv6 in brackets) narrows the entry
    to that port. An entry that cannot be read (a port that is no number) matches nothing."""
    entry = entry.strip().lower()
    if entry.startswith("["):  # [fd00::1], [fd00::1]:8080, [fd00::]/16, [fd00::]/16:8080
        inner, _, rest = entry[1:].partition("]")
        bits, colon, entry_port = rest.partition(":")
        name = inner + bits
    elif "/" in entry:  # 10.0.0.0/8, 10.0.0.0/8:8080, fd00::/16
        network, _, rest = entry.partition("/")
        bits, colon, entry_port = rest.partition(":")
        name = f"{network}/{bits}"
    elif entry.count(":") == 1:  # host:port (a bare IPv6 address has more colons)
        name, colon, entry_port = entry.partition(":")
    else:
        name, colon, entry_port = entry, "", ""
    if colon and not (entry_port.isdigit() and port == int(entry_port)):
        return False
    if "/" in name:
        try:
            return address is not None and address in ipaddress.ip_network(name, strict=False)
        except ValueError:
            return False
    name = _without_dot(name).lstrip(".")
    if address is not None:
        return name == host or _ip(name) == address
    return bool(name) and (host == name or host.endswith("." + name))


def _check_proxy_url(proxy: str, scheme: str) -> None:
    """A proxy URL every request would refuse (a password with an unencoded '#', '?' or
    '/', a port that is no number) stops the run naming it, not each request as a network
    error retried for minutes."""
    parts = urllib.parse.urlsplit(proxy)
    try:
        port_ok = parts.port is not None or ":" not in parts.netloc.rpartition("@")[2]
    except ValueError:
        port_ok = False
    if parts.hostname and port_ok and not (parts.query or parts.fragment) \
            and parts.path in ("", "/"):
        return
    raise ConfigError([
        f"the proxy {redact_userinfo(proxy)} from the environment ({scheme.upper()}_PROXY or "
        "ALL_PROXY) is not a URL requests can go through: write it as "
        "http://user:password@host:port, with '@', '#', '?', '/' and ':' in the login or "
        "password percent-encoded (%40, %23, %3F, %2F, %3A), then run the same command again"],
        source="the environment")


def with_netrc_login(proxy: str) -> str:
    """``proxy`` with the login ~/.netrc keeps for its host, when it has none of its own."""
    parts = urllib.parse.urlsplit(proxy)
    if parts.username is not None or not parts.hostname:
        return proxy
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    login = _netrc_login(parts.hostname, path)
    if login is None:
        return proxy
    quoted = ":".join(urllib.parse.quote(p, safe="") for p in login)
    with_login = parts._replace(netloc=f"{quoted}@{parts.netloc}").geturl()
    _netrc_sent[with_login] = (parts.hostname, path)
    return with_login


def _netrc_login(host: str, path: str) -> tuple[str, str] | None:
    try:
        entries = netrc.netrc(path)
    except FileNotFoundError:
        return None
    except netrc.NetrcParseError as exc:  # its message quotes a token: maybe a password
        # netrc counts the line after a bad token that ends its line: "near"
        near = f" near line {exc.lineno}" if exc.lineno else ""
        _say_unreadable_netrc(path, f"not valid netrc syntax{near}")
        return None
    except UnicodeError:  # neither UTF-8 nor the locale's encoding
        _say_unreadable_netrc(path, "it is not text in UTF-8 or the locale's encoding")
        return None
    except OSError as exc:
        _say_unreadable_netrc(path, exc.strerror or type(exc).__name__)
        return None
    # machine names match whatever their case, as for curl; a 'default' login is the API's
    found = next((v for k, v in entries.hosts.items() if k.lower() == host.lower()), None)
    if found is None:
        return None
    login, account, password = found
    user = login or account or ""
    return (user, password or "") if user or password else None


def _say_unreadable_netrc(path: str, why: str) -> None:
    """Warn once per file; ``why`` never holds the file's contents."""
    if path not in _unreadable_netrc:
        _unreadable_netrc.add(path)
        log.warning("cannot read %s (%s): no proxy login is taken from it; the proxy is "
                    "asked without one", path, why)
