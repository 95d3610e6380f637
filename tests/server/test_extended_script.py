"""POST /api/v1/tts with pauses, SSML, expressive tags and inline speakers in `text` (text/prep.plan_script).

On the tone engine the answer is checked sample by sample against single /v1 requests of its
prepared chunks (lowercased, as the Extended text preparation does): with bypassed Whisper and one
candidate, chunk i's take has the seed plus i; a script's turns are in their voices, joined by the
gap, and its pauses are exact zeros. A malformed script is a 400 in the Extended envelope that
points at the character, before any synthesis. On hibari the engine's own edge silence is cut
where a pause stands.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
import requests
import soundfile
from test_dialogue import jobs_seen, silence, speak, zero_runs
from test_voices import reference_wav, upload

from workers.audio import EDGE_SILENCE

pytestmark = pytest.mark.server
RATE = 24000
SEED = 31
CHEAP = {"bypass_whisper_checking": True, "num_candidates_per_chunk": 1, "export_formats": ["wav"], "seed": SEED}


@pytest.fixture(scope="module")
def server(tone_server):
    for name, frequency in (("alice", 200.0), ("bob", 320.0)):
        assert upload(tone_server, name, reference_wav(frequency=frequency)).status_code in (200, 201)
    return tone_server


def tts(server, text: str, **fields) -> requests.Response:
    return requests.post(f"{server.extended_base}/api/v1/tts", json={"text": text, **CHEAP, **fields}, timeout=60)


def samples(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    audio, rate = soundfile.read(io.BytesIO(response.content), dtype="int16")
    assert rate == RATE
    return audio


def test_plain_text_is_spoken_as_before(server):
    got = samples(tts(server, "One two three. Four five six seven."))
    want = np.concatenate([speak(server, "one two three. four five six seven.", "default", SEED)])
    assert np.array_equal(got, want)


def test_inline_speakers_are_spoken_in_their_voices_joined_by_the_gap(server):
    response = tts(server, "[S1] One two three. [S2] Four five. [S1] Six seven eight nine.",
                   speakers={"S1": "alice", "S2": "bob.wav"}, gap_ms=250)
    want = np.concatenate([speak(server, "one two three.", "alice", SEED), silence(0.25),
                           speak(server, "four five.", "bob", SEED + 1), silence(0.25),
                           speak(server, "six seven eight nine.", "alice", SEED + 2)])
    assert np.array_equal(samples(response), want)
    assert response.headers["X-Chatterbox-Turns"] == "3"


def test_the_default_gap_and_text_before_the_first_marker_in_the_reference_voice(server):
    response = tts(server, "One two.\nSpeaker 1: three four.", reference_audio_filename="bob",
                   speakers={"speaker1": "alice"})
    want = np.concatenate([speak(server, "one two.", "bob", SEED), silence(0.3),        # DIALOGUE_GAP_MS
                           speak(server, "three four.", "alice", SEED + 1)])
    assert np.array_equal(samples(response), want)


def test_pauses_are_exact_zero_runs(server):
    got = samples(tts(server, "[pause:300ms] Wait for it. [pause:700ms] Now go. [pause:200ms]"))
    want = np.concatenate([silence(0.3), speak(server, "wait for it.", "default", SEED), silence(0.7),
                           speak(server, "now go.", "default", SEED + 1), silence(0.2)])
    assert np.array_equal(got, want)
    lengths = [end - start for start, end in zero_runs(got, round(0.1 * RATE))]
    assert len(lengths) == 3 and all(0 <= length - round(seconds * RATE) <= round(0.010 * RATE)
                                     for length, seconds in zip(lengths, (0.3, 0.7, 0.2), strict=True)), lengths


def test_ssml_breaks_and_prosody_rates(server):
    text = '<speak>One two. <break time="450ms"/><prosody rate="slow">Three four five.</prosody></speak>'
    got = samples(tts(server, text))
    want = np.concatenate([speak(server, "one two.", "default", SEED), silence(0.45),
                           speak(server, "three four five.", "default", SEED + 1, speed=0.8)])
    assert np.array_equal(got, want)


def test_tags_the_engine_lacks_are_dropped_and_said(server):
    response = tts(server, "[laugh] That is funny. [sigh]")
    assert response.headers["X-Chatterbox-Dropped-Tags"] == "laugh,sigh"
    assert np.array_equal(samples(response), speak(server, "that is funny.", "default", SEED))


def test_the_json_answer_lists_the_scripts_chunks_and_speakers(server):
    response = requests.post(f"{server.extended_base}/api/v1/tts?response_mode=url", timeout=60, json={
        "text": "[S1] One. [S2] Two.", "speakers": {"S1": "alice", "S2": "bob"}, **CHEAP})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["chunks"] == ["one.", "two."]
    assert body["parameters"]["speakers"] == {"S1": "alice", "S2": "bob"}
    assert [take["duration_seconds"] for take in body["candidates"]] == [0.15, 0.15]     # without the silence


HOSTILE = [    # (fields, status, what the detail starts with, what it says)
    ({"text": "<speak>Hello <prosody rate='fast'>there</speak>"}, 400, "text:", "at character"),
    ({"text": "Hello [giggle] there"}, 400, "text:", "unknown tag [giggle]"),
    ({"text": "Wait [pause:10min] there"}, 400, "text:", "at character 5"),
    ({"text": "[S1] Hi. [S3] There.", "speakers": {"S1": "alice"}}, 400, "speakers:", 'turn 1: speaker "S3"'),
    ({"text": "[S1] Hi. [S2] <speak>x <break time='5'/></speak>", "speakers": {"S1": "alice", "S2": "bob"}},
     400, "text:", 'turn 1 (speaker "S2", at character 9)'),
    ({"text": "[S1] Hi. [S2] There.", "speakers": {"S1": "alice", "S2": "nobody"}}, 404, "speakers:",
     "turn 1 (speaker \"S2\""),
    ({"text": "[voice:bad name!] Hi."}, 400, "text:", "is not a voice"),
    ({"text": "[laugh] [pause:1s]"}, 400, "text:", "nothing to speak"),
    ({"text": "[S1] hi. " * 201, "speakers": {"S1": "alice"}}, 400, "text:", "201 turns; at most 200"),
    ({"text": "[S1] hi.", "speakers": {"S1": "../etc/passwd"}}, 400, "speakers", ""),
    ({"text": "[S1] hi.", "speakers": {"S1": "alice"}, "gap_ms": 9999}, 400, "gap_ms", ""),
]


@pytest.mark.parametrize(("fields", "status", "starts", "says"), HOSTILE, ids=[
    "bad-ssml", "unknown-tag", "long-pause", "speaker-without-voice", "bad-break-in-turn", "unknown-voice",
    "bad-voice-marker", "nothing-to-say", "too-many-turns", "voice-outside-the-library", "gap-too-long"])
def test_a_bad_script_is_refused_in_the_extended_envelope_before_any_synthesis(server, fields, status, starts,
                                                                               says):
    seen = jobs_seen(server)
    started = time.monotonic()
    response = tts(server, **fields)
    assert response.status_code == status, response.text
    assert time.monotonic() - started < 5
    body = response.json()
    assert body["success"] is False and set(body) == {"success", "error", "detail", "error_code"}
    assert body["detail"].startswith(starts) and says in body["detail"], body
    assert jobs_seen(server) == seen


def test_double_brackets_stay_text(server):
    """The tone engine's own markers are no tags: [[sleep:S]] still slows the chunk down."""
    started = time.monotonic()
    got = samples(tts(server, "One [[sleep:0.5]] two. [pause:100ms] Three."))
    assert time.monotonic() - started >= 0.5
    assert len(zero_runs(got, round(0.1 * RATE))) == 1


# -- hibari: the engine's own edge silence is cut where a pause stands -------------------------------
def test_a_pause_on_hibari_is_the_silence_heard(hibari_server):
    response = requests.post(f"{hibari_server.extended_base}/api/v1/tts", timeout=120, json={
        "text": "Wait for it. [pause:1s] Now go.", **CHEAP})
    audio = samples(response)
    runs = [run for run in zero_runs(audio, round(0.5 * RATE)) if 0 < run[0] and run[1] < len(audio)]
    assert len(runs) == 1, runs
    start, end = runs[0]
    assert 0 <= (end - start) - RATE <= round(0.010 * RATE), end - start
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > EDGE_SILENCE * 32767)
    before, after = loud[loud < start][-1], loud[loud >= end][0]
    assert start - before <= round(0.030 * RATE) and after - end <= round(0.030 * RATE), (before, start, end, after)
