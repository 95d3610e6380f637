"""Slow and paused readers against a real server: a client that stops reading parks its job, which
then leaves room for others and is cancelled after CHATTERBOX_PARKED_TIMEOUT; one that resumes in
time gets all of its audio. The tone engine makes 0.15 s (7,200 bytes) of audio per word, instantly."""
from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest
import requests
from serverkit import start_server

pytestmark = pytest.mark.server
PARKED_TIMEOUT = 3.0
BYTES_PER_WORD = 7200


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("slow-readers"), engine="tone", front_workers="1",
                          max_queued_jobs="1", parked_timeout=str(PARKED_TIMEOUT), graceful_timeout="5")
    yield server
    server.stop()


def words(count: int) -> str:
    return " ".join(f"Word{i}." for i in range(count))


def open_stream(server, text: str, path: str = "/v1/audio/speech/stream", **fields) -> socket.socket:
    """A streaming request from a client with a small receive window, so it is easy to stop reading."""
    address = urlparse(server.base)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address.hostname, address.port))
    body = json.dumps({"input": text, "streaming_chunk_size": 300, "streaming_buffer_size": 1, **fields}).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
                 + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def read_some(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def read_to_end(sock: socket.socket, timeout: float = 15.0) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    while piece := sock.recv(1 << 16):
        data += piece
    return bytes(data)


def dechunk(response: bytes) -> tuple[int, bytes, bool]:
    """Status, body, and whether the chunked body was complete (ended with its zero-size chunk)."""
    head, _, rest = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    body = bytearray()
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            return status, bytes(body), True
        if len(rest) < size + 2:
            break
        body += rest[:size]
        rest = rest[size + 2:]
    return status, bytes(body), False


def test_a_client_that_stops_reading_frees_its_slot_and_its_stream_ends_unfinished(server):
    before = len(server.log())
    stalled = open_stream(server, words(3000))              # 21.6 MB of audio, far more than any buffer
    try:
        first = read_some(stalled, 16384)
        assert first.startswith(b"HTTP/1.1 200")
        server.wait_until(lambda h: h["jobs_parked"] == 1, timeout=10, interval=0.05)
        parked_at = time.monotonic()
        report = server.health()
        assert report["jobs_in_flight"] == 0 and report["workers"]["slots"][0]["parked_jobs"] == 1
        assert 'chatterbox_jobs_parked{slot="0"} 1.0' in requests.get(server.url("/metrics"), timeout=5).text
        # CHATTERBOX_MAX_QUEUED_JOBS is 1, and the parked job does not count against it
        other = requests.post(server.url("/v1/audio/speech"), json={"input": "Another request."}, timeout=10)
        assert other.status_code == 200 and len(other.content) == 44 + 2 * BYTES_PER_WORD
        server.wait_until(lambda h: h["jobs_parked"] == 0, timeout=PARKED_TIMEOUT + 5, interval=0.1)
        assert time.monotonic() - parked_at > PARKED_TIMEOUT - 0.5
        status, body, complete = dechunk(first + read_to_end(stalled))
    finally:
        stalled.close()
    assert status == 200 and not complete                  # cut short: no client can take it for whole
    assert 0 < len(body) < 3000 * BYTES_PER_WORD
    time.sleep(0.3)
    log = server.log()[before:]
    assert "the client read no audio for 3 s" in log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert requests.get(server.url("/v1/status"), timeout=5).json()["active_requests"] == 0


def test_an_event_stream_whose_client_stops_reading_ends_without_its_done_event(server):
    before = len(server.log())
    stalled = open_stream(server, words(3000), path="/v1/audio/speech", stream_format="sse")
    try:
        first = read_some(stalled, 16384)
        assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
        server.wait_until(lambda h: h["jobs_parked"] == 1, timeout=10, interval=0.05)
        server.wait_until(lambda h: h["jobs_parked"] == 0, timeout=PARKED_TIMEOUT + 5, interval=0.1)
        status, body, complete = dechunk(first + read_to_end(stalled))
    finally:
        stalled.close()
    assert status == 200 and not complete
    assert b"speech.audio.delta" in body and b"speech.audio.done" not in body
    time.sleep(0.3)
    log = server.log()[before:]
    assert "the client read no audio for 3 s" in log
    assert "Traceback" not in log and "ERROR" not in log, log


def test_a_client_that_pauses_less_than_the_timeout_gets_all_of_its_audio(server):
    count = 1500
    paused = open_stream(server, words(count))
    try:
        first = read_some(paused, 16384)
        assert first.startswith(b"HTTP/1.1 200")
        server.wait_until(lambda h: h["jobs_parked"] == 1, timeout=10, interval=0.05)
        time.sleep(PARKED_TIMEOUT / 2)
        status, body, complete = dechunk(first + read_to_end(paused))
    finally:
        paused.close()
    assert status == 200 and complete
    assert len(body) == 44 + count * BYTES_PER_WORD     # a WAV header, then every word's audio
