"""A dialogue on a random Chatterbox checkpoint through a real server: its turns share the model
worker's batch (one worker, batch of 4), each turn is whole speech tokens, and the turns' seeds are
those of single requests (a seeded request sounds the same alone and batched)."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from serverkit import start_server

pytest.importorskip("chatterbox")
pytestmark = [pytest.mark.chatterbox, pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(1800)]
TOKEN_CAP = 8
TOKEN_BYTES = 24000 // 25 * 2                   # 16-bit samples of one vocoded speech token
TURNS = ["Hello there.", "Hi, how are you?", "Fine, thanks.", "Good to hear."]
SEED = 77


@pytest.fixture(scope="module")
def server(tmp_path_factory, chatterbox_checkpoint):
    server = start_server(tmp_path_factory.mktemp("chatterbox-dialogue"), engine="chatterbox",
                          checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=str(TOKEN_CAP),
                          max_batch="4", stream_tokens="4", front_workers="1", queue_timeout="600",
                          chunk_timeout="600", max_queued_seconds="0", max_whole_file_seconds="0",
                          ready_timeout=600)
    yield server
    server.stop()


def test_a_four_turn_dialogue_runs_its_turns_together_in_the_batch(server):
    most_active = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most_active
        while not done.is_set():
            slots = requests.get(server.url("/health"), timeout=10).json()["workers"]["slots"]
            most_active = max(most_active, max(slot["active_jobs"] for slot in slots))
            time.sleep(0.05)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = requests.post(server.url("/v1/audio/dialogue"), timeout=1200, json={
            "inputs": [{"text": text} for text in TURNS], "seed": SEED, "response_format": "pcm", "gap_ms": 0})
    finally:
        done.set()
        watcher.join()
    assert response.status_code == 200, response.text
    assert most_active >= 3, most_active            # the first turn alone, then the others join it
    segments = json.loads(response.headers["X-Chatterbox-Segments"])
    assert [segment["turn"] for segment in segments] == [0, 1, 2, 3]
    assert len(response.content) > 0
    for segment in segments:
        assert segment["end"] > segment["start"]


def test_a_turn_of_a_dialogue_is_the_single_request_with_its_seed(server):
    dialogue = requests.post(server.url("/v1/audio/dialogue"), timeout=1200, json={
        "inputs": [{"text": text} for text in TURNS[:2]], "seed": SEED, "response_format": "pcm", "gap_ms": 0})
    assert dialogue.status_code == 200, dialogue.text
    segments = json.loads(dialogue.headers["X-Chatterbox-Segments"])
    second = requests.post(server.url("/v1/audio/speech"), timeout=1200, json={
        "input": TURNS[1], "seed": SEED + 1, "response_format": "pcm"})
    assert second.status_code == 200, second.text
    start = round(segments[1]["start"] * 24000) * 2
    turn = dialogue.content[start:]
    # the turn may lose its edge silence (trim_edges, faded again at a cut): inside that, it is the
    # single request's audio sample for sample
    middle = turn[400:-400]
    assert len(middle) > 0 and middle in second.content, (len(turn), len(second.content))
    assert len(second.content) % TOKEN_BYTES == 0


def test_each_voice_is_conditioned_once_and_the_cache_shows_in_memory(server, tmp_path):
    from chatterbox_checkpoint import synthetic_voice, write_wav
    for name, f0 in (("alice", 110.0), ("bob", 190.0)):
        path = write_wav(tmp_path / f"{name}.wav", synthetic_voice(6.0, f0=f0, seed=int(f0)))
        with path.open("rb") as handle:
            added = requests.post(server.url("/v1/voices"), data={"name": name}, timeout=120,
                                  files={"voice_file": (path.name, handle, "audio/wav")})
        assert added.status_code in (200, 201), added.text
    before = requests.get(server.url("/memory"), timeout=30).json()["memory_info"].get("voice_cache", {"entries": 0})
    response = requests.post(server.url("/v1/audio/dialogue"), timeout=1200, json={
        "input": "[S1] Hello. [S2] Hi. [S1] Bye. [S2] Bye now.", "speakers": {"S1": "alice", "S2": "bob"},
        "seed": SEED, "response_format": "pcm", "gap_ms": 0})
    assert response.status_code == 200, response.text
    after = requests.get(server.url("/memory"), timeout=30).json()["memory_info"]["voice_cache"]
    assert after["entries"] == before["entries"] + 2            # two voices, four turns
    assert after["capacity"] >= after["entries"] and after["mb"] > 0
