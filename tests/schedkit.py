"""A model worker without process, sockets or engine weights, for tests of its scheduling rules."""
from __future__ import annotations

from chatterbox_server.settings import Settings
from workers.engines.base import Engine, EngineInfo, Synthesized
from workers.model_worker import ModelWorker


class BatchedEngine(Engine):
    """An engine that takes up to 64 streams a step and is never asked to synthesize."""
    step_capacity = 64

    def load(self) -> EngineInfo:  # pragma: no cover - never loaded here
        raise NotImplementedError

    def synthesize(self, text, settings, voice, seed) -> Synthesized:  # pragma: no cover
        raise NotImplementedError


def bare_worker(max_batch: int, engine: Engine | None = None) -> ModelWorker:
    worker = ModelWorker.__new__(ModelWorker)
    worker.settings = Settings(max_batch=max_batch)
    worker.engine = engine or BatchedEngine()
    worker.jobs, worker.batch = {}, []
    worker.info = EngineInfo("batched", "batched", "cpu", 24000, ("batched",))    # loaded
    return worker
