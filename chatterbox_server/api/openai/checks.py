"""What the OpenAI family's speech views share: the checks before they build a job (the body, the
engine's fields, the wire rate, inline speakers) and the shape of their audio answers."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response

from chatterbox_server.api.bodies import json_object
from chatterbox_server.audio.encoders import CONTENT_TYPES, output_rate_for
from chatterbox_server.errors import ApiError
from chatterbox_server.synthesis import speech
from chatterbox_server.synthesis.dialogue import inline_turns
from chatterbox_server.synthesis.requests import SpeechRequest, TurnRequest
from chatterbox_server.text.speakers import SpeakerError
from workers.engines.base import EngineInfo


def json_body() -> dict[str, Any]:
    return json_object(hint="; use the /upload endpoints for multipart forms")


def wire_rate(req: SpeechRequest, info: EngineInfo) -> int:
    """The rate the client gets: its `sample_rate`, else the format's default for this engine."""
    try:
        return output_rate_for(req.response_format, info.sample_rate, req.sample_rate)
    except ValueError as exc:       # the schema checked the asked rate; this is the engine's own
        raise ApiError(400, f"sample_rate: {exc}", param="sample_rate") from exc


def check_engine_fields(req: SpeechRequest, info: EngineInfo) -> list[str]:
    """400 for what this engine cannot honour; returns the fields it accepts but does not use. The
    request's `model` picked the engine already (Services.require_engine)."""
    if req.language is not None and req.language not in info.languages and req.language != "en":
        supported = ", ".join(info.languages) or "en (this model speaks English only)"
        raise ApiError(400, f"language {req.language!r} is not supported; use {supported}", param="language")
    unused = [] if info.supports_exaggeration else ["exaggeration", "cfg_weight", "temperature"]
    if req.instructions is not None:
        unused.append("instructions")
    return [name for name in unused if name in req.explicit]


def inline_or_none(req: SpeechRequest) -> list[TurnRequest] | None:
    """The turns of `input` when it has inline speakers (text/speakers.py); a label without a voice is a 400."""
    try:
        return inline_turns(req)
    except SpeakerError as exc:
        raise ApiError(400, f"input: {exc}; give every label a voice in \"speakers\", e.g. "
                            '{"speakers": {"S1": "alice", "S2": "bob"}}',
                       param="speakers") from exc


STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def audio_answer(run: speech.AudioRun, req: SpeechRequest, rate: int, headers: dict[str, str], progressive: bool,
                 whole_headers: Callable[[], dict[str, str]] = dict) -> Response:
    """SSE, a progressive stream or (made first) a whole file; `whole_headers` are known once it is made."""
    if req.stream_format == "sse":      # it says "loading model" at once, and a failure as an event
        return Response(speech.server_sent_events(run, req.response_format, rate), mimetype="text/event-stream",
                        headers={**headers, **STREAM_HEADERS})
    wait_first = getattr(run, "wait_first", None)
    if wait_first is not None:
        try:
            wait_first()        # a model that loads first: its failure is still an HTTP status, not a cut body
        except BaseException:
            run.close()
            raise
    if progressive:
        return Response(speech.progressive(run, req.response_format, rate),
                        content_type=CONTENT_TYPES[req.response_format], headers={**headers, **STREAM_HEADERS})
    body = speech.whole_file(run, req.response_format, rate)
    return Response(body, content_type=CONTENT_TYPES[req.response_format], headers={**headers, **whole_headers()})
