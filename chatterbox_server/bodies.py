"""Reading request bodies for both API families: a JSON object, or multipart form fields, validated
by a marshmallow schema. Every problem is an ApiError 400 that says what is wrong."""
from __future__ import annotations

from typing import Any

from flask import request
from marshmallow import Schema, ValidationError

from chatterbox_server.errors import ApiError
from chatterbox_server.schemas import first_error


def json_object(hint: str = "") -> dict[str, Any]:
    """The JSON object of the request body."""
    if not request.get_data(cache=True):
        raise ApiError(400, "the request body is empty; send a JSON object", code="empty_body")
    if not request.is_json:
        raise ApiError(400, f"Content-Type must be application/json (got {request.mimetype or 'none'}){hint}",
                       code="unsupported_content_type")
    try:
        data = request.get_json(silent=True)
    except RecursionError:      # not a ValueError, so `silent` lets it through
        raise ApiError(400, "the JSON body is nested too deeply", code="malformed_json") from None
    if data is None:
        raise ApiError(400, "the request body is not valid JSON", code="malformed_json")
    if not isinstance(data, dict):
        raise ApiError(400, "the JSON body must be an object", code="malformed_json")
    return data


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
