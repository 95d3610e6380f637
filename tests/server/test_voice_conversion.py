"""POST /api/v1/vc through a real server.

The tone engine's conversion is a resample to 24 kHz times a per-voice gain, so the windowing
and crossfading can be checked sample by sample; tests/engines covers ChatterboxVC itself.
"""
from __future__ import annotations

import io
import os
import subprocess
import wave

import numpy as np
import pytest
import requests

from chatterbox_server.audio.encoders import pcm_to_wav

pytestmark = pytest.mark.server


def wav_bytes(signal: np.ndarray, rate: int) -> bytes:
    return pcm_to_wav((np.clip(signal, -1, 1) * 32767).astype(np.int16), rate)


def recording(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 220 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def wav_samples(data: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(data)) as source:
        return source.getframerate(), np.frombuffer(source.readframes(source.getnframes()), "<i2") / 32768.0


@pytest.fixture(scope="module")
def speaker(tone_server):
    response = requests.post(tone_server.url("/v1/voices"), data={"name": "speaker1"},
                             files={"voice_file": ("speaker1.wav", wav_bytes(recording(3.0, 22050), 22050))})
    assert response.status_code == 201
    yield "speaker1"
    requests.delete(tone_server.url("/v1/voices/speaker1"))


def test_seed_curl_example(tone_server, speaker, tmp_path):
    source = tmp_path / "my_recording.wav"
    source.write_bytes(wav_bytes(recording(4.0), 16000))
    out = tmp_path / "converted_audio.wav"
    subprocess.run(["curl", "-sS", "-X", "POST", f"{tone_server.extended_base}/api/v1/vc",
                    "-F", f"input_audio=@{source}", "-F", "target_voice_source=speaker1.wav",
                    "--output", str(out)], check=True)
    rate, samples = wav_samples(out.read_bytes())
    assert rate == 24000 and abs(samples.size / rate - 4.0) < 0.01


def test_long_input_is_converted_in_windows_without_seams(tone_server, speaker):
    source = recording(47.0)                       # three 20 s windows
    response = requests.post(tone_server.url("/api/v1/vc"), data={"target_voice_source": "speaker1"},
                             files={"input_audio": ("long.wav", wav_bytes(source, 16000))})
    assert response.status_code == 200, response.text
    rate, converted = wav_samples(response.content)
    assert rate == 24000 and converted.size == pytest.approx(47.0 * 24000, abs=2)
    expected = np.interp(np.arange(converted.size) * 16000 / 24000, np.arange(source.size), source)
    gain = np.dot(converted, expected) / np.dot(expected, expected)
    inner = slice(200, converted.size - 200)       # the 4 ms fades at both ends
    # overlapping windows carry the same signal here: an equal-gain crossfade reproduces it exactly
    # (an equal-power one would swell it by up to 41% at the seams)
    assert np.max(np.abs(converted[inner] - gain * expected[inner])) < 0.005
    seams = [int(s * 24000) for s in (19.5, 20.0, 39.0, 39.5)]
    jumps = np.abs(np.diff(converted))
    assert max(jumps[s - 50:s + 50].max() for s in seams) < 3 * np.percentile(jumps, 99.9)


def test_uploaded_target_and_url_mode(tone_server):
    files = {"input_audio": ("in.wav", wav_bytes(recording(3.0), 16000)),
             "target_voice_source": ("target.wav", wav_bytes(recording(2.0, 24000) * 0.5, 24000))}
    response = requests.post(tone_server.url("/api/v1/vc?response_mode=url"), data={"export_formats": "wav,mp3"},
                             files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and [f["format"] for f in body["output_files"]] == ["wav", "mp3"]
    for entry in body["output_files"]:
        assert requests.get(entry["url"]).status_code == 200
    assert os.listdir(tone_server.data_dir / "tmp") == []


@pytest.mark.parametrize(("data", "files", "status", "param"), [
    ({"target_voice_source": "nobody"}, {"input_audio": ("a.wav", None)}, 404, "target_voice_source"),
    ({"target_voice_source": "../etc/passwd"}, {"input_audio": ("a.wav", None)}, 400, "target_voice_source"),
    ({"target_voice_source": "speaker1"}, {}, 400, "input_audio"),
    ({"target_voice_source": "speaker1"}, {"input_audio": ("a.txt", b"not audio at all" * 100)}, 400, "input_audio"),
    ({}, {"input_audio": ("a.wav", None)}, 400, "target_voice_source"),
    ({"target_voice_source": "speaker1", "export_formats": "ogg"}, {"input_audio": ("a.wav", None)}, 400,
     "export_formats"),
])
def test_bad_requests(tone_server, speaker, data, files, status, param):
    files = {k: (name, content if content is not None else wav_bytes(recording(2.0), 16000))
             for k, (name, content) in files.items()}
    response = requests.post(tone_server.url("/api/v1/vc"), data=data, files=files or {"input_audio": ("", b"")})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and param in body["detail"]


def test_hibari_answers_400_naming_the_engine(hibari_server):
    files = {"input_audio": ("in.wav", wav_bytes(recording(2.0), 16000))}
    response = requests.post(hibari_server.url("/api/v1/vc"), data={"target_voice_source": "x"}, files=files)
    assert response.status_code == 400 and response.json()["error_code"] == "VOICE_CONVERSION_UNAVAILABLE"
    assert "chatterbox engine" in response.json()["detail"]
