"""Continuous batching through a real server on a random Chatterbox checkpoint.

One model worker, a batch of up to 4, first windows of 4 tokens: four streams share each T3 step, one
client hangs up mid-batch, one reads with a one-message buffer (its job leaves the batch without
credit and rejoins), a seeded request sounds the same alone and batched, and a model worker killed
mid-batch ends every one of its streams with an error before its replacement serves.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests
from serverkit import start_server

pytest.importorskip("chatterbox")
pytestmark = [pytest.mark.chatterbox, pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(1800)]
TOKEN_CAP = 10
SAMPLES_PER_TOKEN = 24000 // 25 * 2
TOKEN_BYTES = SAMPLES_PER_TOKEN // 2 * 2          # 16-bit samples of one vocoded speech token
TEXT = "Hello there."
LONG_TEXT = "Hello there, how are you? " + "This is the second sentence here. " + "And this is the third one."


@pytest.fixture(scope="module")
def server(tmp_path_factory, chatterbox_checkpoint):
    server = start_server(tmp_path_factory.mktemp("batching"), engine="chatterbox",
                          checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=str(TOKEN_CAP),
                          max_batch="4", stream_tokens="4", front_workers="1", queue_timeout="600",
                          chunk_timeout="600", max_queued_seconds="0", ready_timeout=600)
    yield server
    server.stop()


def _whole_tokens(pcm: bytes) -> bool:
    """Audio of 1..TOKEN_CAP whole speech tokens (random weights sample some unvocodable tokens)."""
    return 0 < len(pcm) <= TOKEN_CAP * TOKEN_BYTES and len(pcm) % TOKEN_BYTES == 0


def stream(server, seed: int, **extra) -> requests.Response:
    body = {"input": TEXT, "seed": seed, "response_format": "pcm", **extra}
    response = requests.post(server.url("/v1/audio/speech/stream"), json=body, stream=True, timeout=600)
    assert response.status_code == 200, response.text
    return response


def test_four_streams_share_the_batch_cancel_and_pause_leave_the_others_intact(server):
    alone = stream(server, seed=21).content
    assert _whole_tokens(alone)
    results: dict[str, object] = {}

    def full(name: str, seed: int) -> None:
        results[name] = stream(server, seed=seed).content

    def paused(name: str, seed: int) -> None:
        response = stream(server, seed=seed, streaming_buffer_size=1)
        parts = response.iter_content(None)
        data = next(parts)
        time.sleep(8)                       # no credit meanwhile: the job waits outside the batch
        results[name] = data + b"".join(parts)

    def cancelled(name: str, seed: int) -> None:
        response = stream(server, seed=seed)
        next(response.iter_content(None))
        response.close()                    # hangs up mid-batch
        results[name] = "closed"

    threads = [threading.Thread(target=f, args=(name, seed)) for f, name, seed in
               ((full, "same-seed", 21), (full, "other", 22), (paused, "paused", 23), (cancelled, "cancel", 24))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert results["same-seed"] == alone                 # a seed sounds the same alone and batched
    assert _whole_tokens(results["other"]) and results["other"] != alone
    assert _whole_tokens(results["paused"])
    assert results["cancel"] == "closed"
    deadline = time.monotonic() + 10
    while requests.get(server.url("/v1/status")).json()["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert requests.get(server.url("/v1/status")).json()["active_requests"] == 0


def test_a_worker_killed_mid_batch_ends_every_stream_with_an_error_and_is_replaced(server):
    restarts = sum(slot["restarts"] for slot in server.health()["workers"]["slots"])
    pid = server.health()["workers"]["slots"][0]["pid"]
    events: dict[int, list[dict]] = {}
    first_audio = threading.Barrier(3, timeout=600)

    def listen(seed: int) -> None:
        # three text chunks: after the first audio there is work left whatever the interleaving
        response = stream(server, seed=seed, stream_format="sse", input=LONG_TEXT, streaming_chunk_size=50,
                          streaming_strategy="sentence")
        seen: list[dict] = []
        for line in response.iter_lines():
            if not line.startswith(b"data: "):
                continue
            seen.append(json.loads(line[6:]))
            if seen[-1]["type"] == "speech.audio.delta" and len(seen) == 2:     # after speech.audio.info
                first_audio.wait()
        events[seed] = seen

    threads = [threading.Thread(target=listen, args=(seed,)) for seed in (31, 32)]
    for thread in threads:
        thread.start()
    first_audio.wait()                      # both streams have audio: both are in the batch
    os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=120)
    for seed in (31, 32):
        assert events[seed][-1]["type"] == "error", events[seed][-1]
        assert events[seed][-1]["error"]["code"] == "model_worker_died"
    server.wait_until(lambda h: h["ready"] and sum(s["restarts"] for s in h["workers"]["slots"]) > restarts,
                      timeout=600)
    assert _whole_tokens(stream(server, seed=33).content)
