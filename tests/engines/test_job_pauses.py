"""A speech job's exact silences and per-chunk speeds, through the model worker on the tone engine.

The tone engine's audio is a tone plus noise: never exactly zero for more than the first or last few
samples of a faded chunk, so the silences the worker adds (runs of exact zeros) can be found in the
stream, and compared byte for byte with the same job without them. Most tests drive one ModelWorker in
this process over a Pipe (its real admission, steps, credits and JobDone, no engine process); the last
one sends a job through the pool's processes and sockets.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from multiprocessing import Pipe

import numpy as np
import pytest

from chatterbox_server.settings import Settings
from workers.audio import finish_piece, to_pcm16
from workers.engines.base import EngineInfo, Piece, Stream, SynthesisSettings, VoiceRef
from workers.engines.tone import SAMPLE_RATE, WORD_SECONDS, ToneEngine
from workers.ipc.board import Board, WorkerState
from workers.ipc.protocol import AudioChunk, Credit, JobDone, SpeechJob, chunk_seed
from workers.model_worker import ModelWorker

TEXTS = ("one two three", "four five", "six seven eight nine")
RATE = SAMPLE_RATE
LONGEST_ZERO_RUN_OF_SPEECH = 20          # samples: what fades and PCM16 rounding may zero at a chunk's edges


class PiecewiseTone(ToneEngine):
    """The tone engine as a stream engine: each chunk comes as an empty piece, its audio in two halves,
    then an empty last piece with the timings (Chatterbox may end a chunk with a step that vocodes nothing)."""

    def open_stream(self, text, settings, voice, seed, *, incremental=True) -> Stream:
        result = self.synthesize(text, settings, voice, seed)
        half = result.audio.size // 2
        empty = np.zeros(0, np.float32)
        pieces = [Piece(empty, input_tokens=result.input_tokens), Piece(result.audio[:half], output_tokens=1),
                  Piece(result.audio[half:], output_tokens=result.output_tokens - 1),
                  Piece(empty, last=True, words=result.words)]
        return _Scripted(pieces)


class _Scripted(Stream):
    def __init__(self, pieces: list[Piece]):
        super().__init__()
        self.pieces = pieces

    def advance(self) -> Piece:
        piece = self.pieces.pop(0)
        self.done = piece.last
        return piece


def tone_info(native: bool = True) -> EngineInfo:
    info = ToneEngine().load()
    return info if native else dataclasses.replace(info, native_speed=None)   # None: the worker time-stretches


@pytest.fixture
def make_worker(tmp_path):
    boards = []

    def make(engine=None, info=None) -> ModelWorker:
        run_dir = tmp_path / f"run{len(boards)}"
        run_dir.mkdir()
        Board(os.path.join(run_dir, "board"), 1, create=True).close()
        worker = ModelWorker(0, Settings(max_batch=4), str(run_dir), "cpu", lifeline=None)
        worker.engine = engine or ToneEngine()
        worker.info = info or tone_info()
        worker.board.reset(0, os.getpid(), 0)
        worker.board.set_state(0, WorkerState.READY)
        boards.append(worker.board)
        return worker

    yield make
    for board in boards:
        board.close()


def job(*, speed: float = 1.0, timestamps: bool = False, texts: tuple[str, ...] = TEXTS, **fields) -> SpeechJob:
    return SpeechJob("r", texts, SynthesisSettings(speed=speed), VoiceRef(), seed=11, buffer_size=2,
                     timestamps=timestamps, **fields)


def run(worker: ModelWorker, speech: SpeechJob) -> tuple[list[AudioChunk], JobDone, list[int]]:
    """The job to its end, its client crediting each message as it reads it: (messages, done, the
    messages each step sent)."""
    ours, theirs = Pipe()
    worker.connected(theirs)
    worker._admit(theirs, speech)
    chunks: list[AudioChunk] = []
    done: JobDone | None = None
    per_step: list[int] = []
    while done is None:
        batch = worker._select_batch()
        assert batch, "the job is parked or gone with work left"
        worker._step(batch)
        sent = 0
        while done is None and ours.poll():
            message = ours.recv()
            if isinstance(message, AudioChunk):
                chunks.append(message)
                sent += 1
                if theirs in worker.jobs:
                    ours.send(Credit())
                    worker._read_message(theirs)
            elif isinstance(message, JobDone):
                done = message
        per_step.append(sent)
    ours.close()
    return chunks, done, per_step


def samples(messages: list[AudioChunk]) -> np.ndarray:
    return np.frombuffer(b"".join(m.pcm for m in messages), "<i2")


def by_chunk(messages: list[AudioChunk]) -> list[np.ndarray]:
    return [samples([m for m in messages if m.index == index]) for index in range(len(TEXTS))]


def zero_runs(pcm: np.ndarray, longer_than: int = LONGEST_ZERO_RUN_OF_SPEECH) -> list[tuple[int, int]]:
    """(start, length) of every run of exact zeros longer than `longer_than` samples."""
    edges = np.diff(np.concatenate([[0], (pcm == 0).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e - s > longer_than]


def edge_zeros(pcm: np.ndarray) -> tuple[int, int]:
    nonzero = np.flatnonzero(pcm)
    return int(nonzero[0]), int(pcm.size - 1 - nonzero[-1])


# -- the default job -------------------------------------------------------------------------------
def test_a_default_job_is_what_the_worker_sent_before(make_worker):
    """Each chunk in one message: the engine's audio, faded at both ends, nothing added."""
    engine = ToneEngine()
    messages, done, _ = run(make_worker(), job())
    assert [m.index for m in messages] == [0, 1, 2]
    for index, (message, text) in enumerate(zip(messages, TEXTS, strict=True)):
        audio = engine.synthesize(text, SynthesisSettings(), VoiceRef(), chunk_seed(11, index)).audio
        assert message.pcm == to_pcm16(finish_piece(audio, RATE, 1.0, first=True, last=True))
        assert message.words is None
    assert done.audio_seconds == len(samples(messages)) / RATE
    assert not zero_runs(samples(messages))      # and speech alone has no run of zeros to mistake for a pause


@pytest.mark.parametrize("native", [True, False], ids=["engine-speed", "time-stretch"])
def test_explicit_defaults_change_no_byte(make_worker, native):
    default, _, _ = run(make_worker(info=tone_info(native)), job(speed=1.25, timestamps=True))
    explicit, _, _ = run(make_worker(info=tone_info(native)),
                         job(speed=1.25, timestamps=True, chunk_speeds=(1.25,) * 3, lead_pause=0.0,
                             pauses_after=(0.0,) * 3))
    assert [dataclasses.replace(m, synth_seconds=0) for m in explicit] == \
        [dataclasses.replace(m, synth_seconds=0) for m in default]


# -- silences --------------------------------------------------------------------------------------
LEAD, AFTER = 0.25, (0.123456, 0.0, 0.37)     # 6000, 2963, 0 and 8880 samples at 24 kHz


def test_silences_are_exact_zero_runs_where_they_were_asked(make_worker):
    plain = by_chunk(run(make_worker(), job())[0])
    messages, done, per_step = run(make_worker(), job(lead_pause=LEAD, pauses_after=AFTER))
    lead, after = round(LEAD * RATE), [round(s * RATE) for s in AFTER]
    assert (lead, after) == (6000, [2963, 0, 8880])
    assert per_step == [1, 1, 1]                              # still one message (one credit) per chunk
    for index, pcm in enumerate(by_chunk(messages)):
        front = lead if index == 0 else 0
        assert pcm.size == front + plain[index].size + after[index]
        assert not pcm[:front].any() and not pcm[pcm.size - after[index]:].any()
        assert np.array_equal(pcm[front:pcm.size - after[index]], plain[index])   # the speech, fades and all
    # found in the stream as runs of zeros: each is the silence plus the faded edges of the speech beside it
    stream = samples(messages)
    edges = [edge_zeros(pcm) for pcm in plain]
    speech_end = lead + plain[0].size - edges[0][1]
    assert zero_runs(stream) == [(0, lead + edges[0][0]),
                                 (speech_end, edges[0][1] + after[0] + edges[1][0]),
                                 (stream.size - after[2] - edges[2][1], edges[2][1] + after[2])]


def test_audio_seconds_count_the_silences(make_worker):
    _, plain, _ = run(make_worker(), job())
    messages, done, _ = run(make_worker(), job(lead_pause=LEAD, pauses_after=AFTER))
    silence = (round(LEAD * RATE) + sum(round(s * RATE) for s in AFTER)) / RATE
    assert done.audio_seconds == len(samples(messages)) / RATE
    assert done.audio_seconds == pytest.approx(plain.audio_seconds + silence, abs=1e-9)
    assert (done.input_tokens, done.output_tokens) == (plain.input_tokens, plain.output_tokens)


def test_a_pause_after_a_chunk_whose_last_piece_is_empty_is_a_message_of_silence(make_worker):
    """Piecewise: chunk 0's lead waits for its first audio, and a pause after a chunk whose engine
    ends it with no audio goes out alone, one credit like any message."""
    engine, info = PiecewiseTone(), tone_info()
    plain, _, plain_steps = run(make_worker(engine, info), job())
    assert [len(m.pcm) > 0 for m in plain] == [True] * 6 and plain_steps == [0, 1, 1, 0] * 3
    messages, done, per_step = run(make_worker(engine, info), job(lead_pause=LEAD, pauses_after=AFTER))
    assert per_step == [0, 1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1]    # chunk 1 has no pause: nothing at its end
    lead, after = round(LEAD * RATE), [round(s * RATE) for s in AFTER]
    assert [m.index for m in messages] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert messages[0].pcm == bytes(2 * lead) + plain[0].pcm     # the first half, its fade-in kept
    assert messages[1].pcm == plain[1].pcm
    assert messages[2].pcm == bytes(2 * after[0]) and messages[7].pcm == bytes(2 * after[2])
    assert [m.pcm for m in messages[3:7]] == [m.pcm for m in plain[2:6]]
    assert done.audio_seconds == len(samples(plain)) / RATE + (lead + sum(after)) / RATE


# -- speeds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("native", [True, False], ids=["engine-speed", "time-stretch"])
def test_a_chunk_speed_changes_that_chunk_only(make_worker, native):
    plain = by_chunk(run(make_worker(info=tone_info(native)), job())[0])
    fast = by_chunk(run(make_worker(info=tone_info(native)), job(chunk_speeds=(1.0, 2.0, 1.0)))[0])
    assert np.array_equal(fast[0], plain[0]) and np.array_equal(fast[2], plain[2])
    assert fast[1].size == pytest.approx(plain[1].size / 2, abs=64)


def test_chunk_speeds_replace_the_job_speed(make_worker):
    plain = by_chunk(run(make_worker(), job(speed=1.0))[0])
    mixed = by_chunk(run(make_worker(), job(speed=2.0, chunk_speeds=(1.0, 0.5, 1.0)))[0])
    assert np.array_equal(mixed[0], plain[0]) and np.array_equal(mixed[2], plain[2])
    assert mixed[1].size == 2 * plain[1].size == 2 * 2 * int(RATE * WORD_SECONDS)


# -- word timings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", [ToneEngine, PiecewiseTone], ids=["one-message", "piecewise"])
def test_chunk_0_words_move_by_the_lead_pause_and_no_others(make_worker, engine):
    plain, _, _ = run(make_worker(engine()), job(timestamps=True))
    paused, _, _ = run(make_worker(engine()), job(timestamps=True, lead_pause=LEAD, pauses_after=AFTER))
    plain_words = [m.words for m in plain if m.words is not None]
    paused_words = [m.words for m in paused if m.words is not None]
    assert len(paused_words) == len(plain_words) == 3
    assert paused_words[0] == tuple((w, round(s + LEAD, 4), round(e + LEAD, 4)) for w, s, e in plain_words[0])
    assert paused_words[1:] == plain_words[1:]
    # true in the audio: chunk 0's first word starts where its tone does, after the lead's zeros
    first = samples([m for m in paused if m.index == 0])
    assert paused_words[0][0][1] == pytest.approx(edge_zeros(first)[0] / RATE, abs=0.002)
    assert paused_words[0][-1][2] <= (first.size - round(AFTER[0] * RATE)) / RATE + 1e-4   # 4 decimals


# -- the job message -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    {"chunk_speeds": (1.0, 1.0)}, {"pauses_after": (0.1,)}, {"chunk_speeds": (1.0, 0.0, 1.0)},
    {"chunk_speeds": (1.0, float("nan"), 1.0)}, {"lead_pause": -0.1}, {"lead_pause": float("inf")},
    {"pauses_after": (0.1, -0.01, 0.0)}, {"pauses_after": (0.1, float("nan"), 0.0)},
], ids=["speeds-length", "pauses-length", "zero-speed", "nan-speed", "negative-lead", "infinite-lead",
        "negative-pause", "nan-pause"])
def test_bad_speeds_and_pauses_are_refused(fields):
    with pytest.raises(ValueError):
        job(**fields)


def test_the_new_fields_default_to_nothing():
    speech = SpeechJob("r", TEXTS, SynthesisSettings(speed=1.5), VoiceRef(), seed=0, buffer_size=1)
    assert (speech.chunk_speeds, speech.lead_pause, speech.pauses_after) == ((), 0.0, ())
    assert [speech.chunk_speed(i) for i in range(3)] == [1.5] * 3
    assert [speech.pause_after(i) for i in range(3)] == [0.0] * 3
    assert SpeechJob("r", (), SynthesisSettings(), VoiceRef(), seed=0, buffer_size=1, lead_pause=1.0).units == 0


# -- through the pool ------------------------------------------------------------------------------------
def test_pauses_and_speeds_through_the_pool(tmp_path):
    import gevent

    from chatterbox_server.runtime.pool_client import PoolClient
    from workers.pool import RUN_DIR_ENV, ModelPool

    saved = os.environ.get(RUN_DIR_ENV)
    settings = Settings.from_env({}, engine="tone", model_workers=1, run_dir=str(tmp_path / "run"),
                                 graceful_timeout=5, log_level="warning")
    pool = ModelPool(settings)
    pool.start()
    try:
        client = PoolClient(pool.run_dir, max_queued_jobs=4, queue_timeout=10.0, chunk_timeout=10.0)
        for _ in range(1000):
            if client.ready_slots():
                break
            gevent.sleep(0.02)
        speech = dataclasses.replace(job(lead_pause=LEAD, pauses_after=AFTER, chunk_speeds=(1.0, 2.0, 1.0)),
                                     request_id=uuid.uuid4().hex)
        handle = client.submit(speech)
        try:
            messages = list(handle.chunks())
        finally:
            handle.close()
        client.board.close()
    finally:
        pool.stop()
        if saved is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = saved
    words = [len(text.split()) for text in TEXTS]
    lead, after = round(LEAD * RATE), [round(s * RATE) for s in AFTER]
    tone = int(RATE * WORD_SECONDS)
    assert [len(m.pcm) // 2 for m in messages] == [lead + words[0] * tone + after[0], words[1] * (tone // 2),
                                                   words[2] * tone + after[2]]
    assert zero_runs(samples(messages))[0] == (0, edge_zeros(samples(messages[:1]))[0])
    assert not samples(messages[:1])[:lead].any() and not samples(messages[2:])[-after[2]:].any()
    assert handle.result.audio_seconds == len(samples(messages)) / RATE
