"""The Flask app factory."""
from __future__ import annotations

import atexit
import hmac
import logging
import os
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from chatterbox_server import api, api_docs, api_extended, api_openai, api_ops, metrics
from chatterbox_server.errors import ApiError
from chatterbox_server.pool_client import PoolError
from chatterbox_server.services import Services
from chatterbox_server.settings import Settings
from chatterbox_server.telemetry import SPEECH_REQUESTS
from workers.pool import RUN_DIR_ENV, ModelPool

log = logging.getLogger("chatterbox.app")
UPLOAD_OVERHEAD_BYTES = 1024 * 1024     # form fields and multipart framing around an upload


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
    app.register_blueprint(api_ops.bp)
    app.register_blueprint(api_extended.bp, url_prefix="/api/v1")
    app.register_blueprint(api_extended.outputs_bp)
    app.register_blueprint(api_docs.bp)
    app.register_blueprint(metrics.bp)
    api.install(app, app.extensions["chatterbox"])
    _register_error_handlers(app)
    app.after_request(_count_speech_request)
    if settings.api_key:
        app.before_request(_require_api_key)
    if settings.cors_origins:
        origins = [origin.strip() for origin in settings.cors_origins.split(",") if origin.strip()]
        CORS(app, origins=origins, expose_headers=EXPOSED_HEADERS)
    if settings.trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trust_proxy, x_proto=settings.trust_proxy,
                                x_host=settings.trust_proxy, x_prefix=settings.trust_proxy)
    return app


OPEN_PATHS = ("/health", "/api/v1/health")     # load balancers probe these without a key
EXPOSED_HEADERS = ["Content-Disposition", "X-Alternative-Formats", "X-Request-Id", "X-Chatterbox-Seed",
                   "X-Generation-Seed", "X-Chatterbox-Chunks", "X-Chatterbox-Ignored-Fields"]


def _require_api_key() -> None:
    if request.method == "OPTIONS" or request.path in OPEN_PATHS:
        return
    expected = current_app.config["SETTINGS"].api_key
    bearer = request.headers.get("Authorization", "")
    sent = bearer[7:].strip() if bearer[:7].lower() == "bearer " else request.headers.get("X-API-Key", "")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key")


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
        retry = 5 if error.status == 503 else None
        return error_response(ApiError(error.status, str(error), code=error.code, retry_after=retry))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        message = error.description or error.name
        if error.code == 413:
            limit = app.config["SETTINGS"].max_upload_bytes
            message = f"the request body is larger than the upload limit of {limit} bytes"
        return error_response(ApiError(error.code or 500, message))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, f"internal error: {type(error).__name__}"))
