"""Host and Origin rules against DNS rebinding and cross-site form posts. No Flask here.

A server on 127.0.0.1 is reachable from any web page the user opens: a page can post a form to
it (a "simple" request that CORS does not stop), and a hostile DNS name that resolves to
127.0.0.1 makes the browser treat the server as that page's own origin. The Host check refuses
the second, the Origin check the first.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
IP_LITERALS = "<an IP address>"          # in an allowed-hosts tuple: any IP literal as Host
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def split_host(host: str) -> str:
    """The name of a Host header without its port, lower case (`[::1]:80` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def loopback_bind(addresses: list[str]) -> bool:
    """True when every address gunicorn binds is loopback or a Unix socket."""
    for address in addresses:
        if address.startswith("unix:"):
            continue
        name = split_host(address) if ":" in address else address
        if name == "localhost":
            continue
        try:
            if not ipaddress.ip_address(name).is_loopback:
                return False
        except ValueError:
            return False
    return True


def bind_host_names(addresses: list[str]) -> tuple[str, ...]:
    """Names a client may use for this server by its bind addresses: a name written in
    CHATTERBOX_BIND, and this machine's host name for a wildcard bind (0.0.0.0, ::)."""
    names: list[str] = []
    for address in addresses:
        if address.startswith(("unix:", "fd://")):
            continue
        name = split_host(address) if ":" in address else address.strip().lower()
        try:
            wildcard = ipaddress.ip_address(name).is_unspecified
        except ValueError:
            names.append(name)
            continue
        if wildcard:
            names.append(socket.gethostname().lower())
    return tuple(dict.fromkeys(name for name in names if name))


def allowed_host_names(setting: str, addresses: list[str], behind_proxy: bool,
                       keys_enabled: bool = False) -> tuple[str, ...] | None:
    """The Host names to accept; None accepts any. An empty setting means:
    - on a loopback bind without a proxy (the default install): the local names only;
    - else, with API keys: any (a DNS-rebinding page has no key, so it reaches only what needs none);
    - else (no keys, reachable from a network): IP literals (a page at http://10.0.0.5/ is that
      address's own origin, never a rebinding), the local names and the bind addresses' names."""
    names = tuple(part.strip().lower() for part in setting.split(",") if part.strip())
    if "*" in names:
        return None
    if names:
        return names
    if loopback_bind(addresses) and not behind_proxy:
        return LOCAL_NAMES
    if keys_enabled:
        return None
    return (IP_LITERALS, *LOCAL_NAMES, *bind_host_names(addresses))


def host_allowed(host: str, allowed: tuple[str, ...] | None) -> bool:
    if allowed is None:
        return True
    name = split_host(host)
    if IP_LITERALS in allowed and _ip_literal(name):
        return True
    return any(name == entry or (entry.startswith(".") and name.endswith(entry)) for entry in allowed)


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def cross_site(method: str, origin: str | None, fetch_site: str | None, host: str,
               allowed_origins: tuple[str, ...]) -> bool:
    """True for a state-changing request a browser sent on behalf of another site."""
    if method not in UNSAFE_METHODS:
        return False
    if origin is None:
        return fetch_site == "cross-site"
    if "*" in allowed_origins or origin in allowed_origins:
        return False
    parts = urlsplit(origin)
    return origin == "null" or parts.netloc.lower() != host.strip().lower()
