"""The seed-000 management surface (long-text jobs, history, info, memory, aliases) and the shared
state it needs, installed into the app by `install`."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from flask import Flask, Response, current_app
from sqlalchemy.exc import SQLAlchemyError

from chatterbox_server.security import guards
from chatterbox_server.services import Services
from chatterbox_server.settings import Settings
from chatterbox_server.store import db
from chatterbox_server.store.history_db import HistoryStore
from chatterbox_server.store.jobs_db import JobStore
from chatterbox_server.synthesis.longjobs.runner import Runner

log = logging.getLogger("chatterbox.api")


@dataclass
class Management:
    settings: Settings
    jobs: JobStore
    history: HistoryStore
    runner: Runner
    jobs_root: str
    database: db.Database | None = None


def install(app: Flask, svc: Services) -> None:
    from chatterbox_server.api.openai import aliases, info, long_text, memory
    from chatterbox_server.api.openai import status as status_history
    from chatterbox_server.api.recording import RecordingProgress

    settings = svc.settings
    # nothing here touches the database: it may be down while the server starts (speech needs none);
    # the schema is brought up to date by the first operation that reaches it
    engine = db.make_engine(db.database_url(settings.database_url, settings.data_dir),
                            settings.database_connect_timeout)
    database = db.Database(engine, settings.data_dir, timeout=settings.database_timeout)
    jobs_root = os.path.join(settings.data_dir, "longtext")
    os.makedirs(jobs_root, exist_ok=True)
    jobs = JobStore(engine, settings.longtext_lease_seconds, database)
    history = HistoryStore(engine, settings.history_max_records, database)
    svc.progress = RecordingProgress(svc.progress.directory, history, background=_under_gevent())
    runner = Runner(jobs, svc.pool, svc.voices, jobs_root, settings.longtext_max_running,
                    settings.longtext_retention_seconds,
                    lambda owner: guards.owner_check_for(app.extensions.get(guards.KEYS), owner))
    app.extensions["chatterbox_management"] = Management(settings, jobs, history, runner, jobs_root, database)
    for module in (long_text, status_history, info, memory):
        app.register_blueprint(module.bp, url_prefix="/v1", name=f"{module.bp.name}_v1")
        app.register_blueprint(module.bp, url_prefix="", name=f"{module.bp.name}_root")
    app.wsgi_app = aliases.AliasMiddleware(app.wsgi_app)
    app.register_error_handler(SQLAlchemyError, _database_unavailable)
    if _under_gevent():
        runner.start()
    else:
        log.info("not under a gevent worker: long-text jobs are stored but run only under gunicorn")


def management() -> Management:
    return current_app.extensions["chatterbox_management"]


def _database_unavailable(error: SQLAlchemyError) -> Response:
    from chatterbox_server.app import error_response
    from chatterbox_server.errors import ApiError
    log.error("database error: %s", error)
    return error_response(ApiError(503, "the job and history database is unavailable; try again shortly",
                                   code="database_unavailable", retry_after=5))


def _under_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("socket")
