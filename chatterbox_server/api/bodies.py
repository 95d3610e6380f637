"""Reading request bodies for both API families: a JSON object, or multipart form fields, validated
by a marshmallow schema. Every problem is an ApiError 400 that says what is wrong.

JSON bodies are bounded: every request that says it sends JSON may send at most
CHATTERBOX_MAX_JSON_BYTES (a 413 naming the limit, before the body is read; a chunked body is cut
at the limit), and a body over OFF_HUB_JSON_BYTES is parsed in the hub's threadpool, so a big
body does not stall the other requests of its front worker. The parsed object is cached on the
request: later `request.get_json()` calls (the history record) do not parse it again.
"""
from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

from flask import Flask, Response, current_app, has_request_context, request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.synthesis.budget import json_too_large
from chatterbox_server.synthesis.requests import first_error

OFF_HUB_JSON_BYTES = 64 * 1024
NOT_PARSED = object()

DISCARD_FROM_BYTES = 64 * 1024
DISCARD_PIECE_BYTES = 1024 * 1024
DISCARD_MAX_BYTES = 64 * 1024 * 1024
DISCARD_SECONDS = 10.0


def init_app(app: Flask) -> None:
    """Every JSON request, on any route, is held to CHATTERBOX_MAX_JSON_BYTES; a refused body is
    discarded here, not by gunicorn (see discard_unread_body)."""
    app.after_request(discard_unread_body)

    @app.before_request
    def limit_json() -> None:
        if request.is_json:
            limit = app.config["SETTINGS"].max_json_bytes
            if request.content_length is not None and request.content_length > limit:
                raise json_too_large(request.content_length, limit)
            request.max_content_length = min(limit, request.max_content_length or limit)


def discard_unread_body(response: Response) -> Response:
    """Read and drop what is left of a refused request's body before answering.

    On a keep-alive connection gunicorn discards an unread body itself, 1 KiB at a time from a
    buffer it copies whole at each step: 3 MB took seconds of hub CPU, and three clients posting
    oversized JSON held /health off both front workers (every probe timed out at 5 s). Read here in
    1 MiB pieces (each a gevent-friendly recv), at most DISCARD_MAX_BYTES and DISCARD_SECONDS;
    past that the read side is shut, so the connection ends instead of being drained."""
    length = request.content_length or 0
    if response.status_code < 400 or length <= DISCARD_FROM_BYTES:
        return response
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return response
    deadline = time.monotonic() + DISCARD_SECONDS
    discarded = 0
    try:
        while discarded < DISCARD_MAX_BYTES and time.monotonic() < deadline:
            piece = stream.read(DISCARD_PIECE_BYTES)
            if not piece:
                return response
            discarded += len(piece)
    except (OSError, ValueError):
        return response
    client = request.environ.get("gunicorn.socket")
    if client is not None:
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RD)
    return response


def json_limit() -> int:
    return current_app.config["SETTINGS"].max_json_bytes


def json_body_bytes() -> bytes:
    """The raw body of a JSON request, within the JSON limit."""
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise json_too_large(request.content_length, json_limit()) from None


def parsed_json(raw: bytes) -> Any:
    """`raw` parsed (off the hub when it is big) and cached on the request; NOT_PARSED when it is not
    JSON. Too deep a nesting is a 400 (a RecursionError is no ValueError)."""
    cached = request._cached_json[False]      # werkzeug's cache of get_json()
    if cached is not Ellipsis:
        return cached
    try:
        data = loads(raw)
    except (RecursionError, ValueError) as exc:
        request._cached_json = (Ellipsis, None)     # get_json(silent=True) now answers None without parsing
        if isinstance(exc, RecursionError):
            raise ApiError(400, "the JSON body is nested too deeply", code="malformed_json") from None
        return NOT_PARSED
    request._cached_json = (data, data)
    return data


def loads(raw: str | bytes) -> Any:
    """json.loads, in the hub's threadpool when `raw` is big (its errors come back here, unlogged)."""
    if len(raw) <= OFF_HUB_JSON_BYTES:
        return json.loads(raw)
    data, error = off_hub(_loads_catching, raw)
    if error is not None:
        raise error
    return data


def _loads_catching(raw: str | bytes) -> tuple[Any, BaseException | None]:
    try:
        return json.loads(raw), None
    except (RecursionError, ValueError) as exc:
        return None, exc


def json_or_none() -> Any:
    """The JSON body when the request sends one, else None (never an exception for a bad body)."""
    if not request.is_json:
        return None
    try:
        data = parsed_json(json_body_bytes())
    except ApiError:
        return None
    return None if data is NOT_PARSED else data


def json_object(hint: str = "") -> dict[str, Any]:
    """The JSON object of the request body."""
    if request.is_json:
        raw = json_body_bytes()
    elif not request.get_data(cache=True):
        raw = b""
    else:
        raise ApiError(400, f"Content-Type must be application/json (got {request.mimetype or 'none'}){hint}",
                       code="unsupported_content_type")
    if not raw:
        raise ApiError(400, "the request body is empty; send a JSON object", code="empty_body")
    data = parsed_json(raw)
    if data is NOT_PARSED:
        raise ApiError(400, "the request body is not valid JSON", code="malformed_json")
    if not isinstance(data, dict):
        raise ApiError(400, "the JSON body must be an object", code="malformed_json")
    return data


def loads_field(raw: str, param: str) -> Any:
    """A JSON document sent in a form field (`request_json`, `default_parameters`): bounded like a
    JSON body, parsed off the hub when big; every problem a 400 or 413 naming the field."""
    limit = json_limit()
    if len(raw) > limit:
        raise ApiError(413, f"{param}: {len(raw)} characters of JSON, over the limit of {limit} "
                            "(CHATTERBOX_MAX_JSON_BYTES)", param=param, code="over_budget")
    try:
        return loads(raw)
    except RecursionError:
        raise ApiError(400, f"{param}: the JSON is nested too deeply", param=param, code="malformed_json") from None
    except ValueError:
        raise ApiError(400, f"{param}: not valid JSON", param=param, code="malformed_json") from None


def form_fields(file_fields: tuple[str, ...], accept_urlencoded: bool = False) -> dict[str, Any]:
    """Form fields (a repeated field becomes a list); files other than `file_fields` are refused."""
    allowed = ("multipart/form-data", "application/x-www-form-urlencoded") if accept_urlencoded else (
        "multipart/form-data",)
    if request.mimetype not in allowed:
        raise ApiError(400, f"Content-Type must be multipart/form-data (got {request.mimetype or 'none'})",
                       code="unsupported_content_type")
    if None in request.form or "" in request.form or None in request.files or "" in request.files:
        raise ApiError(400, "a part of the multipart body has no field name", code="invalid_value")
    unexpected = sorted(set(request.files) - set(file_fields))
    if unexpected:
        raise ApiError(400, f"{unexpected[0]}: unknown file field; the file fields are {', '.join(file_fields)}",
                       param=unexpected[0], code="invalid_value")
    return {key: values if len(values) > 1 else values[0] for key, values in request.form.lists()}


def uploaded(field: str) -> bytes | None:
    """The bytes of an uploaded file field, None when it was not sent (or sent empty without a name)."""
    upload = request.files.get(field)
    if upload is None or not upload.filename:
        return None
    return upload.read() or None


def load(schema: Schema, data: dict[str, Any]) -> Any:
    try:
        return schema.load(data)
    except ValidationError as exc:
        field, message = first_error(exc)
        raise ApiError(400, message, param=field, code="invalid_value") from None


def request_fields() -> dict[str, Any]:
    """The current request's body fields, JSON or form; {} outside a request or for another body."""
    if not has_request_context():
        return {}
    data = json_or_none() if request.is_json else request.form.to_dict()
    return data if isinstance(data, dict) else {}
