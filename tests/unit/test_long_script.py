"""A long job's script (synthesis/longjobs/script.py) and the runner's speech jobs for it.

The planning by example: turns, voices, pauses, gaps and rates per chunk; errors that name the
turn and the character. The runner against a fake pool whose audio says how each chunk was made
(its text, voice, seed, trims and pauses): a job resumed at any chunk makes the same file, a
chunk that comes in several messages is one chunk, and every span is the speech job it should be.
"""
from __future__ import annotations

import json
import struct

import gevent
import pytest

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.pool_client import PoolError
from chatterbox_server.settings import Settings
from chatterbox_server.store import db
from chatterbox_server.store.jobs_db import JobStore
from chatterbox_server.synthesis.budget import Limits
from chatterbox_server.synthesis.longjobs import files, runner
from chatterbox_server.synthesis.longjobs.rules import COMPLETED, PENDING
from chatterbox_server.synthesis.longjobs.script import Script, needs_script, plan_script
from workers.engines.base import VoiceRef
from workers.engines.tone import ToneEngine
from workers.ipc.protocol import AudioChunk, JobDone, SpeechJob

LIMITS = Limits.of(Settings())
SPEAKERS = {"S1": "alice", "S2": "bob"}
RATE = 24000


def plan(text: str, speakers: dict[str, str] | None = SPEAKERS, gap: float = 0.3, max_turns: int = 4000,
         tags: frozenset[str] = frozenset(), size: int = 250, voice: str | None = None, **kwargs) -> Script:
    return plan_script(text, strategy="sentence", chunk_size=size, tags=tags, speakers=speakers, default_voice=voice,
                       gap=gap, max_turns=max_turns, limits=kwargs.pop("limits", LIMITS), **kwargs)


def refused(text: str, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        plan(text, **kwargs)
    return caught.value


# -- planning ---------------------------------------------------------------------------------------
def test_every_chunk_has_its_turns_voice_and_the_silence_after_it():
    script = plan("[S1] One two. [pause:500ms] Three. [S2] Four five. [S1] Six [laugh] seven.")
    assert script.chunks == ("One two.", "Three.", "Four five.", "Six seven.")
    assert [script.voice_of(i, None) for i in range(4)] == ["alice", "alice", "bob", "alice"]
    assert script.turns == (0, 0, 1, 2) and script.turn_count == 3
    assert script.pauses == (0.5, 0.3, 0.3, 0.0)     # the pause, then the gap between turns; none at the end
    assert script.trim_edges and script.dropped_tags == ("laugh",) and script.lead == 0.0


def test_the_script_survives_the_job_parameters_json():
    script = plan("[S1] [pause:1s] One. [S2] <speak><prosody rate='slow'>Two.</prosody></speak>")
    again = Script.from_params(json.loads(json.dumps({"script": script.to_json()})), script.chunks)
    assert again == script
    assert again.lead == 1.0 and again.rates == (1.0, 0.8) and again.speeds(1.5) == (1.5, pytest.approx(1.2))
    assert Script.from_params({}, ("a", "b")) == Script(("a", "b")) and Script(("a",)).to_json() is None


def test_markup_without_speakers_is_one_turn_in_the_jobs_voice():
    script = plan("One. [pause:2s] Two.", speakers=None)
    assert script.chunks == ("One.", "Two.") and script.pauses == (2.0, 0.0) and not script.trim_edges
    assert script.voices == () and script.voice_of(1, "carol") == "carol" and script.turns == ()


def test_text_before_the_first_marker_is_in_the_jobs_voice_and_a_pause_alone_is_a_silent_turn():
    script = plan("Hello. [S1] [pause:400ms] [S2] Hi.", voice="carol", gap=0.1)
    assert script.chunks == ("Hello.", "Hi.") and script.voices == ("carol", "alice", "bob")
    assert script.pauses == (pytest.approx(0.1 + 0.4 + 0.1), 0.0) and script.turn_count == 3


def test_double_brackets_are_text():
    assert not needs_script("Part one [[sleep:0.2]]. And [[fail]].")
    script = plan("[S1] One [[sleep:0.1]]. [S2] Two [[fail]].")
    assert script.chunks == ("One [[sleep:0.1]].", "Two [[fail]].")


def test_a_bad_turn_is_named_with_its_character_in_the_input():
    text = "".join(f"[S{1 + n % 2}] Line {n}. " for n in range(700)) + "[S2] <speak>Oh <break time='5'/> no.</speak>"
    error = refused(text)
    assert error.status == 400 and error.param == "input"
    assert error.message.startswith('input: turn 700 (speaker "S2", at character ')
    assert f"at character {text.index('<break')}" in error.message, error.message
    no_voice = refused("".join(f"[S1] Line {n}. " for n in range(700)) + "[S3] Who?")
    assert no_voice.param == "speakers" and no_voice.message.startswith('input: turn 700: speaker "S3"')
    assert "unknown tag [giggle]" in refused("[S1] Hi [giggle].").message
    assert refused("[voice:bad name!] Hi.").param == "input"
    assert "nothing to speak" in refused("[S1] [laugh] [S2] [pause:1s]").message


def test_turns_are_counted_before_any_is_read():
    error = refused("[S1] a. " * 4000 + "[S1] <speak", max_turns=4000)
    assert "4001 turns; at most 4000" in error.message and "CHATTERBOX_DIALOGUE_MAX_TURNS" in error.message


def test_the_scripts_chunks_count_against_the_long_job_limits():
    error = refused("[S1] Ab. [S2] Cd. " * 60, size=50, limits=Limits.of(Settings(longtext_max_chunks=100)))
    assert error.status == 413 and "CHATTERBOX_LONGTEXT_MAX_CHUNKS" in error.message


# -- spans: the runner's speech jobs ----------------------------------------------------------------
def test_a_span_is_a_run_of_one_voice_cut_where_a_turn_ends_without_silence():
    script = plan("[S1] A. [S1] B. [S2] C. D. [S2] E.", gap=0.0)
    assert script.chunks == ("A.", "B.", "C. D.", "E.")
    assert [script.span(i) for i in range(4)] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with_gap = plan("[S1] A. [S1] B. [S2] C. [S2] D.", gap=0.2)
    assert with_gap.span(0) == (0, 2) and with_gap.span(2) == (2, 4)


def test_a_span_resumed_mid_turn_starts_one_chunk_early_where_the_trim_would_differ():
    long_turn = plan("[S1] First sentence here. Second one here. Third one here. [pause:1s] Fourth. [S2] Yes.",
                     size=30)
    assert long_turn.chunks[:4] == ("First sentence here.", "Second one here.", "Third one here.", "Fourth.")
    assert long_turn.span(0) == (0, 4)
    assert long_turn.span(1) == (0, 4)     # mid-turn, no pause before: chunk 0 is made again to keep 1's start
    assert long_turn.span(3) == (3, 4)     # after a pause: trimmed at its start, as a job's first chunk is
    assert long_turn.span(4) == (4, 5)
    prose = plan("One. Two. [pause:1s] Six. Four.", speakers=None, size=5)
    assert prose.span(1) == (1, 4) and prose.span(2) == (1, 4) and prose.span(3) == (3, 4)
    assert Script(("a", "b", "c")).span(2) == (2, 3)


# -- the runner, against a pool whose audio tells how it was made -----------------------------------
def made(job: SpeechJob, index: int) -> bytes:
    """A chunk's audio that changes with everything that makes it: 4 samples naming text, voice, seed,
    speed and trims, then the job's exact silences."""
    start, end = job.trims(index)
    name = f"{job.chunks[index]}|{job.voice.name}|{(job.seed + index) % 2**32}|{job.chunk_speed(index)}|{start}|{end}"
    digest = hash(name) & 0x7FFF7FFF7FFF7FFF
    lead = round(job.lead_pause * RATE) if index == 0 else 0
    return bytes(2 * lead) + struct.pack("<Q", digest | 0x0101010101010101) + bytes(2 * round(job.pause_after(index)
                                                                                               * RATE))


class FakeHandle:
    def __init__(self, job: SpeechJob, pool: FakePool) -> None:
        self.job, self.pool = job, pool
        self.cancel_reason: str | None = None
        self.result: JobDone | None = None

    def chunks(self):
        for index in range(self.job.units):
            audio = made(self.job, index)
            for piece in (audio[:4], b"", audio[4:]):          # a chunk in three messages, one of them empty
                if self.pool.fail_after is not None and self.pool.sent >= self.pool.fail_after:
                    self.pool.fail_after = None
                    raise PoolError("the model worker stopped", status=503, code="model_worker_died")
                self.pool.sent += 1
                yield AudioChunk(index, piece, 1, 1, 0.001)
                gevent.sleep(0)
        self.result = JobDone(1, 1, 0.0, 0.0)

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason

    def close(self) -> None:
        pass


class FakePool:
    def __init__(self) -> None:
        self.info = ToneEngine().load()
        self.submitted: list[SpeechJob] = []
        self.fail_after: int | None = None      # the model worker dies once this many messages were sent
        self.sent = 0

    models = ("standard",)

    def engine_info(self, model=None):
        return self.info

    def submit(self, job: SpeechJob, admitted: bool = False) -> FakeHandle:
        self.submitted.append(job)
        return FakeHandle(job, self)


class Voices:
    def resolve(self, name, info, param="voice", owns=None) -> VoiceRef:
        return VoiceRef(name or "default")


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RETRY_PAUSE_SECONDS", 0.0)
    engine = db.make_engine(db.database_url("", str(tmp_path)))
    db.migrate(engine, str(tmp_path))
    store = JobStore(engine, lease_seconds=30)
    pool = FakePool()
    the_runner = runner.Runner(store, pool, Voices(), str(tmp_path / "jobs"), 2, 0)
    yield store, pool, the_runner
    engine.dispose()


SCRIPT = ("[S1] First sentence here. Second one here. Third one here. [pause:1s] Fourth. "
          "[S2] <speak>Yes. <prosody rate='fast'>Indeed.</prosody></speak> [S1] [pause:250ms] Back. Again.")


def run_job(store: JobStore, the_runner: runner.Runner, job_id: str, script: Script, seed: int = 5) -> bytes | None:
    params = {"exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8, "speed": 1.0, "language": None,
              "streaming_strategy": "sentence", "streaming_chunk_size": 30, "seed": seed, "script": script.to_json()}
    if store.get(job_id) is None:
        store.create({"id": job_id, "text": SCRIPT, "text_length": len(SCRIPT), "text_hash": "h", "voice": None,
                      "parameters": json.dumps(params), "output_format": "pcm"}, list(script.chunks))
    job = store.claim(the_runner.owner, 2, lambda owner: False)
    assert job is not None and job["id"] == job_id
    the_runner.run(job)
    row = store.get(job_id)
    if row["status"] != COMPLETED:
        return None
    with open(files.output_path(the_runner.jobs_root, job_id, "pcm"), "rb") as f:
        return f.read()


def test_the_runner_makes_one_speech_job_per_span_with_the_scripts_voices_seeds_and_silences(setup):
    store, pool, the_runner = setup
    script = plan(SCRIPT, size=30, gap=0.5)
    audio = run_job(store, the_runner, "whole", script)
    spans = [(job.seed - 5, job.seed - 5 + job.units) for job in pool.submitted]
    assert spans == [(0, 4), (4, 6), (6, 7)]
    first, second, third = pool.submitted
    assert [job.voice.name for job in pool.submitted] == ["alice", "bob", "alice"]
    assert first.pauses_after == (0.0, 0.0, 1.0, 0.5) and first.trim_edges and first.lead_pause == 0.0
    assert second.chunk_speeds == (1.0, 1.25) and second.pauses_after == (0.0, 0.75)     # gap 0.5 + pause 0.25
    assert third.chunks == ("Back. Again.",) and third.pauses_after == ()
    assert audio == b"".join(made(job, i) for job in pool.submitted for i in range(job.units))
    assert audio.count(bytes(2 * RATE)) == 1          # the one-second pause, exact zeros


@pytest.mark.parametrize("messages", [1, 2, 4, 5, 7, 10, 13, 16, 19])
def test_a_job_resumed_after_a_crash_at_any_point_makes_the_same_file(setup, messages):
    store, pool, the_runner = setup
    script = plan(SCRIPT, size=30, gap=0.5)
    reference = run_job(store, the_runner, "reference", script)
    pool.submitted.clear()
    pool.sent, pool.fail_after = 0, messages
    assert run_job(store, the_runner, "crashed", script) is None
    assert store.get("crashed")["status"] == PENDING
    first_missing = next(c["idx"] for c in store.chunks("crashed") if c["audio_file"] is None)
    assert first_missing <= messages // 3         # a chunk is recorded once it is whole
    submitted_before = len(pool.submitted)
    assert run_job(store, the_runner, "crashed", script) == reference
    resumed = pool.submitted[submitted_before]
    assert resumed.seed - 5 == script.span(first_missing)[0]
    assert resumed.seed - 5 in (first_missing, first_missing - 1)


def test_a_plain_jobs_chunks_in_several_messages_are_whole(setup):
    store, pool, the_runner = setup
    audio = run_job(store, the_runner, "plain", Script(("One.", "Two.", "Three.")))
    (job,) = pool.submitted
    assert job.units == 3 and not job.trim_edges and job.pauses_after == () and job.chunk_speeds == ()
    assert audio == b"".join(made(job, i) for i in range(3)) and len(audio) == 3 * 8


def test_the_lease_is_renewed_across_many_short_speech_jobs(tmp_path):
    """Each turn of a dialogue is a speech job of its own, shorter than the lease's renewal interval:
    the lease is the job's, so no other runner takes a job that takes longer than its lease."""
    engine = db.make_engine(db.database_url("", str(tmp_path)))
    db.migrate(engine, str(tmp_path))
    store = JobStore(engine, lease_seconds=1.0)           # renewed every 0.33 s
    pool = FakePool()
    the_runner = runner.Runner(store, pool, Voices(), str(tmp_path / "jobs"), 2, 0)
    script = plan(" ".join(f"[S{1 + n % 2}] Line {n}." for n in range(40)))
    original = FakeHandle.chunks

    def slow(self):
        for message in original(self):
            gevent.sleep(0.02)
            yield message
    taken: list[str] = []

    def intruder() -> None:
        while True:
            job = store.claim("intruder", 5, lambda owner: False)
            if job is not None:
                taken.append(job["id"])
            gevent.sleep(0.1)
    FakeHandle.chunks = slow
    other = gevent.spawn(intruder)
    try:
        assert run_job(store, the_runner, "dialogue", script) is not None      # 40 jobs of 0.06 s: 2.4 s
    finally:
        FakeHandle.chunks = original
        other.kill()
        engine.dispose()
    assert len(pool.submitted) == 40 and taken == []
