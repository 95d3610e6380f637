"""What the views of one front worker share, built once by the app factory: settings, the pool
client, voices, the request progress and history, the output and VC-input stores, the long-job
store and its runner, the error log every front worker writes.

Nothing here touches the database: it may be down while the server starts (speech needs none);
its schema is brought up to date by the first operation that reaches it."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.pool_client import PoolClient
from chatterbox_server.runtime.recording import RecordingProgress
from chatterbox_server.settings import Settings
from chatterbox_server.store import db
from chatterbox_server.store.errorlog import ErrorLog
from chatterbox_server.store.history_db import HistoryStore
from chatterbox_server.store.jobs_db import JobStore
from chatterbox_server.store.outputs import OutputStore
from chatterbox_server.store.vc_inputs import VcInputStore
from chatterbox_server.store.voice_library import VoiceLibrary
from chatterbox_server.synthesis import routing
from chatterbox_server.synthesis.longjobs.runner import Runner
from chatterbox_server.synthesis.requests import OPENAI_MODELS
from workers.engines.base import EngineInfo

EXTENSION = "chatterbox"
OwnerCheck = Callable[[str | None], bool]


@dataclass
class Services:
    settings: Settings
    pool: PoolClient
    voices: VoiceLibrary
    progress: RecordingProgress
    upload_dir: str
    outputs: OutputStore
    vc_inputs: VcInputStore
    database: db.Database
    jobs: JobStore
    history: HistoryStore
    jobs_root: str
    runner: Runner
    errors: ErrorLog

    @classmethod
    def create(cls, settings: Settings, run_dir: str, request_fields: Callable[[], dict[str, Any]],
               owner_check_for: Callable[[str | None], OwnerCheck], background: bool) -> Services:
        """`request_fields` reads the current request's body for its history entry; `owner_check_for`
        gives what a key may act on (the runner acts as a job's owner); `background`: under gevent,
        history writes are queued for a writer greenlet."""
        data = settings.data_dir
        pool = PoolClient(run_dir, settings.max_queued_jobs, settings.queue_timeout, settings.chunk_timeout,
                          max_queued_seconds=settings.max_queued_seconds,
                          slot_models=tuple(model for model, _ in settings.slot_models))
        voices = VoiceLibrary(os.path.join(data, "voices"), settings.max_upload_bytes, settings.voice_alias_map,
                              settings.default_voice)
        engine = db.make_engine(db.database_url(settings.database_url, data), settings.database_connect_timeout)
        database = db.Database(engine, data, timeout=settings.database_timeout)
        jobs = JobStore(engine, settings.longtext_lease_seconds, database)
        history = HistoryStore(engine, settings.history_max_records, database)
        jobs_root = os.path.join(data, "longtext")
        os.makedirs(jobs_root, exist_ok=True)
        runner = Runner(jobs, pool, voices, jobs_root, settings.longtext_max_running,
                        settings.longtext_retention_seconds, owner_check_for)
        return cls(settings, pool, voices,
                   RecordingProgress(os.path.join(run_dir, "progress"), history, request_fields, background),
                   os.path.join(data, "tmp"),
                   OutputStore(os.path.join(data, "outputs"), settings.output_retention_seconds,
                               settings.output_max_bytes),
                   VcInputStore(os.path.join(data, "vc_inputs"), os.path.join(data, "state")),
                   database, jobs, history, jobs_root, runner, ErrorLog(os.path.join(run_dir, "errors.jsonl")))

    def engine_info(self, model: str | None = None) -> EngineInfo | None:
        """A served model's engine (the default one without `model`, a name from `route`)."""
        return self.pool.engine_info(model)

    def served(self) -> list[routing.Served]:
        return [routing.Served(name, self.pool.engine_info(name)) for name in self.pool.models]

    def route(self, requested: str | None, language: str | None = None, *, vendor_ids: bool = False,
              param: str = "model") -> str:
        """The served model a request's `model` (and `language`) picks; 400 naming those served."""
        openai_map = {name: "" for name in OPENAI_MODELS} | self.settings.openai_model_pairs
        try:
            return routing.route(requested, language, self.served(), openai_map, vendor_ids=vendor_ids)
        except routing.UnknownModel as exc:
            raise ApiError(400, str(exc), param=param, code="model_not_found") from exc

    def require_engine(self, requested: str | None = None, language: str | None = None, *,
                       vendor_ids: bool = False, param: str = "model") -> EngineInfo:
        """The engine of the model the request goes to (`route`); 503 while it has no worker yet."""
        name = self.route(requested, language, vendor_ids=vendor_ids, param=param)
        info = self.engine_info(name)
        if info is None:
            raise ApiError(503, f"model {routing.model_id(name)} has no model worker running yet; see /health",
                           code="model_unavailable", retry_after=5)
        return info

    def require_converter(self) -> EngineInfo:
        """The engine voice conversion goes to: the default model's when it converts, else the first
        served model's that does (turbo has no conversion)."""
        for name in self.pool.models:
            info = self.engine_info(name)
            if info is not None and info.supports_voice_conversion:
                return info
        return self.require_engine()


def services() -> Services:
    return current_app.extensions[EXTENSION]
