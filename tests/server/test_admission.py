"""Admission by estimated seconds of queued synthesis, against a real server (tone engine, whose
[[sleep:S]] markers make each chunk take S seconds)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from serverkit import start_server

pytestmark = pytest.mark.server
SENTENCE = "[[sleep:0.7]] Alpha beta gamma delta epsilon."      # one chunk of its own at size 50
LIMIT = 1.0


def speak(server, text: str, **fields) -> requests.Response:
    return requests.post(server.url("/v1/audio/speech"), json={"input": text, "streaming_chunk_size": 50, **fields},
                         timeout=60)


def queued(server) -> float:
    return max(slot["queued_seconds"] for slot in server.health()["workers"]["slots"])


def test_queued_work_over_the_limit_is_refused_with_429_and_retry_after_then_admitted_again(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="2", model_workers="1", graceful_timeout="5",
                          max_queued_seconds=str(LIMIT))
    try:
        assert speak(server, SENTENCE).status_code == 200      # the model worker measures its speed
        assert queued(server) == 0.0
        with ThreadPoolExecutor(4) as pool:
            # four requests of two chunks: one synthesizes, three wait with their first chunk
            running = [pool.submit(speak, server, f"{SENTENCE} {SENTENCE}") for _ in range(4)]
            server.wait_until(lambda health: max(s["queued_seconds"] for s in health["workers"]["slots"]) > LIMIT,
                              timeout=10, interval=0.05)
            refused = speak(server, "Hello there.")
            gauge = requests.get(server.url("/metrics"), timeout=10).text
            sse = requests.post(server.url("/v1/audio/speech"), timeout=10,
                                json={"input": "Hello there.", "stream_format": "sse"})
            extended = requests.post(server.extended_base + "/api/v1/tts", json={"text": "Hello there."}, timeout=10)
            results = [future.result() for future in running]
        assert [r.status_code for r in results] == [200] * 4       # nothing admitted is lost
        assert len({len(r.content) for r in results}) == 1

        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 3      # three 0.7 s first chunks over a 1 s limit
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert "CHATTERBOX_MAX_QUEUED_SECONDS" in error["message"]
        assert 'chatterbox_queued_seconds{slot="0"}' in gauge
        assert sse.status_code == 429 and sse.headers["Content-Type"].startswith("application/json")
        assert int(sse.headers["Retry-After"]) >= 1
        assert extended.status_code == 429 and int(extended.headers["Retry-After"]) >= 1
        assert extended.json()["error_code"] == "RATE_LIMIT_EXCEEDED"

        server.wait_until(lambda health: health["jobs_in_flight"] == 0, timeout=10)
        assert queued(server) == 0.0
        assert speak(server, "Hello again.").status_code == 200     # the queue drained: admitted again
    finally:
        server.stop()
