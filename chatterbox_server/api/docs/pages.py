"""OpenAPI document generated from the marshmallow schemas, with Swagger UI and ReDoc pages."""
from __future__ import annotations

import copy
import importlib.util
import os
from functools import lru_cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, jsonify, send_from_directory

import chatterbox_server
from chatterbox_server.api.docs import dialogue_paths as dialogue_docs
from chatterbox_server.api.docs import realtime_paths as realtime_docs
from chatterbox_server.api.docs import store_paths as store_docs
from chatterbox_server.api.extended.concat_schema import ConcatSchema, MixedConcatSchema
from chatterbox_server.api.extended.fields import EXPORT_FORMATS
from chatterbox_server.api.extended.tts_schema import ExtendedTtsSchema
from chatterbox_server.api.extended.vc_schema import VcFormSchema
from chatterbox_server.audio.encoders import CONTENT_TYPES
from chatterbox_server.errors import ApiError
from chatterbox_server.synthesis.requests import SpeechRequestSchema
from chatterbox_server.web import same_origin_only

bp = Blueprint("docs", __name__)
bp.after_request(same_origin_only)

AUDIO = {"content": {mime: {"schema": {"type": "string", "format": "binary"}}
                     for mime in sorted(set(CONTENT_TYPES.values()))}}
ERROR = {"description": "Invalid request (the `param` field names the problem)",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
BUSY = {"description": "The server is full (estimated queued seconds or jobs over the limit, or this key's "
                       "streams); see Retry-After"}
SPEECH_BODY = {"required": True, "content": {"application/json": {"schema": "SpeechRequest"}}}
BINARY = {"type": "string", "format": "binary"}


def _with_files(spec: APISpec, component: str, files: dict[str, dict]) -> dict[str, Any]:
    """A multipart body: the component's fields plus file fields (one object: the component forbids extras)."""
    schema = copy.deepcopy(spec.to_dict()["components"]["schemas"][component])
    schema["properties"].update(files)
    return schema


def _multipart(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _speech_operation(summary: str, body: dict, streaming: bool) -> dict[str, Any]:
    ok = dict(AUDIO)
    if not streaming:
        ok = {"content": {**AUDIO["content"], "text/event-stream": {"schema": {"type": "string"}}}}
    return {"post": {"summary": summary, "requestBody": body, "tags": ["speech"],
                     "responses": {"200": {"description": "Audio", **ok}, "400": ERROR, "429": BUSY,
                                   "503": {"description": "No model worker is ready, or the server is stopping; "
                                                          "see Retry-After"}}}}


def _extended_operation(summary: str, mime: str, schema: dict) -> dict[str, Any]:
    mode = {"name": "response_mode", "in": "query", "schema": {"type": "string", "enum": ["stream", "url"],
                                                                 "default": "stream"}}
    fmt = {"name": "return_format", "in": "query", "required": False,
           "schema": {"type": "string", "enum": list(EXPORT_FORMATS)},
           "description": "The export format sent in stream mode (default: the first of export_formats)"}
    return {"post": {"summary": summary, "tags": ["extended"], "parameters": [mode, fmt],
                     "requestBody": {"required": True, "content": {mime: {"schema": schema}}},
                     "responses": {"200": {"description": "The first format as a download (stream) or JSON (url)",
                                           **AUDIO},
                                   "400": {"description": "Invalid parameter"},
                                   "404": {"description": "Reference audio not found"},
                                   "413": {"description": "Upload too large"},
                                   "429": BUSY,
                                   "503": {"description": "Model not available"}}}}


def _get(summary: str, tag: str, path: str) -> dict[str, Any]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]
    return {"get": {"summary": summary, "tags": [tag], "parameters": parameters,
                    "responses": {"200": {"description": "OK"}}}}


@lru_cache(maxsize=1)
def build_spec() -> dict[str, Any]:
    spec = APISpec(title="chatterbox-server", version=chatterbox_server.__version__, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "OpenAI-compatible and Extended text-to-speech API for Chatterbox, with "
                         "streaming-input WebSockets (ours at /v1/audio/speech/realtime, and ElevenLabs', Cartesia's "
                         "and Deepgram's protocols at their own paths) for voice agents."})
    spec.components.schema("SpeechRequest", schema=SpeechRequestSchema(max_input_chars=4096))
    spec.components.schema("TtsRequest", schema=ExtendedTtsSchema(max_input_chars=4096))
    spec.components.schema("VcForm", schema=VcFormSchema())
    spec.components.schema("Error", {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": "string", "nullable": True},
        "code": {"type": "string"}}}}})
    spec.path("/v1/audio/speech", operations=_speech_operation(
        "Whole audio file, or Server-Sent Events with stream_format=sse", SPEECH_BODY, streaming=False))
    spec.path("/v1/audio/speech/stream", operations=_speech_operation(
        "Progressive audio as it is synthesized", SPEECH_BODY, streaming=True))
    spec.path("/v1/audio/speech/captioned", operations={"post": {
        "summary": "Whole audio file in base64 with each word's start_time and end_time (Kokoro-FastAPI's shape)",
        "requestBody": SPEECH_BODY, "tags": ["speech"],
        "responses": {"200": {"description": "audio (base64), audio_format, sample_rate, duration, timestamps",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "400": ERROR, "429": BUSY, "503": {"description": "No model worker is ready"}}}})
    upload_body = _multipart(_with_files(spec, "SpeechRequest", {"voice_file": BINARY}))
    spec.path("/v1/audio/speech/upload", operations=_speech_operation(
        "As /v1/audio/speech, multipart, with an optional voice_file to clone", upload_body, streaming=False))
    spec.path("/v1/audio/speech/stream/upload", operations=_speech_operation(
        "As /v1/audio/speech/stream, multipart, with an optional voice_file", upload_body, streaming=True))
    spec.path("/api/v1/tts", operations=_extended_operation(
        "Synthesize and export: the first format as a download, or every file's URL", "application/json",
        {"$ref": "#/components/schemas/TtsRequest"}))
    vc_form = _with_files(spec, "VcForm", {"input_audio": BINARY})
    vc_form["required"] = ["input_audio"]
    vc = _extended_operation(
        "Voice conversion of input_audio into target_voice_source (a library voice name, or a file in that field)",
        "multipart/form-data", vc_form)
    vc["post"]["requestBody"]["content"]["application/json"] = {"schema": store_docs.VC_JSON}
    spec.path("/api/v1/vc", operations=vc)
    store_docs.add_store_paths(spec)
    realtime_docs.add_realtime_paths(spec)
    dialogue_docs.add_paths(spec)
    for path, summary, tag in (("/api/v1/health", "Health in the peer's shape (status healthy)", "extended"),
                               ("/api/v1/config", "Defaults, formats and limits", "extended"),
                               ("/api/v1/metrics", "System, request and process metrics", "extended"),
                               ("/api/v1/resources", "Disk use of the data directories", "extended"),
                               ("/api/v1/cleanup/status", "Retention and the last cleanups", "extended"),
                               ("/api/v1/errors/summary", "Errors of the last 24 hours", "extended"),
                               ("/api/v1/errors/recent", "The latest errors", "extended"),
                               ("/outputs/{file}", "A generated file", "extended")):
        spec.path(path, operations=_get(summary, tag, path))
    spec.components.schema("ConcatRequest", schema=ConcatSchema())
    spec.components.schema("MixedConcatRequest", schema=MixedConcatSchema())
    spec.path("/api/v1/concat", operations=_extended_operation(
        "Join generated files and '(500ms)' silences into one file", "application/json",
        {"$ref": "#/components/schemas/ConcatRequest"}))
    mixed = _extended_operation("Join generated files, uploads, silences and new speech (type tts)",
                                "application/json", {"$ref": "#/components/schemas/MixedConcatRequest"})
    mixed["post"]["requestBody"]["content"]["multipart/form-data"] = {"schema": {
        "type": "object", "required": ["request_json"],
        "properties": {"request_json": {"type": "string", "description": "A MixedConcatRequest as JSON"},
                       "uploaded_files": {"type": "array", "items": BINARY}}}}
    spec.path("/api/v1/concat/mixed", operations=mixed)
    spec.path("/api/v1/cleanup", operations={"post": {
        "summary": "Apply the retention limits now", "tags": ["extended"],
        "responses": {"200": {"description": "What was removed"}}}})
    for path, summary, tag in (("/v1/models", "Models", "models"),
                               ("/v1/status", "Requests in progress", "status"),
                               ("/v1/status/progress", "Progress of one request", "status"),
                               ("/health", "Engine and worker pool", "status"),
                               ("/memory", "Memory of the processes (cleanup=true acts on every worker)",
                                "memory")):
        spec.path(path, operations=_get(summary, tag, path))
    from chatterbox_server.api.docs.paths import add_paths
    add_paths(spec)
    return spec.to_dict()


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec())


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>chatterbox-server API</title>{head}</head>
<body>{body}</body></html>"""
# Swagger UI comes from the swagger-ui-py wheel (its static files only; its framework glue is not used),
# ReDoc from the file vendored under web/static/vendor: no page loads anything from another host.
SWAGGER_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "LICENSE",
                 "favicon-32x32.png")
REDOC_JS = "/web/vendor/redoc-2.5.4/redoc.standalone.js"


def swagger_static_dir() -> str:
    spec = importlib.util.find_spec("swagger_ui")      # locate without importing its framework handlers
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (requirements.txt)")
    return os.path.join(spec.submodule_search_locations[0], "static")


@bp.get("/docs/assets/<name>")
def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_FILES:
        raise ApiError(404, "no such documentation asset", code="not_found")
    return send_from_directory(swagger_static_dir(), name, max_age=86400)


@bp.get("/docs")
def swagger_ui() -> Response:
    head = ('<link rel="stylesheet" href="/docs/assets/swagger-ui.css">'
            '<link rel="icon" href="/docs/assets/favicon-32x32.png">')
    body = ('<div id="ui" data-spec-url="/openapi.json"></div>'
            '<script src="/docs/assets/swagger-ui-bundle.js"></script><script src="/web/js/docs-init.js"></script>')
    return Response(PAGE.format(head=head, body=body), mimetype="text/html")


@bp.get("/redoc")
def redoc() -> Response:
    body = f'<redoc spec-url="/openapi.json"></redoc><script src="{REDOC_JS}"></script>'
    return Response(PAGE.format(head="", body=body), mimetype="text/html")
