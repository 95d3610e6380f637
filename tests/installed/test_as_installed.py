"""Both peers' examples, the OpenAI SDK and the Extended family against the installed product
(issue 15): a server that `make run` started from the runtime install, with no environment set and
no speech-recognition model on its side. The checks are the real-server suites' own, run against
that server through the `hibari_server` fixture (tests/installed/conftest.py), plus the OpenAI-style peer's
cURL examples verbatim. .ci/run fails the run if the server's access log shows any 5xx."""
from __future__ import annotations

import io
import json
import subprocess
import wave

import numpy as np
import pytest
import requests
from server.test_extended_api import (  # noqa: F401 - collected here, against the installed server
    test_alternative_formats_follow_the_requested_order_and_download,
    test_bad_parameters_are_a_400_naming_the_field,
    test_seed_alternative_formats_snippet,
    test_seed_curl_direct_download,
    test_seed_curl_json_mode,
    test_seed_python_direct_download,
    test_seed_python_json_mode,
    test_the_extended_api_is_served_on_both_ports,
)
from server.test_openai_api import (  # noqa: F401
    TEXT,
    assert_intelligible,
    test_every_format_decodes_and_is_intelligible,
    test_openai_sdk_reports_validation_errors,
    test_openai_sdk_works_unchanged,
    test_seed_basic_streaming_example,
    test_seed_sse_example,
    test_sse_deltas_in_mp3_form_one_decodable_stream,
    test_stream_and_whole_file_carry_the_same_audio_for_one_seed,
    test_whole_wav_has_exact_length,
)
from server.test_peer_curl_examples import (  # noqa: F401
    test_concatenation_workflow,
    test_download_and_url_examples,
    test_error_examples,
    test_generation_examples,
    test_health_example,
)
from server.test_peer_python_examples import (  # noqa: F401
    test_advanced_tts_generator,
    test_basic_tts_example,
    test_health_examples,
)
from server.test_voice_conversion import recording, wav_bytes

from chatterbox_server.audio.encoders import pcm_to_wav

# the OpenAI-style peer (travisvn/chatterbox-tts-api), "Basic cURL Examples", verbatim but for the host
# (the playback one writes a file instead of piping into ffplay, which a CI machine has no speaker for)
SIMPLE_STREAMING = '''curl -X POST http://localhost:4123/v1/audio/speech/stream \\
  -H "Content-Type: application/json" \\
  -d '{"input": "This will stream as it generates!"}' \\
  --output streaming.wav'''
SSE_STREAMING = '''curl -X POST http://localhost:4123/v1/audio/speech \\
  -H "Content-Type: application/json" \\
  -H "Accept: text/event-stream" \\
  -d '{"input": "This streams as Server-Side Events!", "stream_format": "sse"}' \\
  --no-buffer'''
ADVANCED_STREAMING = '''curl -X POST http://localhost:4123/v1/audio/speech/stream \\
  -H "Content-Type: application/json" \\
  -d '{
    "input": "Long text that will be streamed efficiently...",
    "exaggeration": 0.8,
    "streaming_strategy": "sentence",
    "streaming_chunk_size": 150,
    "streaming_quality": "balanced"
  }' \\
  --output advanced_stream.wav'''
REALTIME_PLAYBACK = '''curl -X POST http://localhost:4123/v1/audio/speech/stream \\
  -H "Content-Type: application/json" \\
  -d '{"input": "Play this as it streams!", "streaming_quality": "fast"}' \\
  | cat > played.wav'''


@pytest.fixture(scope="session")
def hibari_server(installed):
    """The real-server suites call their server `hibari_server`: here it is the installed one."""
    return installed


def curl(installed, command: str, cwd) -> bytes:
    command = command.replace("http://localhost:4123", installed.base)
    return subprocess.run(["bash", "-o", "pipefail", "-c", command + " -sS --fail-with-body"], cwd=cwd,
                          capture_output=True, timeout=120, check=True).stdout


def test_seed_000_curl_examples(installed, tmp_path):
    curl(installed, SIMPLE_STREAMING, tmp_path)
    assert (tmp_path / "streaming.wav").read_bytes()[:4] == b"RIFF"
    events = [json.loads(line[6:]) for line in curl(installed, SSE_STREAMING, tmp_path).decode().splitlines()
              if line.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.info" and events[-1]["type"] == "speech.audio.done"
    curl(installed, ADVANCED_STREAMING, tmp_path)
    assert (tmp_path / "advanced_stream.wav").stat().st_size > 24000
    curl(installed, REALTIME_PLAYBACK.replace("| cat > played.wav", "--output played.wav"), tmp_path)
    with wave.open(io.BytesIO((tmp_path / "played.wav").read_bytes()[:44])) as wf:
        assert wf.getframerate() == 24000


def test_openai_sdk_sse_streaming_and_pcm(installed):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=installed.url("/v1"), api_key="not-needed")
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm", stream_format="sse") as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and len(events) > 2
    pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm").content
    assert_intelligible(pcm_to_wav(np.frombuffer(pcm, dtype="<i2"), 24000))


def test_extended_tts_is_served_without_whisper_and_says_so(installed):
    """The seed's headline request on a server with no Whisper model: 200, and why it degraded."""
    response = requests.post(f"{installed.extended_base}/api/v1/tts?response_mode=url", timeout=300,
                             json={"text": "Hello world", "export_formats": ["wav"], "bypass_whisper_checking": False})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Chatterbox-Degraded"] == "whisper" and "whisper" in body["degraded"]
    download = requests.get(body["output_files"][0]["url"], timeout=30)
    assert download.status_code == 200 and download.content[:4] == b"RIFF"


def test_voice_conversion_names_the_engine_it_needs(installed):
    files = {"input_audio": ("in.wav", wav_bytes(recording(2.0), 16000))}
    response = requests.post(f"{installed.extended_base}/api/v1/vc", data={"target_voice_source": "default"},
                             files=files, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "VOICE_CONVERSION_UNAVAILABLE"
    assert "make install-chatterbox" in response.json()["detail"]


def test_health_says_what_is_off(installed):
    report = requests.get(installed.url("/health"), timeout=10).json()
    assert report["status"] == "ok" and report["engine"] == "hibari"
    engine = report["optional"]["chatterbox_engine"]
    assert engine["available"] is False and engine["code"] == "fallback"
    assert "make install-chatterbox" in engine["reason"]      # the runtime install has no engine stack
    assert report["optional"]["whisper"]["available"] is not True


def test_the_web_app_and_docs_are_served(installed):
    for path in ("/", "/docs", "/redoc", "/openapi.json"):
        assert requests.get(installed.url(path), timeout=10).status_code == 200, path
