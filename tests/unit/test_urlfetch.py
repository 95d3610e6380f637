"""urlfetch: http(s) only, no private addresses unless allowed, bounded size and time, redirects
re-checked, and the connection goes to the address that was checked."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatterbox_server.errors import ApiError
from chatterbox_server.security import urlfetch

ALLOW = urlfetch.FetchPolicy(allow_private=True, max_bytes=10_000, timeout=3.0)
DENY = urlfetch.FetchPolicy(allow_private=False, max_bytes=10_000, timeout=3.0)


class Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        if self.path == "/ok":
            self._send(b"RIFF" + b"a" * 96)
        elif self.path == "/big":
            self._send(b"b" * 20_000)
        elif self.path == "/big-undeclared":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"c" * 20_000)
        elif self.path.startswith("/redirect"):
            hops = int(self.path.rsplit("/", 1)[-1])
            self.send_response(302)
            self.send_header("Location", "/ok" if hops == 0 else f"/redirect/{hops - 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/trickle-headers":
            # one byte of the status line and headers at a time: every recv gets data well within
            # any per-recv timeout, but the answer never ends (bounded here at 40 * 0.2 s)
            head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 40 + b"\r\nContent-Length: 4\r\n\r\nRIFF"
            try:
                for byte in head[:40]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            self.close_connection = True
        elif self.path == "/trickle-body":
            # no Content-Length: a cut connection would look like the end of the file
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"t")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"s")
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def refused(url: str, policy: urlfetch.FetchPolicy) -> ApiError:
    with pytest.raises(ApiError) as caught:
        urlfetch.fetch(url, policy, "input_audio_source")
    assert caught.value.param == "input_audio_source"
    return caught.value


@pytest.mark.parametrize("url", ["ftp://example.com/a.wav", "file:///etc/passwd", "gopher://x/", "http://",
                                 "http://user:pw@example.com/a.wav", "http://exa mple.com/", "javascript:alert(1)",
                                 "http://example.com:99999/"])
def test_only_plain_http_urls_are_accepted(url):
    with pytest.raises(ApiError) as caught:
        urlfetch.check_url(url, "p")
    assert caught.value.status == 400


@pytest.mark.parametrize(("address", "private_ok", "allowed"), [
    ("8.8.8.8", False, True), ("2606:4700::1111", False, True),
    ("127.0.0.1", False, False), ("10.1.2.3", False, False), ("192.168.0.1", False, False),
    ("172.16.0.1", False, False), ("169.254.169.254", False, False), ("::1", False, False),
    ("fe80::1", False, False), ("fc00::1", False, False), ("100.64.0.1", False, False),
    ("::ffff:127.0.0.1", False, False), ("0.0.0.0", False, False),
    ("127.0.0.1", True, True), ("169.254.169.254", True, True), ("0.0.0.0", True, False),
    ("224.0.0.1", True, False),
])
def test_address_rules(address, private_ok, allowed):
    assert urlfetch.address_allowed(address, private_ok) is allowed


EMBEDDED_PRIVATE = [
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::127.0.0.1", "64:ff9b::169.254.169.254",  # NAT64 /96
    "64:ff9b:1::7f00:1", "64:ff9b:1:abcd::808:808",                                   # local-use NAT64 /48
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:c0a8:1::",                              # 6to4
    "::127.0.0.1", "::10.0.0.1", "::169.254.169.254",                                    # IPv4-compatible
    "::ffff:127.0.0.1", "::ffff:10.1.2.3",                                               # IPv4-mapped
    "::ffff:0:127.0.0.1", "::ffff:0:10.0.0.1", "::ffff:0:169.254.169.254",               # IPv4-translated
    "2001:0:4136:e378:8000:63bf:80ff:fffe", "2001:0:5ef5:79fd::1",                        # Teredo
]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_ipv6_forms_that_embed_a_private_ipv4_address_are_refused(address):
    assert urlfetch.address_allowed(address, False) is False
    assert urlfetch.address_allowed(address, True) is True      # the setting that allows private ones


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8", "::ffff:8.8.8.8",
                                     "::ffff:0:8.8.8.8"])
def test_ipv6_forms_that_embed_a_public_ipv4_address_are_judged_by_it(address):
    assert urlfetch.address_allowed(address, False) is True


@pytest.mark.parametrize("address", ["64:ff9b::e000:1", "64:ff9b::", "2002::", "::ffff:0:0.0.0.0",
                                     "::ffff:0:224.0.0.1", "2002:e000:1::"])
def test_embedded_multicast_or_unspecified_is_never_fetched(address):
    assert urlfetch.address_allowed(address, True) is False


def test_a_name_resolving_to_an_embedded_private_address_is_refused(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::a9fe:a9fe", 80, 0, 0))])
    error = refused("http://nat64.test/a.wav", DENY)
    assert error.status == 400 and "64:ff9b::a9fe:a9fe" in error.message


def test_loopback_is_refused_by_default(server):
    error = refused(server + "/ok", DENY)
    assert error.status == 400 and "private" in error.message
    assert refused("http://localhost:1/ok", DENY).status == 400


def test_loopback_is_fetched_when_the_setting_allows_it(server):
    assert urlfetch.fetch(server + "/ok", ALLOW, "p") == b"RIFF" + b"a" * 96


def test_size_limits_declared_and_undeclared(server):
    assert refused(server + "/big", ALLOW).status == 413
    assert refused(server + "/big-undeclared", ALLOW).status == 413


def test_time_limit(server):
    started = time.monotonic()
    error = refused(server + "/slow", urlfetch.FetchPolicy(True, 10_000, timeout=1.0))
    assert error.code == "url_timeout" and time.monotonic() - started < 2.5


def test_a_server_trickling_its_headers_is_cut_at_the_deadline(server):
    """The timeout is one deadline for the whole fetch, not a limit on each recv."""
    started = time.monotonic()
    error = refused(server + "/trickle-headers", urlfetch.FetchPolicy(True, 10_000, timeout=1.0))
    elapsed = time.monotonic() - started
    assert error.code == "url_timeout" and error.status == 400, error.message
    assert "1 s" in error.message and 0.9 < elapsed < 1.6, elapsed


def test_a_trickled_body_is_cut_at_the_deadline_not_returned_truncated(server):
    started = time.monotonic()
    error = refused(server + "/trickle-body", urlfetch.FetchPolicy(True, 10_000, timeout=1.5))
    elapsed = time.monotonic() - started
    assert error.code == "url_timeout", error.message
    assert 1.4 < elapsed < 1.9, elapsed


def test_a_hung_server_is_cut_at_the_deadline():
    """A server that accepts the connection and never answers (a stopped process's listen backlog)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        started = time.monotonic()
        error = refused(f"http://127.0.0.1:{port}/a.wav", urlfetch.FetchPolicy(True, 10_000, timeout=1.0))
        elapsed = time.monotonic() - started
    assert error.code == "url_timeout" and error.status == 400, error.message
    assert 0.9 < elapsed < 1.6, elapsed


def test_redirects_are_followed_and_bounded(server):
    assert urlfetch.fetch(server + "/redirect/2", ALLOW, "p").startswith(b"RIFF")
    assert "redirects" in refused(server + "/redirect/5", ALLOW).message


def test_http_errors_and_dead_hosts_are_4xx(server):
    assert refused(server + "/missing", ALLOW).status == 400
    with socket.socket() as probe:          # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert refused(f"http://127.0.0.1:{port}/", ALLOW).code == "url_unreachable"


def test_the_connection_goes_to_the_checked_address(server, monkeypatch):
    """A name resolved once: later answers (DNS rebinding) cannot change where it connects."""
    port = int(server.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "10.9.9.9", "10.9.9.9"])
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    Handler.hosts.clear()
    assert urlfetch.fetch(f"http://rebind.test:{port}/ok", ALLOW, "p").startswith(b"RIFF")
    assert Handler.hosts == [f"rebind.test:{port}"]
    assert next(answers) == "10.9.9.9"          # resolved exactly once


def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))])
    assert "10.0.0.1" in refused("http://mixed.test/a.wav", DENY).message
