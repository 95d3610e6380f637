"""The Flask app factory: the one place that assembles a front worker (its services, every
blueprint of both families, the middleware, the error handlers and the long-job runner)."""
from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from flask import Blueprint, Flask, Response, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from chatterbox_server import web
from chatterbox_server.api import bodies, errors, health, metrics
from chatterbox_server.api.docs import pages as docs_pages
from chatterbox_server.api.elevenlabs import dialogue as elevenlabs_dialogue
from chatterbox_server.api.extended import common as extended_common
from chatterbox_server.api.extended import concat, ops
from chatterbox_server.api.extended import files as extended_files
from chatterbox_server.api.extended import tts as extended_tts
from chatterbox_server.api.extended import vc as extended_vc
from chatterbox_server.api.extended import voices as extended_voices
from chatterbox_server.api.openai import aliases, captioned, info, long_text, memory, status
from chatterbox_server.api.openai import dialogue as openai_dialogue
from chatterbox_server.api.openai import models as openai_models
from chatterbox_server.api.openai import speech as openai_speech
from chatterbox_server.api.openai import voices as openai_voices
from chatterbox_server.api.realtime.routes import realtime_bp, server_options, vendor_bp
from chatterbox_server.runtime import draining, housekeeping
from chatterbox_server.runtime.telemetry import SPEECH_REQUESTS
from chatterbox_server.security import guards
from chatterbox_server.services import EXTENSION, Services
from chatterbox_server.settings import Settings
from workers.pool import RUN_DIR_ENV, ModelPool

log = logging.getLogger("chatterbox.app")
UPLOAD_OVERHEAD_BYTES = 1024 * 1024     # form fields and multipart framing around an upload
EXTENDED_BLUEPRINTS = (extended_tts.bp, ops.bp, concat.bp, extended_voices.bp, extended_files.bp, extended_vc.bp)
# The OpenAI-style family answers under /v1 and at the root (clients configured with either base URL).
OPENAI_BLUEPRINTS = (openai_speech.bp, openai_voices.bp, long_text.bp, status.bp, info.bp, memory.bp,
                     captioned.bp, openai_dialogue.bp, openai_models.bp, realtime_bp)
EXPOSED_HEADERS = ["Content-Disposition", "X-Alternative-Formats", "X-Request-Id", "X-Chatterbox-Seed",
                   "X-Generation-Seed", "X-Chatterbox-Chunks", "X-Chatterbox-Ignored-Fields",
                   "X-Chatterbox-Whisper", "X-Chatterbox-Watermark", "X-Chatterbox-Speed-Library",
                   "X-Chatterbox-Return-Format", "X-Output-Files", "X-Chatterbox-Degraded",
                   "X-Chatterbox-Language-Extras", "X-Chatterbox-Segments", "X-Chatterbox-Turns",
                   "X-Chatterbox-Dropped-Tags", "X-Chatterbox-Sample-Rate"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides settings (lower-case names, as in Settings).

    Under gunicorn the master has started the model pool and exported its directory; anywhere else
    (flask run, tests) the app starts a pool of its own and stops it at exit.
    """
    settings = Settings.from_env(**(config or {}))
    under_gevent = _under_gevent()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES
    app.config["SOCK_SERVER_OPTIONS"] = server_options(settings)
    app.json.sort_keys = False
    run_dir = os.environ.get(RUN_DIR_ENV) or _start_own_pool(settings)
    svc = Services.create(settings, run_dir, bodies.request_fields,
                          lambda owner: guards.owner_check_for(app.extensions.get(guards.KEYS), owner),
                          background=under_gevent)
    app.extensions[EXTENSION] = svc
    _register_blueprints(app)
    errors.init_app(app)
    app.after_request(_count_speech_request)
    draining.init_app(app, run_dir)
    guards.init_app(app, settings, run_dir)
    bodies.init_app(app)                # after the guards: a caller without a key gets 401 first
    housekeeping.start(settings)
    app.wsgi_app = aliases.AliasMiddleware(app.wsgi_app)
    if settings.cors_origins:
        origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
        CORS(app, origins=origins, expose_headers=EXPOSED_HEADERS)
    if settings.trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trust_proxy, x_proto=settings.trust_proxy,
                                x_host=settings.trust_proxy,
                                x_prefix=settings.trust_proxy if settings.trust_proxy_prefix else 0)
    if under_gevent:
        svc.runner.start()
    else:
        log.info("not under a gevent worker: long-text jobs are stored but run only under gunicorn")
    return app


def _register_blueprints(app: Flask) -> None:
    for blueprint in OPENAI_BLUEPRINTS:
        _register_twice(app, blueprint)
    for blueprint in EXTENDED_BLUEPRINTS:
        app.register_blueprint(blueprint, url_prefix="/api/v1")
    for blueprint in (health.bp, extended_common.outputs_bp, docs_pages.bp, metrics.bp, web.bp, vendor_bp,
                      elevenlabs_dialogue.bp):
        app.register_blueprint(blueprint)


def _register_twice(app: Flask, blueprint: Blueprint) -> None:
    app.register_blueprint(blueprint, url_prefix="/v1")
    app.register_blueprint(blueprint, url_prefix="", name=f"{blueprint.name}_root")


def _count_speech_request(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule else ""
    if request.method == "POST" and ("/audio/speech" in rule or rule in ("/api/v1/tts", "/api/v1/vc")):
        SPEECH_REQUESTS.labels(rule.removeprefix("/v1"), str(response.status_code)).inc()
    return response


def _start_own_pool(settings: Settings) -> str:
    pool = ModelPool(settings)
    pool.start()
    atexit.register(pool.stop)
    return pool.run_dir


def _under_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("socket")
