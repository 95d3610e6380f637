"""The shipped nginx site, run for real in front of a real server: HTTPS on a throwaway
self-signed certificate, port 80 only redirecting (and answering ACME challenges)."""
from __future__ import annotations

import json
import time

import pytest
import requests
from nginxkit import local_site, requires_ipv6, requires_nginx, run_nginx
from serverkit import ROOT, free_port, start_server

pytestmark = [pytest.mark.server, requires_nginx]
SITE = ROOT / "config" / "nginx" / "chatterbox-server.conf"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    server = start_server(tmp, engine="tone", trust_proxy="1", max_upload_bytes=str(1024 * 1024))
    try:                    # a site local_site refuses must not leave the server running
        http_port, https_port = free_port(), free_port()
        upstream = server.base.removeprefix("http://")
        site = SITE.read_text().replace("server 127.0.0.1:4123;", f"server {upstream};")
        (tmp / "nginx").mkdir()
        site = local_site(site, tmp / "nginx", http_port, https_port)
        with pytest.MonkeyPatch.context() as patch, run_nginx(tmp / "nginx", site, http_port, https_port) as nginx:
            # requests trusts the throwaway certificate, and only it (verification stays on)
            patch.setenv("REQUESTS_CA_BUNDLE", str(tmp / "nginx" / "fullchain.pem"))
            yield server, nginx.base, nginx
    finally:
        server.stop()


def test_port_80_redirects_to_https_and_never_reaches_the_server(proxied):
    _, _, nginx = proxied
    for method in ("GET", "POST"):
        response = requests.request(method, nginx.http_base + "/v1/audio/speech?x=1", json={"input": "hi"},
                                    headers={"Authorization": "Bearer secret-key"}, allow_redirects=False,
                                    timeout=10)
        assert response.status_code == 301, response.text
        assert response.headers["Location"] == "https://127.0.0.1/v1/audio/speech?x=1"
    time.sleep(0.2)         # nginx logs a request just after its answer went out
    redirected = [line for line in nginx.access_lines() if "/v1/audio/speech" in line and " 301 " in line]
    assert len(redirected) == 2 and all("upstreams=- " in line for line in redirected), redirected


@requires_ipv6
def test_both_servers_answer_over_ipv6(proxied):
    """The shipped site's `listen [::]:...` twins: over ::1, port 80 redirects (never proxying) and
    HTTPS serves the API, as over IPv4."""
    _, base, nginx = proxied
    redirect = requests.get(nginx.over_ipv6(nginx.http_base) + "/v1/models", allow_redirects=False, timeout=10)
    assert redirect.status_code == 301 and redirect.headers["Location"] == "https://[::1]/v1/models"
    response = requests.post(nginx.over_ipv6(base) + "/v1/audio/speech",
                             json={"input": "over IPv6", "response_format": "wav"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.content[:4] == b"RIFF" and len(response.content) > 44      # the server's audio
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_acme_challenges_are_answered_on_port_80(proxied):
    _, _, nginx = proxied
    token = nginx.directory / "webroot" / ".well-known" / "acme-challenge" / "tok3n"
    token.write_text("tok3n.thumbprint")
    response = requests.get(nginx.http_base + "/.well-known/acme-challenge/tok3n", allow_redirects=False, timeout=10)
    assert response.status_code == 200 and response.text == "tok3n.thumbprint"
    missing = requests.get(nginx.http_base + "/.well-known/acme-challenge/none", allow_redirects=False, timeout=10)
    assert missing.status_code == 404           # not redirected, not proxied


def test_https_serves_the_api_and_the_server_builds_https_urls(proxied):
    _, base, _ = proxied
    assert base.startswith("https://")
    response = requests.post(base + "/api/v1/tts?response_mode=url", json={"text": "over TLS"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    urls = [entry["url"] for entry in response.json()["output_files"]]
    assert urls and all(url.startswith("https://127.0.0.1/outputs/") for url in urls), urls


def test_a_clients_x_forwarded_prefix_is_dropped(proxied):
    _, base, _ = proxied
    response = requests.post(base + "/api/v1/tts?response_mode=url", json={"text": "prefix"}, timeout=60,
                             headers={"X-Forwarded-Prefix": "/evil.example/x"})
    assert response.status_code == 200, response.text
    urls = [entry["url"] for entry in response.json()["output_files"]]
    assert urls and all(url.startswith("https://127.0.0.1/outputs/") for url in urls), urls


def test_audio_streams_through_nginx_without_buffering(proxied):
    server, base, _ = proxied
    text = " ".join(f"Sentence number {i} goes here. [[sleep:0.4]]" for i in range(6))
    started = time.monotonic()
    with requests.post(base + "/v1/audio/speech/stream", json={"input": text, "streaming_chunk_size": 50},
                       stream=True) as response:
        assert response.status_code == 200
        chunks = response.iter_content(None)
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
        total = time.monotonic() - started
    assert first[:4] == b"RIFF"
    assert first_at < 1.5 and total > 2.0, (first_at, total)   # arrived while synthesis was still running
    assert len(first) + len(rest) > 44


def test_sse_through_nginx(proxied):
    _, base, _ = proxied
    response = requests.post(base + "/v1/audio/speech", json={"input": "hello over the proxy", "stream_format": "sse"},
                             stream=True)
    events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.info" and events[-1]["type"] == "speech.audio.done"


def test_client_abort_reaches_the_server(proxied):
    server, base, _ = proxied
    text = " ".join(f"Sentence number {i} goes here. [[sleep:0.3]]" for i in range(40))
    response = requests.post(base + "/v1/audio/speech/stream", json={"input": text, "streaming_chunk_size": 50},
                             stream=True)
    next(response.iter_content(None))
    response.close()
    closed = time.monotonic()
    server.wait_until(lambda h: h["jobs_in_flight"] == 0, timeout=10, interval=0.05)
    assert time.monotonic() - closed < 2.0


def test_oversized_upload_is_the_servers_json_413(proxied):
    _, base, _ = proxied
    response = requests.post(base + "/v1/voices", data={"name": "big"},
                             files={"voice_file": ("big.wav", b"\0" * (3 * 1024 * 1024), "audio/wav")})
    assert response.status_code == 413
    assert "upload limit" in response.json()["error"]["message"]
