"""Fetching client-named http(s) URLs without letting a client reach the server's own network.

The rules (`check_url`, `address_allowed`) are pure. `fetch` resolves the host once, checks every
address it resolves to, and connects to the checked address itself (the Host header and TLS SNI
still name the host), so a DNS answer that changes between the check and the connection
(DNS rebinding) cannot steer it to a private address. Redirects are followed by hand, each hop
checked again. The body is bounded in bytes and the whole fetch in time.
"""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

from chatterbox_server.errors import ApiError

REDIRECTS = (301, 302, 303, 307, 308)
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    allow_private: bool
    max_bytes: int
    timeout: float
    max_redirects: int = 3


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str          # path and query, as sent in the request line


def refuse(param: str, message: str, status: int = 400, code: str = "url_refused") -> ApiError:
    return ApiError(status, f"{param}: {message}", param=param, code=code)


def is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def check_url(url: str, param: str) -> Target:
    """The parts of an http(s) URL; ApiError 400 for other schemes, credentials or a bad port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise refuse(param, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse(param, f"only http and https URLs are fetched, not {scheme or 'this'!r}")
    if not parts.hostname:
        raise refuse(param, "the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise refuse(param, "URLs with credentials are not fetched")
    if any(ord(c) < 33 for c in url):
        raise refuse(param, "the URL contains spaces or control characters")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


# IPv6 ranges whose addresses carry an IPv4 address that a translator, relay or dual stack reaches:
# judged by the IPv4 address they embed (RFC 6052, RFC 3056, RFC 4291, RFC 2765).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")              # well-known NAT64 prefix, IPv4 in the last 32 bits
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")           # deprecated ::a.b.c.d
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT ::ffff:0:a.b.c.d
# Ranges refused unless private addresses are allowed, whatever Python's is_global says of them:
# local-use NAT64 (RFC 8215; where its IPv4 sits depends on the operator's prefix length) and
# Teredo (a tunnel to whichever host its obfuscated client address names).
TUNNELS = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("2001::/32"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, translated, compatible, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64 or ip in IPV4_TRANSLATED or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(address: str, allow_private: bool) -> bool:
    """Public unicast addresses always; private, loopback and link-local ones only when allowed;
    multicast and unspecified addresses never. An IPv6 address that embeds an IPv4 address is
    judged by that IPv4 address; local-use NAT64 and Teredo count as private."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_multicast or ip.is_unspecified:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in TUNNELS):
            return allow_private
        inner = embedded_ipv4(ip)
        if inner is not None:
            ip = inner
            if ip.is_multicast or ip.is_unspecified:
                return False
    return ip.is_global or allow_private


def resolve(target: Target, policy: FetchPolicy, param: str) -> str:
    """The address to connect to: every address the host resolves to must be allowed."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refuse(param, f"cannot resolve {target.host!r} ({exc})", code="url_unreachable") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    blocked = [address for address in addresses if not address_allowed(address, policy.allow_private)]
    if blocked or not addresses:
        raise refuse(param, f"{target.host!r} resolves to a private, loopback or link-local address "
                            f"({', '.join(blocked) or 'none'}); such URLs are refused")
    return addresses[0]


def fetch(url: str, policy: FetchPolicy, param: str) -> bytes:
    deadline = time.monotonic() + policy.timeout
    for _ in range(policy.max_redirects + 1):
        target = check_url(url, param)
        address = resolve(target, policy, param)
        response = _request(target, address, deadline, policy, param)
        try:
            if response.status in REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise refuse(param, f"the server answered HTTP {response.status}", code="url_unreachable")
            return _read_bounded(response, deadline, policy, param)
        finally:
            response.release_conn()
            response.close()
    raise refuse(param, f"more than {policy.max_redirects} redirects")


def _request(target: Target, address: str, deadline: float, policy: FetchPolicy,
             param: str) -> urllib3.BaseHTTPResponse:
    remaining = max(0.1, deadline - time.monotonic())
    timeout = urllib3.Timeout(connect=remaining, read=remaining)
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address, target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False, maxsize=1)
    default_port = 443 if target.scheme == "https" else 80
    host = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host and not host.startswith("["):
        host = f"[{target.host}]" if target.port == default_port else f"[{target.host}]:{target.port}"
    try:
        return pool.urlopen("GET", target.path, headers={"Host": host, "User-Agent": "chatterbox-server",
                                                          "Accept-Encoding": "identity"},
                            redirect=False, retries=False, preload_content=False, assert_same_host=False)
    except urllib3.exceptions.HTTPError as exc:
        raise refuse(param, f"fetching the URL failed ({type(exc).__name__})", code="url_unreachable") from None


def _read_bounded(response: urllib3.BaseHTTPResponse, deadline: float, policy: FetchPolicy, param: str) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise refuse(param, f"the file is {declared} bytes; the limit is {policy.max_bytes}", 413, "file_too_large")
    parts, total = [], 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise refuse(param, f"the download took longer than {policy.timeout:g} s", code="url_timeout")
            chunk = response.read1(READ_SIZE)
            if not chunk:
                break
            total += len(chunk)
            if total > policy.max_bytes:
                raise refuse(param, f"the file is larger than the limit of {policy.max_bytes} bytes", 413,
                              "file_too_large")
            parts.append(chunk)
    except urllib3.exceptions.HTTPError as exc:
        raise refuse(param, f"reading the URL failed ({type(exc).__name__})", code="url_unreachable") from None
    return b"".join(parts)
