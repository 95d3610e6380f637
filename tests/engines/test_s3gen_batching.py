"""S3Gen windows of several sequences in one flow call (workers/engines/s3gen_batch.py), on a
random checkpoint: a row of the batched flow is upstream's flow, and a sequence vocoded in a batch
of three (other voices, other prompt and window lengths) sounds as it does alone.

Random weights never sample the stop token, so every sequence runs to the tiny token cap; they do
sample control tokens, which are never vocoded, so the sequences' vocodable lengths differ.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("chatterbox", reason="chatterbox-tts is not installed (see requirements-chatterbox.txt)")

import chatterbox_checkpoint as checkpoints  # noqa: E402
import torch  # noqa: E402

from workers.engines import s3gen_stream  # noqa: E402
from workers.engines.base import SynthesisSettings, VoiceRef  # noqa: E402
from workers.engines.chatterbox import ChatterboxEngine  # noqa: E402
from workers.engines.s3gen_batch import FlowRow, flow_mels  # noqa: E402
from workers.engines.s3gen_stream import MELS_PER_TOKEN, S3GenStreamer  # noqa: E402

CAP = 16
FIRST_WINDOW = 3            # windows of 3 tokens, then 6, then the rest
TEXT = "Hello there, this is a test."
BUILTIN = VoiceRef("default")
TOLERANCE = 1e-5            # float rounding of other matrix shapes (measured ~2e-7); audio peaks ~0.1
# Two flow (CFM) steps instead of ten: a batch and a lone row take the same steps either way, and
# the flow over the voice prompt is most of a test's time (tens of seconds a call on a busy CPU).
FLOW_STEPS = 2

pytestmark = pytest.mark.timeout(1200)      # module fixtures run inside the first test


@pytest.fixture(scope="module")
def engine(chatterbox_checkpoint):
    engine = ChatterboxEngine(checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=CAP,
                              stream_tokens=FIRST_WINDOW, s3gen_batch=True)
    engine.load()
    engine._streamer.n_timesteps = FLOW_STEPS
    return engine


@pytest.fixture(scope="module")
def requests(tmp_path_factory):
    """Three sequences: the 3 s built-in voice twice (with and without CFG) and a 1.5 s clone."""
    path = tmp_path_factory.mktemp("voices") / "alice.wav"
    alice = VoiceRef("alice", str(checkpoints.write_wav(path, checkpoints.synthetic_voice(1.5, f0=210.0, seed=7))))
    return [(SynthesisSettings(), BUILTIN, 1), (SynthesisSettings(exaggeration=0.8), alice, 2),
            (SynthesisSettings(cfg_weight=0.0, temperature=1.2), BUILTIN, 3)]


def _run(engine, streams) -> list[list[np.ndarray]]:
    """Step the streams together, as the model worker does, until all are done."""
    pieces: list[list[np.ndarray]] = [[] for _ in streams]
    while not all(s.done for s in streams):
        running = [s for s in streams if not s.done]
        for stream, piece in zip(running, engine.step(running), strict=True):
            assert not isinstance(piece, BaseException), piece
            if piece.audio.size:
                pieces[streams.index(stream)].append(piece.audio)
    for stream in streams:
        stream.close()
    return pieces


@pytest.fixture(scope="module")
def runs(engine, requests):
    """Every sequence alone, then all three together with the flow calls' batch sizes recorded."""
    alone = [_run(engine, [engine.open_stream(TEXT, *request)])[0] for request in requests]
    calls: list[list[int]] = []         # each flow call: its rows' lengths (prompt and window tokens)

    def recording(flow, rows, *args, **kwargs):
        calls.append([row.gen["prompt_token"].shape[-1] + row.tokens.numel() for row in rows])
        return flow_mels(flow, rows, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(s3gen_stream, "flow_mels", recording)
        streams = [engine.open_stream(TEXT, *request) for request in requests]
        together = _run(engine, streams)
    return alone, together, calls


@pytest.mark.chatterbox
def test_one_row_of_the_batched_flow_is_upstreams_flow(engine):
    flow, gen = engine._tts.s3gen.flow, engine._builtin.gen
    tokens = torch.randint(0, 6561, (10,), generator=torch.Generator().manual_seed(0))
    frames = MELS_PER_TOKEN * (gen["prompt_token"].shape[-1] + tokens.numel())
    noise = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = flow_mels(flow, [FlowRow(tokens, gen, noise)], n_timesteps=FLOW_STEPS)[0]
        upstream, _ = flow.inference(token=tokens[None], token_len=torch.tensor([tokens.numel()]), finalize=True,
                                     n_timesteps=FLOW_STEPS, noised_mels=noise, **gen)
    assert ours.shape == upstream.shape == (1, 80, MELS_PER_TOKEN * tokens.numel())
    torch.testing.assert_close(ours, upstream, rtol=0, atol=1e-5)


@pytest.mark.chatterbox
def test_windows_due_together_share_one_flow_call(runs):
    _, _, calls = runs
    shared = [lengths for lengths in calls if len(lengths) == 3]
    assert shared and all(len(set(lengths)) > 1 for lengths in shared)   # padded rows of other lengths


@pytest.mark.chatterbox
def test_a_sequence_sounds_the_same_in_a_batch_as_alone(runs):
    alone, together, _ = runs
    for mine, reference in zip(together, alone, strict=True):
        assert [p.size for p in mine] == [p.size for p in reference]
        joined, expected = np.concatenate(mine), np.concatenate(reference)
        assert np.abs(joined - expected).max() <= TOLERANCE
        assert np.abs(expected).max() > 100 * TOLERANCE                  # not a comparison of silences


@pytest.mark.chatterbox
def test_seams_of_batched_windows_stay_clean(runs):
    _, together, _ = runs
    for pieces in together:
        assert len(pieces) >= 2
        audio = np.concatenate(pieces)
        jumps = np.abs(np.diff(audio))
        seams = np.cumsum([piece.size for piece in pieces])[:-1]
        inside = np.delete(jumps, np.concatenate([np.arange(s - 3, s + 2) for s in seams]))
        assert max(jumps[s - 1] for s in seams) <= np.percentile(inside, 99.9)


# -- a failing row fails alone (no model: a stand-in S3Gen) --------------------------------------
class _Hift:
    def inference(self, speech_feat, cache_source):
        samples = speech_feat.size(2) * s3gen_stream.SAMPLES_PER_MEL
        return torch.full((1, samples), 0.1), torch.zeros(1, 1, samples)


class _S3Gen:
    flow = None
    mel2wav = _Hift()
    dtype = torch.float32
    trim_fade = torch.ones(4)


def test_a_row_that_breaks_the_batched_flow_fails_alone(monkeypatch):
    calls = []

    def flow(_, rows, *args, **kwargs):
        calls.append(len(rows))
        if any(row.gen.get("broken") for row in rows):
            raise RuntimeError("bad row")
        return [torch.zeros(1, 80, MELS_PER_TOKEN * row.tokens.numel()) for row in rows]

    monkeypatch.setattr(s3gen_stream, "flow_mels", flow)
    streamer = S3GenStreamer(_S3Gen(), "cpu", lambda audio: audio, batch_flow=True)
    states = [streamer.open({"prompt_token": torch.zeros(1, 4, dtype=torch.long), "broken": broken}, seed, None,
                            max_tokens=10, first_window=3, watermark=False)
              for seed, broken in enumerate([False, True, False])]
    results = streamer.windows([(state, list(range(8)), True) for state in states])
    assert calls == [3, 1, 1, 1]                                          # the batch, then one call each
    assert isinstance(results[1], RuntimeError)
    for result in (results[0], results[2]):
        assert isinstance(result, np.ndarray) and result.size == 8 * MELS_PER_TOKEN * s3gen_stream.SAMPLES_PER_MEL
