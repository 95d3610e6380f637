"""OpenAPI document generated from the marshmallow schemas, with Swagger UI and ReDoc pages."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, jsonify

import chatterbox_server
from chatterbox_server.encoders import CONTENT_TYPES
from chatterbox_server.schemas import SpeechRequestSchema

bp = Blueprint("docs", __name__)

AUDIO = {"content": {mime: {"schema": {"type": "string", "format": "binary"}}
                     for mime in sorted(set(CONTENT_TYPES.values()))}}
ERROR = {"description": "Invalid request (the `param` field names the problem)",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
SPEECH_BODY = {"required": True, "content": {"application/json": {"schema": "SpeechRequest"}}}
UPLOAD_BODY = {"required": True, "content": {"multipart/form-data": {"schema": {
    "allOf": [{"$ref": "#/components/schemas/SpeechRequest"},
              {"type": "object", "properties": {"voice_file": {"type": "string", "format": "binary"}}}]}}}}


def _speech_operation(summary: str, body: dict, streaming: bool) -> dict[str, Any]:
    ok = dict(AUDIO)
    if not streaming:
        ok = {"content": {**AUDIO["content"], "text/event-stream": {"schema": {"type": "string"}}}}
    return {"post": {"summary": summary, "requestBody": body, "tags": ["speech"],
                     "responses": {"200": {"description": "Audio", **ok}, "400": ERROR,
                                   "503": {"description": "No model worker is ready, or all are full"}}}}


def _get(summary: str, tag: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "tags": [tag], "responses": {"200": {"description": "OK"}}}}


@lru_cache(maxsize=1)
def build_spec() -> dict[str, Any]:
    spec = APISpec(title="chatterbox-server", version=chatterbox_server.__version__, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "OpenAI-compatible and Extended text-to-speech API for Chatterbox."})
    spec.components.schema("SpeechRequest", schema=SpeechRequestSchema(max_input_chars=4096))
    spec.components.schema("Error", {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": "string", "nullable": True},
        "code": {"type": "string"}}}}})
    spec.path("/v1/audio/speech", operations=_speech_operation(
        "Whole audio file, or Server-Sent Events with stream_format=sse", SPEECH_BODY, streaming=False))
    spec.path("/v1/audio/speech/stream", operations=_speech_operation(
        "Progressive audio as it is synthesized", SPEECH_BODY, streaming=True))
    spec.path("/v1/audio/speech/upload", operations=_speech_operation(
        "As /v1/audio/speech, multipart, with an optional voice_file to clone", UPLOAD_BODY, streaming=False))
    spec.path("/v1/audio/speech/stream/upload", operations=_speech_operation(
        "As /v1/audio/speech/stream, multipart, with an optional voice_file", UPLOAD_BODY, streaming=True))
    for path, summary, tag in (("/v1/models", "Models", "models"), ("/v1/voices", "Voice library", "voices"),
                               ("/v1/voices/{name}", "One voice", "voices"),
                               ("/v1/status", "Requests in progress", "status"),
                               ("/v1/status/progress", "Progress of one request", "status"),
                               ("/health", "Engine and worker pool", "status"),
                               ("/memory", "Memory of the processes", "status")):
        spec.path(path, operations=_get(summary, tag))
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec())


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>chatterbox-server API</title>{head}</head>
<body>{body}</body></html>"""


@bp.get("/docs")
def swagger_ui() -> Response:
    head = '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">'
    body = ('<div id="ui"></div><script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">'
            '</script><script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>')
    return Response(PAGE.format(head=head, body=body), mimetype="text/html")


@bp.get("/redoc")
def redoc() -> Response:
    body = ('<redoc spec-url="/openapi.json"></redoc>'
            '<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script>')
    return Response(PAGE.format(head="", body=body), mimetype="text/html")
