"""Continuous batching and token-window streaming of the chatterbox engine, on a random checkpoint.

Random weights never sample the stop token, so every sequence runs to the token cap; the caps are
tiny. The T3 tests compare token sequences, where a wrong cache row, mask or position would show
at once; the S3Gen tests cost a few calls of 3-8 s each (quiet machine), so each generation runs
once. Measured on a heavily loaded 2-core machine: ~30 min in all; expect a few minutes quiet.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("chatterbox", reason="chatterbox-tts is not installed (see requirements-chatterbox.txt)")

import torch  # noqa: E402

from workers.engines.base import SynthesisSettings, VoiceRef  # noqa: E402
from workers.engines.chatterbox import ChatterboxEngine  # noqa: E402
from workers.engines.s3gen_stream import SAMPLES_PER_MEL, window_schedule  # noqa: E402
from workers.engines.t3_batch import T3Batch  # noqa: E402

pytestmark = [pytest.mark.chatterbox, pytest.mark.timeout(1800)]   # module fixtures run inside the first test

CAP = 16
FIRST_WINDOW = 3            # windows: 3 tokens, then 6, then the rest: up to three S3Gen calls
TEXT = "Hello there, this is a test."
BUILTIN = VoiceRef("default")
REQUESTS = [                # (settings, seed): CFG pair, exaggeration, no CFG, temperature
    (SynthesisSettings(), 1),
    (SynthesisSettings(exaggeration=1.1, temperature=0.6), 2),
    (SynthesisSettings(cfg_weight=0.0), 3),
    (SynthesisSettings(cfg_weight=0.8, temperature=1.2), 4),
]


@pytest.fixture(scope="module")
def engine(chatterbox_checkpoint):
    engine = ChatterboxEngine(checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=CAP,
                              stream_tokens=FIRST_WINDOW)
    engine.load()
    return engine


def _sequence(engine, index: int):
    settings, seed = REQUESTS[index]
    return engine.open_stream(TEXT, settings, BUILTIN, seed).seq


def _decode(batch: T3Batch, sequences, steps: int) -> None:
    with torch.inference_mode():
        for _ in range(steps):
            batch.run([s for s in sequences if not s.finished])


@pytest.fixture(scope="module")
def alone(engine):
    """Each request's speech tokens when it runs alone."""
    out = []
    for index in range(len(REQUESTS)):
        seq = _sequence(engine, index)
        _decode(T3Batch(engine._tts.t3, engine._batch.stop_token, engine._batch.start_token), [seq], CAP + 1)
        assert seq.finished and len(seq.tokens) == CAP
        out.append(seq.tokens)
    return out


def test_rows_join_pause_leave_and_cancel_without_changing_anyone_elses_tokens(engine, alone):
    batch = T3Batch(engine._tts.t3, engine._batch.stop_token, engine._batch.start_token)
    seqs = [_sequence(engine, index) for index in range(len(REQUESTS))]
    _decode(batch, seqs[:2], 3)                                 # two start together
    _decode(batch, seqs[:3], 2)                                 # a third joins mid-generation
    _decode(batch, [seqs[0], seqs[2]], 3)                       # the second pauses (no credit) ...
    assert seqs[1] not in batch.members and seqs[1].kv is not None
    _decode(batch, seqs, 4)                                     # ... and rejoins with a fourth
    batch.discard(seqs[0])                                      # the first is cancelled
    assert seqs[0] not in batch.members and sum(s.rows for s in batch.members) == batch.mask.size(0)
    _decode(batch, seqs[1:], CAP)
    assert seqs[0].tokens == alone[0][:len(seqs[0].tokens)] and 0 < len(seqs[0].tokens) < CAP
    for seq, expected in zip(seqs[1:], alone[1:], strict=True):
        assert seq.finished and seq.tokens == expected
    assert batch.members == [] and batch.cache is None          # finished rows left at once


@pytest.fixture(scope="module")
def streamed(engine):
    """Request 0 streamed in token windows, then vocoded whole (same seed, same tokens)."""
    settings, seed = REQUESTS[0]
    stream = engine.open_stream(TEXT, settings, BUILTIN, seed)
    pieces = []
    while not stream.done:
        piece = engine.step([stream])[0]
        if piece.audio.size:
            pieces.append(piece.audio)
    stream.close()
    whole = engine.synthesize(TEXT, settings, BUILTIN, seed)
    return pieces, whole, stream.seq.tokens


def test_windows_cover_exactly_the_audio_of_vocoding_everything_at_once(streamed):
    pieces, whole, tokens = streamed
    assert tokens == whole.extra["speech_tokens"]
    assert len(pieces) >= 2
    assert 0 < pieces[0].size <= 2 * FIRST_WINDOW * SAMPLES_PER_MEL    # the first window alone, less held-back tail
    total = sum(piece.size for piece in pieces)
    assert total == whole.audio.size == 2 * whole.extra["vocoded_tokens"] * SAMPLES_PER_MEL


def test_seams_jump_no_more_than_the_audio_inside_windows(streamed):
    pieces, _, _ = streamed
    audio = np.concatenate(pieces)
    jumps = np.abs(np.diff(audio))
    seams = np.cumsum([piece.size for piece in pieces])[:-1]
    inside = np.delete(jumps, np.concatenate([np.arange(s - 3, s + 2) for s in seams]))
    assert max(jumps[s - 1] for s in seams) <= np.percentile(inside, 99.9)


def test_window_schedule_starts_small_and_grows_to_a_ceiling():
    assert [window_schedule(25, i) for i in range(6)] == [25, 50, 100, 200, 200, 200]


def test_a_seeded_request_sounds_the_same_alone_and_in_a_batch_of_four(engine, streamed):
    pieces, _, tokens = streamed
    streams = [engine.open_stream(TEXT, settings, BUILTIN, seed, incremental=index == 0)
               for index, (settings, seed) in enumerate(REQUESTS)]
    audio: list[list[np.ndarray]] = [[] for _ in streams]
    while not all(s.done for s in streams):
        running = [s for s in streams if not s.done]
        for stream, piece in zip(running, engine.step(running), strict=True):
            assert not isinstance(piece, BaseException), piece
            audio[streams.index(stream)].append(piece.audio)
    assert streams[0].seq.tokens == tokens
    assert np.array_equal(np.concatenate(audio[0]), np.concatenate(pieces))
    for stream in streams:
        stream.close()
    assert engine._batch.members == []


def test_gpu_speedups_change_nothing_on_cpu(engine):
    from workers.engines.chatterbox import gpu_speedups

    t3 = engine._tts.t3
    before = {name: (p.dtype, p.data_ptr()) for name, p in t3.named_parameters()}
    assert gpu_speedups(t3, "cpu", "bfloat16", True) is None
    assert {name: (p.dtype, p.data_ptr()) for name, p in t3.named_parameters()} == before
    assert engine._batch._decode == engine._batch._forward          # the plain eager-graph step
