"""A URL's server that is stopped, hung or slow: /api/v1/vc answers within CHATTERBOX_URL_FETCH_TIMEOUT
with a 4xx that names the URL's problem, never a 500, and the front worker keeps serving meanwhile."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from serverkit import start_server

pytestmark = pytest.mark.server
FETCH_TIMEOUT = 2.0


class Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # a byte of the answer every 0.25 s (bounded: 60 bytes): each recv is quick, the answer endless
        head = b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nX-Pad: " + b"p" * 80
        try:
            for byte in head[:60]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.25)
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("urlfaults"), engine="tone", front_workers="1",
                          url_fetch_allow_private="true", url_fetch_timeout=str(FETCH_TIMEOUT))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/a.wav"
    httpd.shutdown()
    httpd.server_close()


def vc_from(server, url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(server.extended_base + "/api/v1/vc",
                             json={"input_audio_source": url, "target_voice_source": url}, timeout=30)
    return response, time.monotonic() - started


def test_a_slow_server_is_cut_at_the_fetch_timeout_while_health_stays_fast(server, slow_url):
    answer: list = []
    worker = threading.Thread(target=lambda: answer.extend(vc_from(server, slow_url)))
    worker.start()
    health = []
    for _ in range(10):
        started = time.monotonic()
        assert requests.get(server.url("/health"), timeout=5).status_code == 200
        health.append(time.monotonic() - started)
        time.sleep(0.1)
    worker.join(timeout=20)
    response, elapsed = answer
    assert response.status_code == 400, response.text
    error = response.json()
    assert "input_audio_source" in error["detail"] and f"{FETCH_TIMEOUT:g} s" in error["detail"], error
    assert FETCH_TIMEOUT - 0.1 < elapsed < FETCH_TIMEOUT + 1.5, elapsed
    assert max(health) < 0.5, health


def test_a_hung_server_is_cut_at_the_fetch_timeout(server):
    with socket.socket() as listener:       # accepts (the kernel's backlog) but never answers: SIGSTOPped
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        response, elapsed = vc_from(server, f"http://127.0.0.1:{listener.getsockname()[1]}/a.wav")
    assert response.status_code == 400, response.text
    assert "took longer" in response.json()["detail"] and elapsed < FETCH_TIMEOUT + 1.5, elapsed


def test_a_stopped_server_is_a_clear_4xx_at_once(server):
    with socket.socket() as probe:          # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response, elapsed = vc_from(server, f"http://127.0.0.1:{port}/a.wav")
    assert response.status_code == 400, response.text
    assert "fetching the URL failed" in response.json()["detail"] and elapsed < 2.0, elapsed
