"""The shipped nginx site, run for real in front of a real server."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from serverkit import ROOT, free_port, start_server

NGINX_MISSING = shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()
# CI installs nginx (.ci/run), so there a missing nginx is a failure, not a skip
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(NGINX_MISSING and not os.environ.get("CI"),
                                 reason="nginx is not installed: apt-get install nginx-light")]
SITE = ROOT / "config" / "nginx" / "chatterbox-server.conf"


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx")
    server = start_server(tmp, engine="tone", trust_proxy="1", max_upload_bytes=str(1024 * 1024))
    port = free_port()
    upstream = server.base.removeprefix("http://")
    site = SITE.read_text().replace("server 127.0.0.1:4123;", f"server {upstream};")
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", site)
    (tmp / "site.conf").write_text(site)
    (tmp / "nginx.conf").write_text(f"""
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
""")
    check = subprocess.run([nginx_binary(), "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen([nginx_binary(), "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield server, f"http://127.0.0.1:{port}"
    nginx.terminate()
    nginx.wait(timeout=10)
    server.stop()


def test_audio_streams_through_nginx_without_buffering(proxied):
    server, base = proxied
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
    _, base = proxied
    response = requests.post(base + "/v1/audio/speech", json={"input": "hello over the proxy", "stream_format": "sse"},
                             stream=True)
    events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.info" and events[-1]["type"] == "speech.audio.done"


def test_client_abort_reaches_the_server(proxied):
    server, base = proxied
    text = " ".join(f"Sentence number {i} goes here. [[sleep:0.3]]" for i in range(40))
    response = requests.post(base + "/v1/audio/speech/stream", json={"input": text, "streaming_chunk_size": 50},
                             stream=True)
    next(response.iter_content(None))
    response.close()
    closed = time.monotonic()
    server.wait_until(lambda h: h["jobs_in_flight"] == 0, timeout=10, interval=0.05)
    assert time.monotonic() - closed < 2.0


def test_oversized_upload_is_the_servers_json_413(proxied):
    _, base = proxied
    response = requests.post(base + "/v1/voices", data={"name": "big"},
                             files={"voice_file": ("big.wav", b"\0" * (3 * 1024 * 1024), "audio/wav")})
    assert response.status_code == 413
    assert "upload limit" in response.json()["error"]["message"]
