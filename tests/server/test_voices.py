"""The voice library and one-off voice files through a real server.

The tone engine accepts reference audio (like Chatterbox) and makes each voice sound different,
so the library's plumbing is tested here quickly; tests/engines covers the real Chatterbox path.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import requests

from chatterbox_server.audio.encoders import pcm_to_wav

pytestmark = pytest.mark.server


def reference_wav(seconds: float = 3.0, rate: int = 22050, frequency: float = 180.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    signal = (0.3 * np.sin(2 * np.pi * frequency * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return pcm_to_wav((signal * 32767).astype(np.int16), rate)


def upload(server, name: str, data: bytes, filename: str = "ref.wav") -> requests.Response:
    return requests.post(server.url("/v1/voices"), data={"name": name},
                         files={"voice_file": (filename, data, "application/octet-stream")})


def leftovers(server) -> list[str]:
    found = []
    for folder in ("voices", "tmp"):
        path = server.data_dir / folder
        if path.exists():
            found += [f"{folder}/{name}" for name in os.listdir(path)]
    return sorted(found)


def test_upload_list_use_and_delete_a_voice(tone_server):
    response = upload(tone_server, "narrator", reference_wav())
    assert response.status_code == 201, response.text
    assert response.json()["duration_seconds"] == pytest.approx(3.0, abs=0.05)
    listing = requests.get(tone_server.url("/v1/voices")).json()
    assert "narrator" in [voice["name"] for voice in listing["voices"]]
    assert requests.get(tone_server.url("/v1/voices/narrator")).json()["name"] == "narrator"

    def speak(voice: str) -> bytes:
        reply = requests.post(tone_server.url("/v1/audio/speech"),
                              json={"input": "same words here", "voice": voice, "seed": 3, "response_format": "pcm"})
        assert reply.status_code == 200, reply.text
        return reply.content
    assert speak("narrator") != speak("alloy")
    assert speak("alloy") == speak("default")       # OpenAI names map to the default voice
    assert requests.delete(tone_server.url("/v1/voices/narrator")).status_code == 200
    assert requests.get(tone_server.url("/v1/voices/narrator")).status_code == 404
    assert leftovers(tone_server) == []


def test_unknown_voice_lists_the_available_ones(tone_server):
    upload(tone_server, "listed", reference_wav())
    response = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "hi", "voice": "nobody"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "voice" and "listed" in error["message"] and "alloy" in error["message"]
    requests.delete(tone_server.url("/v1/voices/listed"))


@pytest.mark.parametrize("path", ["/v1/audio/speech/upload", "/v1/audio/speech/stream/upload"])
def test_one_off_voice_file_is_used_and_removed(tone_server, path):
    files = {"voice_file": ("me.wav", reference_wav(frequency=240.0), "audio/wav")}
    response = requests.post(tone_server.url(path), data={"input": "cloned words", "seed": "5"}, files=files)
    assert response.status_code == 200, response.text
    assert response.content[:4] == b"RIFF" and len(response.content) > 44
    plain = requests.post(tone_server.url(path), data={"input": "cloned words", "seed": "5"})
    assert plain.status_code == 200 and plain.content != response.content
    assert leftovers(tone_server) == []


@pytest.mark.parametrize(("name", "data", "status", "param"), [
    ("../evil", None, 400, "name"),
    ("a/b", None, 400, "name"),
    ("", None, 400, "name"),
    ("alloy", None, 400, "name"),
    ("notaudio", b"this is plain text, not audio at all" * 100, 400, "voice_file"),
    ("fakewav", b"RIFF\x00\x00\x00\x00WAVEgarbage" * 50, 400, "voice_file"),
    ("tooshort", "short", 400, "voice_file"),
])
def test_bad_uploads_are_refused_and_leave_nothing(tone_server, name, data, status, param):
    payload = reference_wav(0.3) if data == "short" else (data if data is not None else reference_wav())
    response = upload(tone_server, name, payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
    assert leftovers(tone_server) == []


def test_oversized_upload_is_413(tmp_path):
    from serverkit import start_server
    server = start_server(tmp_path, engine="tone", max_upload_bytes=str(200_000))
    try:
        big = reference_wav(seconds=10.0)        # ~440 kB of WAV
        assert len(big) > 200_000
        response = upload(server, "big", big)
        assert response.status_code == 413
        assert leftovers(server) == []
        speech = requests.post(server.url("/v1/audio/speech/upload"), data={"input": "hi"},
                               files={"voice_file": ("big.wav", big, "audio/wav")})
        assert speech.status_code == 413 and leftovers(server) == []
    finally:
        server.stop()


def test_hibari_refuses_cloning_with_a_clear_error(hibari_server):
    files = {"voice_file": ("me.wav", reference_wav(), "audio/wav")}
    response = requests.post(hibari_server.url("/v1/audio/speech/upload"), data={"input": "hi"}, files=files)
    assert response.status_code == 400 and "chatterbox" in response.json()["error"]["message"]
    assert upload(hibari_server, "someone", reference_wav()).status_code == 201
    response = requests.post(hibari_server.url("/v1/audio/speech"), json={"input": "hi", "voice": "someone"})
    assert response.status_code == 400 and "chatterbox engine" in response.json()["error"]["message"]
    requests.delete(hibari_server.url("/v1/voices/someone"))
