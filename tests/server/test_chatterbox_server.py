"""A real server on the chatterbox engine, loading a self-built random checkpoint through from_local.

Random weights never emit the stop token, so every chunk runs to the token cap; the cap is tiny
(CHATTERBOX_MAX_NEW_TOKENS) so that each generation takes a couple of seconds on CPU.
"""
from __future__ import annotations

import io
import os
import wave

import numpy as np
import pytest
import requests
from serverkit import start_server

from chatterbox_server.audio.encoders import pcm_to_wav

pytest.importorskip("chatterbox")
pytestmark = [pytest.mark.chatterbox, pytest.mark.server, pytest.mark.slow]
TOKEN_CAP = 6
SAMPLES_PER_TOKEN = 24000 // 25 * 2        # S3Gen makes 40 ms (two mel frames) per speech token


def wav_bytes(seconds: float, rate: int = 16000, f0: float = 140.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return pcm_to_wav((0.25 * voiced / np.abs(voiced).max() * 32767).astype(np.int16), rate)


def pcm_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as source:
        return source.getnframes() / source.getframerate()


@pytest.fixture(scope="module")
def chatterbox_server(tmp_path_factory, chatterbox_checkpoint):
    server = start_server(tmp_path_factory.mktemp("chatterbox"), engine="chatterbox",
                          checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=str(TOKEN_CAP),
                          front_workers="1", queue_timeout="600", chunk_timeout="600", max_queued_seconds="0",
                          allow_disable_watermark="true", ready_timeout=600)
    yield server
    server.stop()


def speak(server, **fields) -> requests.Response:
    response = requests.post(server.url("/v1/audio/speech"), json={"input": "Hello there.", "seed": 11, **fields},
                             timeout=300)
    assert response.status_code == 200, response.text
    return response


def test_health_names_engine_model_and_device(chatterbox_server):
    report = chatterbox_server.health()
    assert (report["engine"], report["model"], report["device"]) == ("chatterbox", "chatterbox-standard", "cpu")
    assert "chatterbox" in [m["id"] for m in requests.get(chatterbox_server.url("/v1/models")).json()["data"]]


@pytest.fixture(scope="module")
def built_in(chatterbox_server) -> bytes:
    return speak(chatterbox_server, seed=5).content


def test_built_in_voice_gives_valid_audio_within_the_token_cap(chatterbox_server, built_in):
    seconds = pcm_seconds(built_in)
    assert 0 < seconds <= TOKEN_CAP * SAMPLES_PER_TOKEN / 2 / 24000 + 0.1
    response = speak(chatterbox_server, seed=6)
    assert "X-Chatterbox-Ignored-Fields" not in response.headers       # exaggeration & co. are used here
    assert response.content != built_in                                 # another seed, other audio


def test_same_seed_same_audio(chatterbox_server, built_in):
    assert speak(chatterbox_server, seed=5).content == built_in


def test_library_voice_by_name(chatterbox_server, built_in):
    upload = requests.post(chatterbox_server.url("/v1/voices"), data={"name": "narrator"},
                           files={"voice_file": ("narrator.wav", wav_bytes(3.0))})
    assert upload.status_code == 201, upload.text
    try:
        cloned = speak(chatterbox_server, voice="narrator", seed=5)
        assert cloned.content != built_in and pcm_seconds(cloned.content) > 0
    finally:
        requests.delete(chatterbox_server.url("/v1/voices/narrator"))


def test_stream_with_a_one_off_voice_file(chatterbox_server):
    response = requests.post(chatterbox_server.url("/v1/audio/speech/stream/upload"),
                             data={"input": "Hello there.", "seed": "3"},
                             files={"voice_file": ("me.wav", wav_bytes(3.0, f0=200.0))}, timeout=300)
    assert response.status_code == 200, response.text
    # random weights sample invalid speech tokens too (dropped before vocoding): expect at least one
    # valid token's 40 ms, not a length the cap would give on real weights
    assert response.content[:4] == b"RIFF" and len(response.content) >= 44 + 2 * 24000 // 25
    assert os.listdir(chatterbox_server.data_dir / "tmp") == []


@pytest.mark.parametrize(("name", "payload", "status"), [
    ("../escape", wav_bytes(3.0), 400),
    ("notaudio", b"GIF89a" + b"\0" * 5000, 400),
    ("huge", b"RIFF" + b"\0" * (21 * 1024 * 1024), 413),
])
def test_bad_uploads_are_refused_and_leave_nothing(chatterbox_server, name, payload, status):
    response = requests.post(chatterbox_server.url("/v1/voices"), data={"name": name},
                             files={"voice_file": ("x.wav", payload)})
    assert response.status_code == status
    voices = chatterbox_server.data_dir / "voices"
    assert not voices.exists() or os.listdir(voices) == []
    assert not (chatterbox_server.data_dir / "escape.json").exists()


def test_voice_conversion_with_chatterbox_vc(chatterbox_server):
    response = requests.post(chatterbox_server.url("/api/v1/vc"), files={"input_audio": ("in.wav", wav_bytes(2.0))},
                             data={"target_voice_source": "default"}, timeout=300)
    assert response.status_code == 200, response.text
    assert pcm_seconds(response.content) == pytest.approx(2.0, abs=0.2)


def test_voice_conversion_drops_the_watermark_only_when_asked(chatterbox_server):
    """This server allows disable_watermark (the refusal is tests/unit/test_watermark_policy.py's)."""
    def convert(**form) -> requests.Response:
        response = requests.post(chatterbox_server.url("/api/v1/vc"), files={"input_audio": ("in.wav", wav_bytes(1.0))},
                                 data={"target_voice_source": "default", "seed": "4", **form}, timeout=300)
        assert response.status_code == 200, response.text
        return response

    marked, unmarked = convert(), convert(disable_watermark="true")
    assert marked.headers["X-Chatterbox-Watermark"] == "applied"
    assert unmarked.headers["X-Chatterbox-Watermark"] == "disabled"
    assert pcm_seconds(marked.content) == pcm_seconds(unmarked.content) > 0.8
    assert marked.content != unmarked.content      # same seed: only Perth differs (see test_chatterbox_engine)


def test_auto_falls_back_to_hibari_with_one_log_line_when_no_weights_load(tmp_path):
    server = start_server(tmp_path, engine="auto", device="cpu")       # no checkpoint dir, hub offline
    try:
        assert server.health()["engine"] == "hibari"
        assert server.log().count("Chatterbox unavailable") == 1
    finally:
        server.stop()


def test_auto_picks_chatterbox_when_its_weights_load(tmp_path, chatterbox_checkpoint):
    server = start_server(tmp_path, engine="auto", checkpoint_dir=str(chatterbox_checkpoint), device="cpu",
                          max_new_tokens=str(TOKEN_CAP), ready_timeout=600)
    try:
        assert (server.health()["engine"], server.health()["model"]) == ("chatterbox", "chatterbox-standard")
        assert "Chatterbox unavailable" not in server.log()
    finally:
        server.stop()


def test_a_language_without_its_extra_package_is_spoken_and_says_so(tmp_path, chatterbox_checkpoint):
    """Issue 15: spacy-pkuseg (Chinese segmentation) is not installed; pykakasi (Japanese) is."""
    server = start_server(tmp_path, engine="chatterbox", model="multilingual",
                          checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=str(TOKEN_CAP),
                          front_workers="1", queue_timeout="600", chunk_timeout="600", max_queued_seconds="0",
                          ready_timeout=600)
    try:
        extras = server.health()["optional"]["language_extras"]
        assert extras["available"] is False and "zh" in extras["languages"] and "ja" not in extras["languages"]
        chinese = speak(server, input="你好。", language="zh")
        assert chinese.headers["X-Chatterbox-Degraded"] == "language_extras"
        assert chinese.headers["X-Chatterbox-Language-Extras"].startswith("zh: Chinese word segmentation is off")
        assert "X-Chatterbox-Degraded" not in speak(server, input="こんにちは。", language="ja").headers
        extended = requests.post(f"{server.extended_base}/api/v1/tts?response_mode=url", timeout=300,
                                 json={"text": "你好。", "language": "zh", "bypass_whisper_checking": True})
        assert extended.status_code == 200, extended.text
        assert "spacy-pkuseg" in extended.json()["degraded"]["language_extras"]
    finally:
        server.stop()


def test_a_socket_turn_speaks_what_the_stream_speaks_and_a_cancel_stops_the_decode(chatterbox_server):
    """The realtime socket on the real Chatterbox path: a one-segment turn gives the same samples as
    the token-window stream of that text and seed; a cancel mid-turn leaves no job behind."""
    import base64
    import time

    from realtimekit import RealtimeClient, ws_url

    stream = requests.post(chatterbox_server.url("/v1/audio/speech/stream"), timeout=300,
                           json={"input": "Hello there.", "seed": 11, "response_format": "pcm"})
    assert stream.status_code == 200, stream.text
    c = RealtimeClient(ws_url(chatterbox_server.base, "/v1/audio/speech/realtime") + "?seed=11")
    try:
        c.until_type("session.created")
        c.send("input_text.append", text="Hello there.")
        c.send("input_text.done")
        done = c.until_type("speech.audio.done", timeout=300)
        audio = b"".join(base64.b64decode(e["audio"]) for e in c.received.of("speech.audio.delta"))
        assert audio == stream.content
        assert done["usage"]["output_tokens"] <= TOKEN_CAP and done["usage"]["segments"] == 1

        c.send("input_text.append", context_id="long", text="One sentence here. Another one there. A third one. ")
        c.send("input_text.done", context_id="long")
        c.until_type("speech.audio.delta", "long", timeout=300)
        c.send("context.cancel", context_id="long")
        c.until_type("context.cancelled", "long", timeout=10)
        deadline = time.monotonic() + 30
        while sum(slot["active_jobs"] for slot in chatterbox_server.health()["workers"]["slots"]):
            assert time.monotonic() < deadline, chatterbox_server.health()
            time.sleep(0.2)
    finally:
        c.close()
