"""The Flask app factory."""
from __future__ import annotations

import atexit
import errno
import logging
import os
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from chatterbox_server import web
from chatterbox_server.api import bodies, metrics
from chatterbox_server.api import health as api_ops
from chatterbox_server.api.docs import pages as api_docs
from chatterbox_server.api.extended import common as api_extended
from chatterbox_server.api.extended import concat
from chatterbox_server.api.extended import files as extended_files
from chatterbox_server.api.extended import ops as housekeeping
from chatterbox_server.api.extended import tts as extended_tts
from chatterbox_server.api.extended import vc as extended_vc
from chatterbox_server.api.extended import voices as extended_voices
from chatterbox_server.api.openai import management
from chatterbox_server.api.openai import speech as api_openai
from chatterbox_server.api.openai import voices as voice_library
from chatterbox_server.errors import ApiError, default_code
from chatterbox_server.runtime import draining
from chatterbox_server.runtime import housekeeping as housekeeping_timer
from chatterbox_server.runtime.pool_client import PoolError
from chatterbox_server.runtime.telemetry import SPEECH_REQUESTS
from chatterbox_server.security import guards
from chatterbox_server.security.redact import public_pool_message
from chatterbox_server.services import Services
from chatterbox_server.settings import Settings
from chatterbox_server.synthesis.budget import json_too_large
from workers.pool import RUN_DIR_ENV, ModelPool

log = logging.getLogger("chatterbox.app")
UPLOAD_OVERHEAD_BYTES = 1024 * 1024     # form fields and multipart framing around an upload
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_RETRY_SECONDS = 60


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides settings (lower-case names, as in Settings).

    Under gunicorn the master has started the model pool and exported its directory; anywhere else
    (flask run, tests) the app starts a pool of its own and stops it at exit.
    """
    settings = Settings.from_env(**(config or {}))
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES
    app.json.sort_keys = False
    run_dir = os.environ.get(RUN_DIR_ENV) or _start_own_pool(settings)
    app.extensions["chatterbox"] = Services.create(settings, run_dir)
    app.register_blueprint(api_openai.bp, url_prefix="/v1")
    app.register_blueprint(api_openai.bp, url_prefix="", name="openai_root")
    app.register_blueprint(voice_library.bp, url_prefix="/v1")
    app.register_blueprint(voice_library.bp, url_prefix="", name="voice_library_root")
    app.register_blueprint(api_ops.bp)
    app.register_blueprint(extended_tts.bp, url_prefix="/api/v1")
    app.register_blueprint(housekeeping.bp, url_prefix="/api/v1")
    app.register_blueprint(concat.bp, url_prefix="/api/v1")
    app.register_blueprint(api_extended.outputs_bp)
    app.register_blueprint(extended_voices.bp, url_prefix="/api/v1")
    app.register_blueprint(extended_files.bp, url_prefix="/api/v1")
    app.register_blueprint(extended_vc.bp, url_prefix="/api/v1")
    app.register_blueprint(api_docs.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(web.bp)
    management.install(app, app.extensions["chatterbox"])
    _register_error_handlers(app)
    app.after_request(_count_speech_request)
    draining.init_app(app, run_dir)
    guards.init_app(app, settings, run_dir)
    bodies.init_app(app)                # after the guards: a caller without a key gets 401 first
    housekeeping_timer.start(settings)
    if settings.cors_origins:
        origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
        CORS(app, origins=origins, expose_headers=EXPOSED_HEADERS)
    if settings.trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trust_proxy, x_proto=settings.trust_proxy,
                                x_host=settings.trust_proxy,
                                x_prefix=settings.trust_proxy if settings.trust_proxy_prefix else 0)
    return app


EXPOSED_HEADERS = ["Content-Disposition", "X-Alternative-Formats", "X-Request-Id", "X-Chatterbox-Seed",
                   "X-Generation-Seed", "X-Chatterbox-Chunks", "X-Chatterbox-Ignored-Fields",
                   "X-Chatterbox-Whisper", "X-Chatterbox-Watermark", "X-Chatterbox-Speed-Library",
                   "X-Chatterbox-Return-Format", "X-Output-Files", "X-Chatterbox-Degraded",
                   "X-Chatterbox-Language-Extras"]


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


def _extended_family() -> bool:
    return request.path.startswith("/api/")


def error_response(error: ApiError) -> Response:
    housekeeping.record_error(error.status, error.code or default_code(error.status), error.message)
    body = error.extended_body() if _extended_family() else error.openai_body()
    response = jsonify(body)
    response.status_code = error.status
    if error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(PoolError)
    def pool_error(error: PoolError) -> Response:
        retry = error.retry_after or (5 if error.status == 503 else None)
        if error.status >= 500:
            log.warning("%s %s failed: %s", request.method, request.path, error)
        message = public_pool_message(str(error), error.status, error.code)
        kind = "requests" if error.status == 429 else None      # OpenAI's rate-limit error type
        return error_response(ApiError(error.status, message, code=error.code, retry_after=retry, error_type=kind))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        message = error.description or error.name
        if error.code == 413 and request.is_json:
            return error_response(json_too_large(request.content_length, app.config["SETTINGS"].max_json_bytes))
        if error.code == 413:
            limit = app.config["SETTINGS"].max_upload_bytes
            message = f"the request body is larger than the upload limit of {limit} bytes"
        return error_response(ApiError(error.code or 500, message))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            # the writers remove their temporary files; the client may try again once there is room
            log.error("%s %s: the disk is full (%s)", request.method, request.path, error)
            return error_response(ApiError(507, "the server's disk is full; try again later",
                                           code="insufficient_storage", retry_after=DISK_FULL_RETRY_SECONDS))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, f"internal error: {type(error).__name__}"))
