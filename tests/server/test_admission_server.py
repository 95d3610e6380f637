"""Admission by estimated seconds of queued synthesis, against a real server (tone engine, whose
[[sleep:S]] markers make each chunk take S seconds)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
import pytest
import requests
from serverkit import start_server

pytestmark = pytest.mark.server
SENTENCE = "[[sleep:1.5]] Alpha beta gamma delta epsilon."      # one chunk of its own at size 50: 1.5 s
LIMIT = 2.0


def speak(server, text: str, **fields) -> requests.Response:
    return requests.post(server.url("/v1/audio/speech"), json={"input": text, "streaming_chunk_size": 50, **fields},
                         timeout=60)


def queued(server) -> float:
    return max(slot["queued_seconds"] for slot in server.health()["workers"]["slots"])


def test_queued_work_over_the_limit_is_refused_with_429_and_retry_after_then_admitted_again(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="1", model_workers="1", graceful_timeout="5",
                          max_queued_seconds=str(LIMIT))
    try:
        assert speak(server, SENTENCE).status_code == 200      # the model worker measures its speed
        assert queued(server) == 0.0
        with ThreadPoolExecutor(5) as pool:
            # five requests of two chunks at once: two first chunks (3 s) fill the 2 s allowance
            load = [pool.submit(speak, server, f"{SENTENCE} {SENTENCE}") for _ in range(5)]
            first_refusal = next(as_completed(load))        # a refusal comes back at once
            sse = requests.post(server.url("/v1/audio/speech"), timeout=10,
                                json={"input": "Hello there.", "stream_format": "sse"})
            extended = requests.post(server.extended_base + "/api/v1/tts", json={"text": "Hello there."}, timeout=10)
            gauge = requests.get(server.url("/metrics"), timeout=10).text
            with pytest.raises(openai.RateLimitError) as sdk:      # what OpenAI's own client makes of it
                openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0).audio.speech.create(
                    model="tts-1", voice="alloy", input="Hello there.")
            results = [future.result() for future in load]
        admitted = [r for r in results if r.status_code == 200]
        refused = [r for r in results if r.status_code != 200]
        assert len(admitted) >= 2 and len({len(r.content) for r in admitted}) == 1    # nothing admitted is lost
        assert first_refusal.result().status_code == 429
        for response in refused:
            assert response.status_code == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 3      # ~3 s queued over a 2 s limit
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
            assert "CHATTERBOX_MAX_QUEUED_SECONDS" in error["message"]
        assert sse.status_code == 429 and sse.headers["Content-Type"].startswith("application/json")
        assert 1 <= int(sse.headers["Retry-After"]) <= 3
        assert extended.status_code == 429 and 1 <= int(extended.headers["Retry-After"]) <= 3
        assert extended.json()["error_code"] == "RATE_LIMIT_EXCEEDED"
        assert 'chatterbox_queued_seconds{slot="0"}' in gauge
        assert sdk.value.code == "rate_limit_exceeded" and int(sdk.value.response.headers["Retry-After"]) >= 1

        server.wait_until(lambda health: health["jobs_in_flight"] == 0, timeout=10)
        assert queued(server) == 0.0
        assert speak(server, "Hello again.").status_code == 200     # the queue drained: admitted again
    finally:
        server.stop()
