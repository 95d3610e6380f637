"""Hung and broken model workers against a real server: killed or given up, replaced, and shown in /health.

The server's worker counts as hung after 3 s without a heartbeat (CHATTERBOX_CHUNK_TIMEOUT) and
gives up on its engine after 2 engine failures in a row (CHATTERBOX_MAX_ENGINE_FAILURES); the
tone engine's [[error]] marker is an engine failure, [[fail]] a bad request. SIGSTOP stands in
for a hung CUDA kernel.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests
from serverkit import Server, start_server

pytestmark = pytest.mark.server
HANG_SECONDS = 3
LONG_TEXT = " ".join(f"Sentence number {i} is here. [[sleep:0.2]]" for i in range(30))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("liveness"), engine="tone", front_workers="1",
                          chunk_timeout=str(HANG_SECONDS), max_engine_failures="2", graceful_timeout="5")
    yield server
    server.stop()


def slot(server: Server) -> dict:
    return server.health()["workers"]["slots"][0]


def wait_replaced(server: Server, before: dict) -> dict:
    report = server.wait_until(lambda h: h["ready"] and h["workers"]["slots"][0]["restarts"] > before["restarts"],
                               timeout=30)
    return report["workers"]["slots"][0]


def test_a_hung_worker_mid_stream_is_killed_the_stream_fails_and_the_next_request_is_served(server):
    before = slot(server)
    response = requests.post(server.url("/v1/audio/speech/stream"),
                             json={"input": LONG_TEXT, "streaming_chunk_size": 50}, stream=True)
    assert response.status_code == 200
    chunks = response.iter_content(4096)
    next(chunks)
    os.kill(before["pid"], signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):     # an aborted transfer, not a short file
        for _ in chunks:
            pass
    assert time.monotonic() - started < HANG_SECONDS + 4
    after = wait_replaced(server, before)
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
    assert after["last_error"].startswith("hung: no heartbeat for ")
    assert requests.post(server.url("/v1/audio/speech"), json={"input": "the new worker"}).status_code == 200


def test_a_hung_worker_mid_sse_ends_the_stream_with_an_error_event(server):
    before = slot(server)
    response = requests.post(server.url("/v1/audio/speech"), stream=True,
                             json={"input": LONG_TEXT, "streaming_chunk_size": 50, "stream_format": "sse"})
    lines = response.iter_lines(decode_unicode=True)
    events = []
    for line in lines:
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
            if events[-1]["type"] == "speech.audio.delta":
                break
    os.kill(before["pid"], signal.SIGSTOP)
    events += [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and "speech.audio.done" not in [e["type"] for e in events]
    # the front's own heartbeat check and the supervisor's kill race: either error is explicit
    assert events[-1]["error"]["code"] in ("timeout", "model_worker_died")
    wait_replaced(server, before)


def test_engine_failures_in_a_row_replace_the_worker_and_health_says_why(server):
    before = slot(server)
    speak = lambda text: requests.post(server.url("/v1/audio/speech"), json={"input": text})  # noqa: E731
    assert speak("[[error]] words").status_code == 500
    server.wait_until(lambda h: h["workers"]["slots"][0]["engine_failures_in_a_row"] == 1, timeout=2)
    assert speak("[[fail]] words").status_code == 400       # a bad request does not count
    assert speak("[[error]] again").status_code == 500       # the second engine failure in a row
    after = wait_replaced(server, before)
    assert after["pid"] != before["pid"] and after["engine_failures_in_a_row"] == 0
    assert after["last_error"].startswith("gave up on its engine: 2 engine failures in a row")
    assert "engine failures" in server.log()
    assert speak("a fresh engine").status_code == 200
