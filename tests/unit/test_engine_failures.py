"""A model worker's engine-failure streak, step by step, on a batched fake engine (no process)."""
from __future__ import annotations

import os
from multiprocessing import Pipe

import numpy as np
import pytest

from chatterbox_server.settings import Settings
from workers.engines.base import Engine, EngineError, EngineInfo, SynthesisSettings, Synthesized, VoiceRef
from workers.ipc.board import Board, WorkerState
from workers.ipc.protocol import AudioChunk, JobFailed, SpeechJob
from workers.model_worker import ModelWorker


class Flaky(Engine):
    """Eight rows a step; a chunk saying "cuda" fails as a sticky CUDA error would, "bad" is a bad request."""
    step_capacity = 8

    def load(self) -> EngineInfo:  # pragma: no cover - never loaded here
        raise NotImplementedError

    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        if text == "cuda":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if text == "bad":
            raise EngineError("that voice cannot be used")
        return Synthesized(np.zeros(240, np.float32), input_tokens=1, output_tokens=1)


@pytest.fixture
def worker(tmp_path):
    Board(os.path.join(tmp_path, "board"), 1, create=True).close()
    worker = ModelWorker(0, Settings(max_batch=8, max_engine_failures=3), str(tmp_path), "cpu", lifeline=None)
    worker.engine = Flaky()
    worker.info = EngineInfo(engine="flaky", model="flaky", device="cpu", sample_rate=24000, model_names=("flaky",))
    worker.board.reset(0, os.getpid(), 0)
    worker.board.set_state(0, WorkerState.READY)
    yield worker
    worker.board.close()


def step(worker: ModelWorker, *texts: str) -> list[object]:
    """One engine step over one job per text; what each job's client received."""
    clients = []
    for number, text in enumerate(texts):
        ours, theirs = Pipe()
        job = SpeechJob(f"job-{number}", (text,), SynthesisSettings(), VoiceRef(), seed=1, buffer_size=4)
        worker.connected(theirs)
        worker._admit(theirs, job)
        clients.append(ours)
    worker._step(worker._select_batch())
    received = []
    for client in clients:
        messages = []
        try:
            while client.poll():
                messages.append(client.recv())
        except EOFError:        # the worker closed a finished or failed job's connection
            pass
        received.append(next((m for m in messages if isinstance(m, (AudioChunk, JobFailed))), None))
        client.close()
    return received


def test_a_failed_batch_counts_once_and_a_sticky_error_breaks_the_engine(worker):
    received = step(worker, *["cuda"] * 5)
    assert all(isinstance(m, JobFailed) and m.kind == "engine" for m in received)
    assert worker.engine_failures.count == 1 and worker.board.view(0).engine_failures == 1
    assert worker.broken is None
    step(worker, "cuda", "cuda")
    assert worker.broken is None
    step(worker, "cuda")
    assert worker.broken == ("3 engine failures in a row (the last: synthesis failed: RuntimeError: "
                             "CUDA error: an illegal memory access was encountered)")


def test_audio_ends_the_streak_and_bad_requests_do_not_count(worker):
    step(worker, "cuda")
    step(worker, "cuda")
    received = step(worker, "bad", "bad")
    assert all(isinstance(m, JobFailed) and m.kind == "request" and m.status == 400 for m in received)
    assert worker.engine_failures.count == 2
    received = step(worker, "cuda", "fine words")          # one row still makes audio: the engine works
    assert isinstance(received[0], JobFailed) and isinstance(received[1], AudioChunk)
    assert worker.engine_failures.count == 0 and worker.board.view(0).engine_failures == 0
    step(worker, "cuda")
    step(worker, "cuda")
    assert worker.broken is None
