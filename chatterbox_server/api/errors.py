"""Every error answer of either family: its envelope (OpenAI-style under /v1 and the root, the
Extended one under /api/), Retry-After, a line in the error log, and the handlers that turn pool,
HTTP, database, disk and unexpected errors into one."""
from __future__ import annotations

import errno
import logging

from flask import Flask, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from chatterbox_server.errors import ApiError, default_code
from chatterbox_server.runtime.pool_client import PoolError
from chatterbox_server.security import guards
from chatterbox_server.security.redact import public_pool_message
from chatterbox_server.services import services
from chatterbox_server.synthesis.budget import json_too_large

log = logging.getLogger("chatterbox.app")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_RETRY_SECONDS = 60
DATABASE_RETRY_SECONDS = 5


def _extended_family() -> bool:
    return request.path.startswith("/api/")


def record_error(status: int, code: str, message: str) -> None:
    try:
        operation = f"{request.method} {request.url_rule.rule if request.url_rule else request.path}"
        services().errors.record(status, code, operation, message, owner=guards.workspace())
    except (OSError, RuntimeError, KeyError):
        pass                    # the log must never turn an error answer into a 500


def error_response(error: ApiError) -> Response:
    record_error(error.status, error.code or default_code(error.status), error.message)
    body = error.extended_body() if _extended_family() else error.openai_body()
    response = jsonify(body)
    response.status_code = error.status
    if error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def pool_error(error: PoolError) -> Response:
    retry = error.retry_after or (5 if error.status == 503 else None)
    if error.status >= 500:
        log.warning("%s %s failed: %s", request.method, request.path, error)
    message = public_pool_message(str(error), error.status, error.code)
    kind = "requests" if error.status == 429 else None      # OpenAI's rate-limit error type
    return error_response(ApiError(error.status, message, code=error.code, retry_after=retry, error_type=kind))


def http_error(error: HTTPException) -> Response:
    message = error.description or error.name
    settings = current_app.config["SETTINGS"]
    if error.code == 413 and request.is_json:
        return error_response(json_too_large(request.content_length, settings.max_json_bytes))
    if error.code == 413:
        message = f"the request body is larger than the upload limit of {settings.max_upload_bytes} bytes"
    return error_response(ApiError(error.code or 500, message))


def database_unavailable(error: SQLAlchemyError) -> Response:
    log.error("database error: %s", error)
    return error_response(ApiError(503, "the job and history database is unavailable; try again shortly",
                                   code="database_unavailable", retry_after=DATABASE_RETRY_SECONDS))


def unexpected(error: Exception) -> Response:
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        # the writers remove their temporary files; the client may try again once there is room
        log.error("%s %s: the disk is full (%s)", request.method, request.path, error)
        return error_response(ApiError(507, "the server's disk is full; try again later",
                                       code="insufficient_storage", retry_after=DISK_FULL_RETRY_SECONDS))
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(ApiError(500, f"internal error: {type(error).__name__}"))


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(PoolError, pool_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(SQLAlchemyError, database_unavailable)
    app.register_error_handler(Exception, unexpected)
