"""Dialogue: POST /v1/audio/dialogue, and inline speakers in /v1/audio/speech (synthesis/dialogue.py).

The body is a list of turns, ``{"inputs": [{"text", "voice", ...per-turn settings}]}``, or one
script with inline speakers, ``{"input": "[S1] Hi. [S2] Hello.", "speakers": {"S1": "alice", ...}}``;
everything else is /v1/audio/speech's. The answer is a whole file (its turns in the
``X-Chatterbox-Segments`` header, JSON), a progressive stream (``/v1/audio/dialogue/stream``), or
SSE (``stream_format: "sse"``: a ``dialogue.turn`` event before each turn's audio and a
``dialogue.turn.done`` after it, with start and end in seconds of the answer's audio).
"""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from chatterbox_server.api.bodies import load
from chatterbox_server.api.language_notes import degraded_headers, language_note
from chatterbox_server.api.openai.checks import (
    audio_answer,
    check_engine_fields,
    inline_or_none,
    json_body,
    wire_rate,
)
from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.synthesis import speech
from chatterbox_server.synthesis.budget import Ledger, Limits, check_whole_file
from chatterbox_server.synthesis.dialogue import DialogueRun, DialogueTurn, TurnError, plan_dialogue
from chatterbox_server.synthesis.requests import DialogueRequest, DialogueRequestSchema, SpeechRequest, TurnRequest
from chatterbox_server.synthesis.voice_defaults import OPENAI_NAMES, with_voice_defaults
from workers.engines.base import EngineInfo, VoiceRef

bp = Blueprint("openai_dialogue", __name__)
SEGMENTS_HEADER_BYTES = 6000        # nginx's default proxy buffer holds 4-8 KB of headers


@bp.post("/audio/dialogue")
def create_dialogue() -> Response:
    data = json_body()
    dialogue = parse_dialogue(data, streaming=data.get("stream_format") == "sse")
    return respond_dialogue(dialogue.base, dialogue_turns(dialogue), dialogue.gap_ms, progressive=False)


@bp.post("/audio/dialogue/stream")
def stream_dialogue() -> Response:
    dialogue = parse_dialogue(json_body(), streaming=True)
    return respond_dialogue(dialogue.base, dialogue_turns(dialogue), dialogue.gap_ms, progressive=True)


def parse_dialogue(data: dict[str, Any], streaming: bool) -> DialogueRequest:
    settings = current_app.config["SETTINGS"]
    data = with_voice_defaults(services().voices, data, "voice", DialogueRequestSchema, OPENAI_NAMES,
                               guards.owner_check())
    limit = settings.max_stream_input_chars if streaming else settings.max_input_chars
    return load(DialogueRequestSchema(max_input_chars=limit, max_turns=settings.dialogue_max_turns), data)


def dialogue_turns(dialogue: DialogueRequest) -> list[TurnRequest]:
    if dialogue.turns is not None:
        return list(dialogue.turns)
    turns = inline_or_none(dialogue.base)
    if turns is None:       # a script without labels is one turn in the request's voice
        return [TurnRequest(dialogue.base.input, dialogue.base.voice)]
    return turns


def check_turn_count(turns: list[TurnRequest], limit: int, param: str = "input") -> None:
    if len(turns) > limit:
        raise ApiError(400, f"{param}: {len(turns)} turns; at most {limit} in one request "
                            "(CHATTERBOX_DIALOGUE_MAX_TURNS); use a long-text job for more", param=param)


def build_turns(base: SpeechRequest, turns: list[TurnRequest], info: EngineInfo, request_id: str,
                streaming: bool, param: str = "inputs") -> tuple[list[DialogueTurn], tuple[str, ...], int]:
    """The turns' jobs, their dropped tags and the seed; a bad turn is a 400 that names it."""
    svc = services()
    owns = guards.owner_check()
    seed = base.seed if base.seed is not None else speech.random_seed()

    def voice_for(name: str | None) -> VoiceRef:
        return svc.voices.resolve(name, info, param=param, owns=owns)
    try:
        planned, dropped = plan_dialogue(base, turns, request_id, voice_for, streaming=streaming,
                                         tags=frozenset(info.tags), seed=seed, model=info.group)
    except TurnError as exc:
        raise ApiError(400, f"{param}[{exc.turn}]: {exc.message}", param=param) from exc
    return planned, dropped, seed


def check_dialogue_budget(turns: list[DialogueTurn], model: str) -> None:
    """A whole-file answer: nothing is sent until it is made, so every turn must fit the time limit."""
    svc = services()
    ledger = Ledger(Limits.of(svc.settings))
    ledger.add_text([chunk for turn in turns for chunk in turn.job.chunks], 1, 1, True)
    check_whole_file(ledger, svc.pool.speed(model), "input")


def segments_header(segments: list[dict[str, Any]]) -> str:
    """The turns as compact ASCII JSON; texts are shortened when the whole would not fit a header."""
    text = json.dumps(segments, separators=(",", ":"))
    if len(text) <= SEGMENTS_HEADER_BYTES:
        return text
    return json.dumps([{**segment, "text": segment["text"][:40]} for segment in segments], separators=(",", ":"))


def start_dialogue(base: SpeechRequest, turns: list[TurnRequest], gap_ms: int | None, streaming: bool,
                   param: str = "inputs") -> tuple[DialogueRun, int, dict[str, str]]:
    """Check, plan and start a dialogue: its run (first audio in), the wire rate and the headers."""
    svc = services()
    settings = svc.settings
    check_turn_count(turns, settings.dialogue_max_turns, param)
    info = svc.require_engine(base.model, base.language)
    ignored = check_engine_fields(base, info)
    rate = wire_rate(base, info)
    request_id = speech.new_request_id()
    planned, dropped, seed = build_turns(base, turns, info, request_id, streaming, param)
    if not streaming:
        check_dialogue_budget(planned, info.group)
    gap = (settings.dialogue_gap_ms if gap_ms is None else gap_ms) / 1000
    run = DialogueRun.start(svc.pool, planned, info, request_id, request.environ.get("gunicorn.socket"),
                            svc.progress, gap_seconds=gap, lookahead=settings.dialogue_lookahead_turns, seed=seed,
                            first_alone=streaming)
    headers = {"X-Request-Id": request_id, "X-Chatterbox-Seed": str(seed), "X-Chatterbox-Turns": str(len(planned)),
               "X-Chatterbox-Chunks": str(sum(turn.job.units for turn in planned)),
               "X-Chatterbox-Sample-Rate": str(rate)}
    if ignored:
        headers["X-Chatterbox-Ignored-Fields"] = ",".join(ignored)
    if dropped:
        headers["X-Chatterbox-Dropped-Tags"] = ",".join(dropped)
    headers.update(degraded_headers(language_note(info, base.language)))
    return run, rate, headers


def respond_dialogue(base: SpeechRequest, turns: list[TurnRequest], gap_ms: int | None,
                     progressive: bool) -> Response:
    """Every dialogue answer of the OpenAI family: a whole file, a progressive stream or SSE."""
    if base.timestamps and base.stream_format != "sse":
        raise ApiError(400, 'timestamps come as events of stream_format "sse"', param="timestamps")
    run, rate, headers = start_dialogue(base, turns, gap_ms, progressive or base.stream_format == "sse")
    return audio_answer(run, base, rate, headers, progressive, lambda: {
        "X-Chatterbox-Segments": segments_header([segment.as_dict() for segment in run.segments])})
