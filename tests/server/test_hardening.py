"""Hardening against a real server: stop and reload with streams in flight, per-key stream limits,
client hang-ups, the housekeeping timer. The tone engine obeys [[sleep:S]] markers."""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from urllib.parse import urlparse

import psutil
import pytest
import requests
from serverkit import start_server

from chatterbox_server.runtime.janitor import upload_prefix

pytestmark = pytest.mark.server
ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdefgh"
FIRST = "Alpha beta gamma delta epsilon zeta eta theta."     # one chunk of its own at size 50


def slow_text(words: int, sleep: float = 0.1) -> str:
    return " ".join(f"Word {i}. [[sleep:{sleep}]]" for i in range(words))


def expected_bytes(text: str) -> float:
    words = len(text.split()) - text.count("[[sleep")
    return 44 + words * 0.15 * 24000 * 2          # tone: 0.15 s a word, a 44-byte WAV header


def aged(path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    then = time.time() - seconds
    os.utime(path, (then, then))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_stop_finishes_streams_turns_new_requests_away_and_housekeeping_runs_on_a_timer(tmp_path):
    litter = tmp_path / "data" / "tmp" / (upload_prefix(pid=999_999_999) + "x.wav")
    aged(litter, 60)
    server = start_server(tmp_path, engine="tone", front_workers="1", graceful_timeout="20",
                          housekeeping_interval="1", output_retention_seconds="30")
    try:
        assert not litter.exists()                          # swept at start
        old_output = server.data_dir / "outputs" / "tts_2020-01-01_000000_000_feedfacefeedface.wav"
        aged(old_output, 3600)
        deadline = time.monotonic() + 5                     # no request: the timer does it
        while old_output.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not old_output.exists()

        session = requests.Session()                        # a kept-alive connection, as nginx keeps
        assert session.get(server.url("/v1/models")).status_code == 200
        text = slow_text(20)
        stream = requests.post(server.url("/v1/audio/speech/stream"),
                               json={"input": text, "streaming_chunk_size": 50}, stream=True)
        chunks = stream.iter_content(4096)
        first = next(chunks)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        late = session.post(server.url("/v1/audio/speech"), json={"input": "too late"})
        assert late.status_code == 503 and late.headers["Retry-After"] == "5"
        assert late.json()["error"]["code"] == "shutting_down"
        body = first + b"".join(chunks)                     # the stream in flight completes
        assert len(body) == pytest.approx(expected_bytes(text), rel=0.01)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keyed")
    (tmp / "api-keys").write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    server = start_server(tmp, engine="tone", front_workers="2", graceful_timeout="10",
                          api_keys_file=str(tmp / "api-keys"), max_streams_per_key="1")
    yield server
    server.stop()


def test_a_key_over_its_stream_limit_gets_429_from_every_front_worker(keyed_server):
    stream = requests.post(keyed_server.url("/v1/audio/speech/stream"), headers=auth(ALICE), stream=True,
                           json={"input": f"{FIRST} [[sleep:4]] And the end.", "streaming_chunk_size": 50})
    assert stream.status_code == 200
    chunks = stream.iter_content(4096)      # keep it: a collected iterator closes the connection
    next(chunks)                            # the second chunk takes 4 s: the stream is in flight
    for _ in range(4):        # new connections, so both front workers answer some
        refused = requests.post(keyed_server.url("/v1/audio/speech"), headers=auth(ALICE), json={"input": "hi"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["type"] == "requests"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert requests.post(keyed_server.url("/v1/audio/speech"), headers=auth(BOB), json={"input": "hi"}).ok
    b"".join(chunks)                        # the end of the stream gives its slot back
    assert requests.post(keyed_server.url("/v1/audio/speech"), headers=auth(ALICE), json={"input": "hi"}).ok


def test_a_client_hang_up_is_no_error_in_the_log(keyed_server):
    before = len(keyed_server.log())
    address = urlparse(keyed_server.base)
    text = "Alpha beta gamma delta epsilon zeta eta theta. " + " ".join(
        f"Then sentence {i} follows. [[sleep:0.5]]" for i in range(12))
    body = json.dumps({"input": text, "streaming_chunk_size": 50}).encode()
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(b"POST /v1/audio/speech/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + f"Authorization: Bearer {BOB}\r\nContent-Type: application/json\r\n".encode()
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)             # hang up (unread data: a reset) while the server waits for a chunk
    closed = time.monotonic()
    keyed_server.wait_until(lambda h: h["jobs_in_flight"] == 0, timeout=5, interval=0.05)
    assert time.monotonic() - closed < 2.0      # cancelled, not synthesized to the end (6 s)
    time.sleep(0.5)
    log = keyed_server.log()[before:]
    assert "Traceback" not in log and "ERROR" not in log, log


def front_workers(master: psutil.Process) -> set[int]:
    found = set()
    for child in master.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "gunicorn: worker" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


def test_reload_keeps_the_stream_in_flight_and_the_model(keyed_server):
    master = psutil.Process(keyed_server.process.pid)
    old = front_workers(master)
    model = keyed_server.health()["workers"]["slots"]
    text = f"{FIRST} [[sleep:1]] Then more words. [[sleep:1]] And the end of it."
    stream = requests.post(keyed_server.url("/v1/audio/speech/stream"), headers=auth(ALICE), stream=True,
                           json={"input": text, "streaming_chunk_size": 50})
    chunks = stream.iter_content(4096)
    first = next(chunks)
    keyed_server.process.send_signal(signal.SIGHUP)
    during = [requests.post(keyed_server.url("/v1/audio/speech"), headers=auth(BOB), json={"input": "during"})
              for _ in range(3)]
    body = first + b"".join(chunks)
    assert len(body) == pytest.approx(expected_bytes(text), rel=0.01)
    assert [response.status_code for response in during] == [200, 200, 200]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(front_workers(master)) != 2 or front_workers(master) & old):
        time.sleep(0.2)
    assert len(front_workers(master)) == 2 and not front_workers(master) & old
    slots = requests.get(keyed_server.url("/health"), headers=auth(ALICE)).json()["workers"]["slots"]
    assert [slot["restarts"] for slot in slots] == [slot["restarts"] for slot in model]
    assert requests.post(keyed_server.url("/v1/audio/speech"), headers=auth(ALICE), json={"input": "after"}).ok
