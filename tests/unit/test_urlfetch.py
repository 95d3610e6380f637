"""urlfetch: http(s) only, no private addresses unless allowed, bounded size and time, redirects
re-checked, and the connection goes to the address that was checked."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatterbox_server import urlfetch
from chatterbox_server.errors import ApiError

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
