"""POST /api/v1/concat and /api/v1/concat/mixed against a real hibari server."""
from __future__ import annotations

import io
import json
from urllib.parse import urlparse

import pytest
import requests
import soundfile
from asr import transcribe, word_error_rate

pytestmark = pytest.mark.server
CHEAP = {"bypass_whisper_checking": True, "num_candidates_per_chunk": 1, "export_formats": ["wav"]}


def make(server, text: str, **extra) -> tuple[str, float]:
    response = requests.post(server.extended_base + "/api/v1/tts?response_mode=url",
                             json={**CHEAP, "seed": 7, "text": text, **extra}, timeout=60)
    assert response.status_code == 200, response.text
    name = response.json()["output_files"][0]["filename"]
    return name, seconds(requests.get(server.extended_base + "/outputs/" + name, timeout=10).content)


def seconds(data: bytes) -> float:
    info = soundfile.info(io.BytesIO(data))
    return info.frames / info.samplerate


def test_concat_joins_files_with_manual_silence(hibari_server, tmp_path):
    first, a = make(hibari_server, "First clip here.")
    second, b = make(hibari_server, "Second clip.", project="chapter one")
    body = {"files": [first, "(500ms)", second], "export_formats": ["wav", "mp3"]}
    result = requests.post(hibari_server.extended_base + "/api/v1/concat?response_mode=url", json=body, timeout=60)
    assert result.status_code == 200, result.text
    out = result.json()
    assert out["file_count"] == 2 and [n.rsplit(".", 1)[1] for n in out["output_files"]] == ["wav", "mp3"]
    joined = requests.get(hibari_server.extended_base + urlparse(out["output_urls"][0]).path, timeout=10).content
    assert abs(seconds(joined) - (a + b + 0.5)) < 0.02
    # one format in stream mode: the file itself
    stream = requests.post(hibari_server.extended_base + "/api/v1/concat",
                           json={"files": [first, second], "pause_duration_ms": 400, "pause_variation_ms": 0},
                           timeout=60)
    assert stream.headers["Content-Type"] == "audio/wav" and abs(seconds(stream.content) - (a + b + 0.4)) < 0.02
    heard = transcribe(stream.content)
    assert word_error_rate("First clip here. Second clip.", heard) <= 0.3, heard


def test_concat_refusals(hibari_server):
    first, _ = make(hibari_server, "Only one.")
    base = hibari_server.extended_base + "/api/v1/concat"
    for files, status in ((["../voices/x.wav", "(1s)"], 404), ([first, "missing.wav"], 404),
                          (["chapter one/../../secret.wav", first], 404), ([first], 400), (["(1s)"], 400)):
        response = requests.post(base, json={"files": files}, timeout=30)
        assert response.status_code == status, (files, response.text)
    named = {"files": [first, "(100ms)"], "output_filename": "my_mix"}
    assert requests.post(base, json=named, timeout=30).headers["Content-Disposition"].endswith('"my_mix.wav"')
    again = requests.post(base, json=named, timeout=30)
    assert again.status_code == 409 and again.json()["error_code"] == "FILE_EXISTS"


def test_mixed_concat_with_an_upload_and_new_speech(hibari_server):
    first, a = make(hibari_server, "Hello from the server.")
    upload = requests.get(hibari_server.extended_base + "/outputs/" + first, timeout=10).content
    request_json = {"segments": [{"type": "server_file", "source": first}, {"type": "silence", "source": "(300ms)"},
                                 {"type": "upload", "index": 0},
                                 {"type": "tts", "tts": {**CHEAP, "text": "And a brand new sentence."}}],
                    "normalize_levels": False}
    response = requests.post(hibari_server.extended_base + "/api/v1/concat/mixed?response_mode=url",
                             data={"request_json": json.dumps(request_json)},
                             files={"uploaded_files": ("clip.wav", upload, "audio/wav")}, timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["file_count"] == 3 and out["metadata"]["upload_count"] == 1
    data = requests.get(hibari_server.extended_base + urlparse(out["output_urls"][0]).path, timeout=10).content
    assert seconds(data) > 2 * a + 0.3 + 1.0
    assert "brand new sentence" in transcribe(data).lower()
    wrong = requests.post(hibari_server.extended_base + "/api/v1/concat/mixed",
                          data={"request_json": json.dumps(request_json)}, timeout=30)
    assert wrong.status_code == 400 and "uploaded_files" in wrong.json()["detail"]
    bad_tts = requests.post(hibari_server.extended_base + "/api/v1/concat/mixed",
                            json={"segments": [{"type": "tts", "tts": {"text": "x", "cfg_weight": 9}}]}, timeout=30)
    assert bad_tts.status_code == 400 and "segments[0].tts.cfg_weight" in bad_tts.json()["detail"]
