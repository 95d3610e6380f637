"""Fetching client-named http(s) URLs without letting a client reach the server's own network.

The rules (`check_url`, `address_allowed`) are pure. `fetch` resolves the host once, checks every
address it resolves to, and connects to the checked address itself (the Host header and TLS SNI
still name the host), so a DNS answer that changes between the check and the connection
(DNS rebinding) cannot steer it to a private address. Redirects are followed by hand, each hop
checked again. The body is bounded in bytes and the whole fetch in time.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
import urllib3.connection

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


class Deadline:
    """Cuts a fetch's connection when its time is up, wherever the fetch is waiting.

    urllib3's timeouts bound each connect and each recv, so a server that sends one byte just
    inside the read timeout, forever, would hold the fetch (and its client) without end. At the
    deadline a timer shuts the socket down (through a duplicate of its descriptor, which works for
    TLS sockets and under gevent alike); the waiting read then ends, and `fired` tells the caller
    why. The connection cancels the timer before it closes, so a reused descriptor is never hit.
    """

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False
        self._fd = -1
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        return max(0.05, self.at - time.monotonic())

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.at

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._fd = sock.fileno()
            self._timer = threading.Timer(self.remaining(), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            self._fd = -1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            self.fired = True
            try:
                probe = socket.socket(fileno=os.dup(self._fd))
            except OSError:
                return
            try:
                probe.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                probe.close()


class _Watched:
    """A urllib3 connection whose socket a Deadline watches from the moment it exists."""
    deadline: Deadline

    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()      # before the TLS handshake, which can be trickled too
        self.deadline.watch(sock)
        return sock

    def close(self) -> None:
        self.deadline.cancel()
        super().close()


class _WatchedHTTP(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, urllib3.connection.HTTPSConnection):
    pass


def fetch(url: str, policy: FetchPolicy, param: str) -> bytes:
    """The body at `url`, within policy.timeout seconds in all (redirects, headers and body)."""
    deadline = Deadline(time.monotonic() + policy.timeout)
    try:
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
                deadline.cancel()
                response.release_conn()
                response.close()
    finally:
        deadline.cancel()
    raise refuse(param, f"more than {policy.max_redirects} redirects")


def timed_out(policy: FetchPolicy, param: str) -> ApiError:
    return refuse(param, f"the download took longer than {policy.timeout:g} s (CHATTERBOX_URL_FETCH_TIMEOUT)",
                  code="url_timeout")


def _timeout(exc: BaseException) -> bool:
    """A connect or read timeout; urllib3's NewConnectionError (refused, unreachable) is a subclass
    of ConnectTimeoutError but no timeout."""
    return (isinstance(exc, urllib3.exceptions.TimeoutError)
            and not isinstance(exc, urllib3.exceptions.NewConnectionError))


def _request(target: Target, address: str, deadline: Deadline, policy: FetchPolicy,
             param: str) -> urllib3.BaseHTTPResponse:
    remaining = deadline.remaining()
    timeout = urllib3.Timeout(connect=remaining, read=remaining)
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address, target.port, timeout=timeout, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED",
            deadline=deadline)
        pool.ConnectionCls = _WatchedHTTPS
    else:
        pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False, maxsize=1,
                                          deadline=deadline)
        pool.ConnectionCls = _WatchedHTTP
    default_port = 443 if target.scheme == "https" else 80
    host = target.host if target.port == default_port else f"{target.host}:{target.port}"
    if ":" in target.host and not host.startswith("["):
        host = f"[{target.host}]" if target.port == default_port else f"[{target.host}]:{target.port}"
    try:
        return pool.urlopen("GET", target.path, headers={"Host": host, "User-Agent": "chatterbox-server",
                                                          "Accept-Encoding": "identity"},
                            redirect=False, retries=False, preload_content=False, assert_same_host=False)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        deadline.cancel()
        if deadline.expired() or _timeout(exc):
            raise timed_out(policy, param) from None
        raise refuse(param, f"fetching the URL failed ({type(exc).__name__})", code="url_unreachable") from None


def _read_bounded(response: urllib3.BaseHTTPResponse, deadline: Deadline, policy: FetchPolicy,
                  param: str) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise refuse(param, f"the file is {declared} bytes; the limit is {policy.max_bytes}", 413, "file_too_large")
    parts, total = [], 0
    try:
        while True:
            if deadline.expired():
                raise timed_out(policy, param)
            chunk = response.read1(READ_SIZE)
            if not chunk:
                break
            total += len(chunk)
            if total > policy.max_bytes:
                raise refuse(param, f"the file is larger than the limit of {policy.max_bytes} bytes", 413,
                              "file_too_large")
            parts.append(chunk)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if deadline.expired() or _timeout(exc):
            raise timed_out(policy, param) from None
        raise refuse(param, f"reading the URL failed ({type(exc).__name__})", code="url_unreachable") from None
    if deadline.fired:              # the cut looked like the end of a body of undeclared length
        raise timed_out(policy, param)
    return b"".join(parts)
