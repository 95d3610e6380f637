"""Captioned speech: POST /v1/audio/speech/captioned answers the whole file with its word timings.

The shape is Kokoro-FastAPI's `/dev/captioned_speech` (the captioned-speech answer subtitle tools
already read): JSON with the encoded audio in base64 and ``timestamps``, a list of
``{"word", "start_time", "end_time"}`` in seconds from the first sample. One JSON body rather than
audio plus a second request for the captions: nothing to store, no second round trip, and the
words can never belong to another take. The request is /v1/audio/speech's (same schema, voices and
limits); ``stream_format`` must stay "audio", and ``timestamps`` is implied.
"""
from __future__ import annotations

import base64
import dataclasses

from flask import Blueprint, Response, jsonify, request

from chatterbox_server.api.language_notes import degraded_headers, language_note
from chatterbox_server.api.openai.speech import (
    build_speech_job,
    check_engine_fields,
    check_whole_budget,
    json_body,
    parse_speech,
    wire_rate,
)
from chatterbox_server.audio.encoders import encode_whole
from chatterbox_server.audio.timings import captions
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.synthesis import speech
from workers.engines.base import VoiceRef

bp = Blueprint("openai_captioned", __name__)


@bp.post("/audio/speech/captioned")
def captioned_speech() -> Response:
    req = parse_speech(json_body(), streaming=False)
    if req.stream_format != "audio":
        raise ApiError(400, 'captioned speech is one JSON answer; stream_format must be "audio" (for a stream '
                            'with word timings use /v1/audio/speech with stream_format "sse" and timestamps)',
                       param="stream_format")
    svc = services()
    info = svc.require_engine(req.model, req.language)
    ignored = check_engine_fields(req, info)
    rate = wire_rate(req, info)
    request_id = speech.new_request_id()
    job, plan = build_speech_job(req, VoiceRef("default"), request_id, info)
    check_whole_budget(job.chunks, info.group)
    voice = svc.voices.resolve(req.voice, info, owns=guards.owner_check())
    job = dataclasses.replace(job, voice=voice, timestamps=True)
    run = speech.SpeechRun.start(svc.pool, job, info, request.environ.get("gunicorn.socket"), svc.progress)
    pcm, words = speech.collect_captioned(run)
    audio = off_hub(encode_whole, req.response_format, pcm, info.sample_rate, rate)
    body = jsonify({"audio": base64.b64encode(audio).decode("ascii"), "audio_format": req.response_format,
                    "sample_rate": rate, "duration": round(len(pcm) / 2 / info.sample_rate, 3),
                    "timestamps": captions(words)})
    body.headers.update({"X-Request-Id": request_id, "X-Chatterbox-Seed": str(job.seed),
                         "X-Chatterbox-Chunks": str(len(job.chunks))})
    if ignored:
        body.headers["X-Chatterbox-Ignored-Fields"] = ",".join(ignored)
    if plan.dropped_tags:
        body.headers["X-Chatterbox-Dropped-Tags"] = ",".join(plan.dropped_tags)
    body.headers.update(degraded_headers(language_note(info, req.language)))
    return body
