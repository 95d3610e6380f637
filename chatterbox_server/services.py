"""What the views share in one front worker: settings, the pool client, voices, progress."""
from __future__ import annotations

import os
from dataclasses import dataclass

from flask import current_app

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.pool_client import PoolClient
from chatterbox_server.runtime.progress import Progress
from chatterbox_server.settings import Settings
from chatterbox_server.synthesis.voices import VoiceLibrary
from workers.engines.base import EngineInfo


@dataclass
class Services:
    settings: Settings
    pool: PoolClient
    voices: VoiceLibrary
    progress: Progress
    upload_dir: str

    @classmethod
    def create(cls, settings: Settings, run_dir: str) -> Services:
        pool = PoolClient(run_dir, settings.max_queued_jobs, settings.queue_timeout, settings.chunk_timeout,
                          max_queued_seconds=settings.max_queued_seconds)
        voices = VoiceLibrary(os.path.join(settings.data_dir, "voices"), settings.max_upload_bytes,
                              settings.voice_alias_map, settings.default_voice)
        return cls(settings, pool, voices, Progress(os.path.join(run_dir, "progress")),
                   os.path.join(settings.data_dir, "tmp"))

    def engine_info(self) -> EngineInfo | None:
        return self.pool.engine_info()

    def require_engine(self) -> EngineInfo:
        info = self.engine_info()
        if info is None:
            raise ApiError(503, "the model is still loading or no model worker is running; see /health",
                           code="model_unavailable", retry_after=5)
        return info


def services() -> Services:
    return current_app.extensions["chatterbox"]
