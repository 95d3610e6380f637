"""The OpenAI-style speech API, served under /v1 and at the root."""
from __future__ import annotations

import dataclasses
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from chatterbox_server.api.bodies import form_fields, load, uploaded
from chatterbox_server.api.language_notes import degraded_headers, language_note
from chatterbox_server.api.openai.checks import (
    audio_answer,
    check_engine_fields,
    inline_or_none,
    json_body,
    wire_rate,
)
from chatterbox_server.api.openai.dialogue import respond_dialogue
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.runtime.progress import IDLE
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.store import files
from chatterbox_server.synthesis import speech
from chatterbox_server.synthesis.budget import Ledger, Limits, check_whole_file
from chatterbox_server.synthesis.requests import SpeechRequest, SpeechRequestSchema
from chatterbox_server.synthesis.speech import TextPlan
from chatterbox_server.synthesis.voice_defaults import OPENAI_NAMES, with_voice_defaults
from chatterbox_server.synthesis.voices import write_temporary_voice
from chatterbox_server.text.markup import MarkupError
from workers.engines.base import EngineInfo, VoiceRef
from workers.ipc.protocol import SpeechJob

bp = Blueprint("openai", __name__)


# -- request parsing ------------------------------------------------------------------------------
def form_body() -> tuple[dict[str, Any], bytes | None]:
    if request.is_json:         # the /upload endpoints without a file: the peer's clients send JSON too
        return json_body(), None
    return form_fields(("voice_file",), accept_urlencoded=True), uploaded("voice_file")


def parse_speech(data: dict[str, Any], streaming: bool) -> SpeechRequest:
    settings = current_app.config["SETTINGS"]
    data = with_voice_defaults(services().voices, data, "voice", SpeechRequestSchema, OPENAI_NAMES,
                               guards.owner_check())
    limit = settings.max_stream_input_chars if streaming else settings.max_input_chars
    return load(SpeechRequestSchema(max_input_chars=limit), data)


# -- the speech endpoints -------------------------------------------------------------------------
@bp.post("/audio/speech")
def create_speech() -> Response:
    data = json_body()
    return respond(parse_speech(data, streaming=data.get("stream_format") == "sse"), progressive=False,
                   voice_file=None)


@bp.post("/audio/speech/stream")
def stream_speech() -> Response:
    return respond(parse_speech(json_body(), streaming=True), progressive=True, voice_file=None)


@bp.post("/audio/speech/upload")
def create_speech_upload() -> Response:
    data, voice_file = form_body()
    streaming = data.get("stream_format") == "sse"
    return respond(parse_speech(data, streaming=streaming), progressive=False, voice_file=voice_file)


@bp.post("/audio/speech/stream/upload")
def stream_speech_upload() -> Response:
    data, voice_file = form_body()
    return respond(parse_speech(data, streaming=True), progressive=True, voice_file=voice_file)


def check_whole_budget(chunks: tuple[str, ...], model: str) -> None:
    """A whole-file answer: nothing is sent until it is made, so its text must fit the time limit."""
    svc = services()
    ledger = Ledger(Limits.of(svc.settings))
    ledger.add_text(list(chunks), 1, 1, True)
    check_whole_file(ledger, svc.pool.speed(model), "input")


def build_speech_job(req: SpeechRequest, voice: VoiceRef, request_id: str, info: EngineInfo,
                     streaming: bool = False) -> tuple[SpeechJob, TextPlan]:
    """speech.build_job with its markup problems as 400s that point at the character."""
    try:
        return speech.build_job(req, voice, request_id, streaming=streaming, tags=frozenset(info.tags),
                                model=info.group)
    except MarkupError as exc:
        raise ApiError(400, f"input: {exc}", param="input") from exc
    except speech.NothingToSay as exc:
        raise ApiError(400, f"input: {exc}", param="input") from exc


def respond(req: SpeechRequest, progressive: bool, voice_file: bytes | None) -> Response:
    svc = services()
    info = svc.require_engine(req.model, req.language)
    turns = inline_or_none(req)
    if turns is not None:
        if voice_file is not None:
            raise ApiError(400, "voice_file cannot go with inline speakers: name each speaker's voice in "
                                '"speakers"', param="voice_file")
        return respond_dialogue(req, turns, None, progressive)
    ignored = check_engine_fields(req, info)
    rate = wire_rate(req, info)
    if req.timestamps and req.stream_format != "sse":
        raise ApiError(400, 'timestamps come as events of stream_format "sse"; for a file with its word '
                            "timings use POST /v1/audio/speech/captioned", param="timestamps")
    streaming = progressive or req.stream_format == "sse"
    request_id = speech.new_request_id()
    # the text is read before anything is stored or submitted: bad markup costs nothing
    job, plan = build_speech_job(req, VoiceRef("default"), request_id, info, streaming=streaming)
    if not streaming:        # nothing is sent until the whole file is made
        check_whole_budget(job.chunks, info.group)
    temporary_voice = None
    if voice_file is not None:
        if not info.supports_cloning:
            raise ApiError(400, f"voice_file needs the chatterbox engine; this server runs {info.engine}",
                           param="voice_file", code="voice_not_supported")
        temporary_voice = off_hub(write_temporary_voice, svc.upload_dir, voice_file, svc.settings.max_upload_bytes)
        voice = VoiceRef("voice_file", temporary_voice)
    else:
        voice = svc.voices.resolve(req.voice, info, owns=guards.owner_check())
    job = dataclasses.replace(job, voice=voice)
    try:
        run = speech.SpeechRun.start(svc.pool, job, info, request.environ.get("gunicorn.socket"), svc.progress)
    except BaseException:
        files.remove(temporary_voice)
        raise
    if temporary_voice:
        run.cleanups.append(lambda: files.remove(temporary_voice))
    headers = {"X-Request-Id": request_id, "X-Chatterbox-Seed": str(job.seed),
               "X-Chatterbox-Chunks": str(len(job.chunks)),
               "X-Chatterbox-Sample-Rate": str(rate)}      # raw pcm, mulaw and alaw say it nowhere else
    if ignored:
        headers["X-Chatterbox-Ignored-Fields"] = ",".join(ignored)
    if plan.dropped_tags:
        headers["X-Chatterbox-Dropped-Tags"] = ",".join(plan.dropped_tags)
    headers.update(degraded_headers(language_note(info, req.language)))
    return audio_answer(run, req, rate, headers, progressive)


# -- progress (the voices are in api/openai/voices.py, the models in api/openai/models.py) ----------
@bp.get("/status/progress")
def progress() -> Response:
    active = services().progress.all_active(guards.can_see_text, guards.admin_caller())
    wanted = request.args.get("request_id")
    if wanted:
        match = next((entry for entry in active if entry["request_id"] == wanted), None)
        if match is None:
            raise ApiError(404, f"no request {wanted!r} is in progress", param="request_id", code="not_found")
        return jsonify(match)
    return jsonify(active[-1] if active else IDLE)

# /status lives in api/openai/status.py with the history and statistics it can include
