"""The peer's own cURL examples (Chatterbox-TTS-Extended-Plus, docs/api/schemas/examples/curl-examples.md) for the
endpoints of issue 8 items 1, 5 and 6, run verbatim against a fresh hibari server (only the host
changes, and the concat examples' placeholder names become files the test generated first).
Examples that need a voice file only the peer ships are left out."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(shutil.which("curl") is None, reason="the examples are curl commands")]

BASIC_TTS = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{
  "text": "Hello, this is a basic TTS example for core validation.",
  "export_formats": ["wav"]
}' '''
SPEED_AUTO = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{
  "text": "Automatic library selection for optimal quality.",
  "speed_factor": 0.8,
  "speed_factor_library": "auto",
  "export_formats": ["wav"]
}' '''
TRIM = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{
  "text": "Custom trimming threshold for sensitive content.",
  "trim": true,
  "trim_threshold_ms": 100,
  "export_formats": ["wav"]
}' '''
DOWNLOAD_WAV = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{"text": "Hello world", "export_formats": ["wav", "mp3"]}' \\
--output speech.wav'''
URL_MODE = '''curl -X POST http://localhost:7860/api/v1/tts?response_mode=url \\
-H "Content-Type: application/json" \\
-d '{"text": "Hello world", "export_formats": ["wav"]}' '''
HEALTH = "curl http://localhost:7860/api/v1/health"
INVALID_ENDPOINT = "curl http://localhost:7860/api/v1/nonexistent"
MISSING_TEXT = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{"export_formats": ["wav"]}' '''
INVALID_PARAMS = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{"temperature": 2.0}' '''
MISSING_REFERENCE = '''curl -X POST http://localhost:7860/api/v1/tts \\
-H "Content-Type: application/json" \\
-d '{
  "text": "Test speech",
  "reference_audio_filename": "nonexistent.wav"
}' '''
STEP = '''curl -X POST "http://localhost:7860/api/v1/tts?response_mode=url" \\
  -H "Content-Type: application/json" \\
  -d '{
    "text": "Welcome to our presentation.",
    "export_formats": ["wav"]
  }' '''
CONCAT_BASIC = '''curl -X POST http://localhost:7860/api/v1/concat \\
  -H "Content-Type: application/json" \\
  -d '{
    "files": ["tts_2025-06-24_141456_306396_temp0.75.wav", "tts_2025-06-24_134725_685369_temp0.75.wav"],
    "export_formats": ["wav", "mp3"]
  }' \\
  --output concatenated_audio.wav'''
CONCAT_CUSTOM = '''curl -X POST http://localhost:7860/api/v1/concat \\
  -H "Content-Type: application/json" \\
  -d '{
    "files": ["first_segment.wav", "second_segment.wav", "third_segment.wav"],
    "export_formats": ["wav"],
    "normalize_levels": true,
    "pause_duration_ms": 800,
    "pause_variation_ms": 200,
    "crossfade_ms": 100
  }' \\
  --output full_presentation.wav'''
CONCAT_URL = '''curl -X POST "http://localhost:7860/api/v1/concat?response_mode=url" \\
  -H "Content-Type: application/json" \\
  -d '{
    "files": ["segment_a.wav", "segment_b.wav"],
    "export_formats": ["wav", "mp3"],
    "normalize_levels": true
  }' '''


def run(server, command: str, cwd, **names: str) -> tuple[int, bytes]:
    """Run one example; returns (HTTP status, body; empty when --output wrote it to a file)."""
    command = command.replace("http://localhost:7860", server.extended_base)
    for placeholder, real in names.items():
        command = command.replace(placeholder, real)
    done = subprocess.run(["bash", "-c", command + " -s -w '\\n%{http_code}'"], cwd=cwd, capture_output=True,
                          timeout=120, check=True)
    body, _, status = done.stdout.rpartition(b"\n")
    return int(status), body


@pytest.mark.parametrize("example", [BASIC_TTS, SPEED_AUTO, TRIM])
def test_generation_examples(hibari_server, tmp_path, example):
    status, body = run(hibari_server, example, tmp_path)
    assert status == 200 and body[:4] == b"RIFF"


def test_download_and_url_examples(hibari_server, tmp_path):
    assert run(hibari_server, DOWNLOAD_WAV, tmp_path)[0] == 200
    assert (tmp_path / "speech.wav").read_bytes()[:4] == b"RIFF"
    status, body = run(hibari_server, URL_MODE, tmp_path)
    assert status == 200 and json.loads(body)["output_files"][0]["format"] == "wav"


def test_health_example(hibari_server, tmp_path):
    status, body = run(hibari_server, HEALTH, tmp_path)
    assert status == 200 and json.loads(body)["status"] == "healthy"


@pytest.mark.parametrize("example, status", [(INVALID_ENDPOINT, 404), (MISSING_TEXT, 400), (INVALID_PARAMS, 400),
                                             (MISSING_REFERENCE, 404)])
def test_error_examples(hibari_server, tmp_path, example, status):
    got, body = run(hibari_server, example, tmp_path)
    assert got == status and json.loads(body)["success"] is False


def test_concatenation_workflow(hibari_server, tmp_path):
    names = []
    for _ in range(3):
        status, body = run(hibari_server, STEP, tmp_path)
        assert status == 200
        names.append(json.loads(body)["output_files"][0]["filename"])
    placeholders = {"tts_2025-06-24_141456_306396_temp0.75.wav": names[0],
                    "tts_2025-06-24_134725_685369_temp0.75.wav": names[1]}
    assert run(hibari_server, CONCAT_BASIC, tmp_path, **placeholders)[0] == 200
    # two formats: the peer answers JSON even in stream mode, and so do we
    assert len(json.loads((tmp_path / "concatenated_audio.wav").read_bytes())["output_files"]) == 2
    assert run(hibari_server, CONCAT_CUSTOM, tmp_path, first_segment=names[0][:-4], second_segment=names[1][:-4],
               third_segment=names[2][:-4])[0] == 200
    assert (tmp_path / "full_presentation.wav").read_bytes()[:4] == b"RIFF"
    status, body = run(hibari_server, CONCAT_URL, tmp_path, segment_a=names[0][:-4], segment_b=names[2][:-4])
    assert status == 200 and len(json.loads(body)["output_files"]) == 2
