"""ElevenLabs' text-to-dialogue on our dialogue core: POST /v1/text-to-dialogue, ``/stream``,
``/with-timestamps`` and ``/stream/with-timestamps``, so the ElevenLabs SDK's
``client.text_to_dialogue`` works with only its base URL changed.

The body is ElevenLabs' (``inputs: [{"text", "voice_id"}]``, ``model_id``, ``seed``; the rest of
their fields are accepted and named in ``X-Chatterbox-Ignored-Fields``), the query's
``output_format`` is theirs (``mp3_44100_128`` by default). A ``voice_id`` that is not one of our
voices speaks in the default voice, as on the sockets (docs/api.md). The timestamped answers carry
ElevenLabs' character ``alignment`` and ``voice_segments`` (character indices into the alignment).
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate

from chatterbox_server.api.bodies import json_object, load
from chatterbox_server.api.openai.checks import STREAM_HEADERS
from chatterbox_server.api.openai.dialogue import start_dialogue
from chatterbox_server.api.realtime.elevenlabs import CODECS
from chatterbox_server.api.realtime.vendor import our_voice
from chatterbox_server.audio.encoders import CONTENT_TYPES, StreamEncoder, encode_whole
from chatterbox_server.audio.timings import Word, WordClock, character_alignment
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.runtime.pool_client import PoolError
from chatterbox_server.services import services
from chatterbox_server.synthesis import speech
from chatterbox_server.synthesis.dialogue import DialogueRun
from chatterbox_server.synthesis.requests import (
    MAX_VOICE_NAME,
    SEED_MAX,
    SpeechRequest,
    SpeechRequestSchema,
    TurnRequest,
    first_error,
    in_range,
)
from chatterbox_server.synthesis.routing import model_id

bp = Blueprint("elevenlabs_dialogue", __name__)
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"
IGNORED = ("language_code", "settings", "pronunciation_dictionary_locators", "apply_text_normalization",
           "use_pvc_as_ivc", "previous_text", "future_text", "previous_request_ids", "next_request_ids",
           "audio_effects")


class InputSchema(Schema):
    class Meta:
        unknown = RAISE

    text = fields.String(required=True, validate=validate.Length(min=1))
    voice_id = fields.String(required=True, validate=validate.Length(min=1, max=MAX_VOICE_NAME))


class TextToDialogueSchema(Schema):
    class Meta:
        unknown = RAISE

    inputs = fields.List(fields.Nested(InputSchema), required=True, validate=validate.Length(min=1))
    model_id = fields.String(load_default=None, allow_none=True)
    seed = fields.Integer(load_default=None, allow_none=True, validate=in_range(0, SEED_MAX))
    # theirs, accepted and named in X-Chatterbox-Ignored-Fields (IGNORED)
    language_code = fields.Raw(load_default=None, allow_none=True)
    settings = fields.Raw(load_default=None, allow_none=True)
    pronunciation_dictionary_locators = fields.Raw(load_default=None, allow_none=True)
    apply_text_normalization = fields.Raw(load_default=None, allow_none=True)
    use_pvc_as_ivc = fields.Raw(load_default=None, allow_none=True)
    previous_text = fields.Raw(load_default=None, allow_none=True)
    future_text = fields.Raw(load_default=None, allow_none=True)
    previous_request_ids = fields.Raw(load_default=None, allow_none=True)
    next_request_ids = fields.Raw(load_default=None, allow_none=True)
    audio_effects = fields.Raw(load_default=None, allow_none=True)


def output_format() -> tuple[str, int]:
    value = request.args.get("output_format") or DEFAULT_OUTPUT_FORMAT
    codec, _, rest = value.partition("_")
    rate = rest.split("_", 1)[0]
    if codec not in {**CODECS, "wav": "wav"} or not rate.isdigit():
        raise ApiError(400, f"output_format {value!r} is not served; use pcm_<rate>, ulaw_8000, alaw_8000, "
                            "wav_<rate>, mp3_<rate>_<kbps> or opus_48000_<kbps>", param="output_format")
    return {**CODECS, "wav": "wav"}[codec], int(rate)


def parse(timestamps: bool) -> tuple[SpeechRequest, list[TurnRequest], list[str]]:
    data = json_object()
    limit = services().settings.dialogue_max_turns
    if isinstance(data.get("inputs"), list) and len(data["inputs"]) > limit:
        raise ApiError(400, f"inputs: {len(data['inputs'])} turns; at most {limit} in one request "
                            "(CHATTERBOX_DIALOGUE_MAX_TURNS)", param="inputs")
    body = load(TextToDialogueSchema(), data)
    info = services().require_engine(body["model_id"], vendor_ids=True, param="model_id")
    fmt, rate = output_format()
    turns = [TurnRequest(turn["text"], our_voice(turn["voice_id"], info)) for turn in body["inputs"]]
    fields_sent = {"input": "\n".join(turn.text for turn in turns), "response_format": fmt, "sample_rate": rate,
                   "seed": body["seed"], "timestamps": timestamps, "model": model_id(info.group)}
    settings = services().settings
    try:
        base = SpeechRequestSchema(max_input_chars=settings.max_stream_input_chars).load(fields_sent)
    except ValidationError as exc:
        field, message = first_error(exc)
        param = "output_format" if field in ("response_format", "sample_rate") else "inputs"
        raise ApiError(400, message.replace("input:", "inputs:", 1), param=param) from exc
    ignored = [name for name in IGNORED if data.get(name) is not None]
    return base, turns, ignored


def with_ignored(headers: dict[str, str], ignored: list[str]) -> dict[str, str]:
    if ignored:
        known = headers.get("X-Chatterbox-Ignored-Fields")
        headers["X-Chatterbox-Ignored-Fields"] = ",".join([*(known.split(",") if known else []), *ignored])
    return headers


@bp.post("/v1/text-to-dialogue")
def convert() -> Response:
    base, turns, ignored = parse(timestamps=False)
    run, rate, headers = start_dialogue(base, turns, None, streaming=False)
    body = speech.whole_file(run, base.response_format, rate)
    return Response(body, content_type=CONTENT_TYPES[base.response_format], headers=with_ignored(headers, ignored))


@bp.post("/v1/text-to-dialogue/stream")
def stream() -> Response:
    base, turns, ignored = parse(timestamps=False)
    run, rate, headers = start_dialogue(base, turns, None, streaming=True)
    return Response(speech.progressive(run, base.response_format, rate),
                    content_type=CONTENT_TYPES[base.response_format],
                    headers={**with_ignored(headers, ignored), **STREAM_HEADERS})


@bp.post("/v1/text-to-dialogue/with-timestamps")
def convert_with_timestamps() -> Response:
    base, turns, ignored = parse(timestamps=True)
    run, rate, headers = start_dialogue(base, turns, None, streaming=False)
    clock, pcm, words = WordClock(run.info.sample_rate), [], Timeline(run)
    try:
        for chunk in run.audio():
            pcm.append(chunk.pcm)
            words.add(chunk.index, clock.feed(chunk.index, len(chunk.pcm), chunk.words))
    finally:
        run.close()
    audio = off_hub(encode_whole, base.response_format, b"".join(pcm), run.info.sample_rate, rate)
    payload = {"audio_base64": base64.b64encode(audio).decode("ascii"), **words.shaped(turns)}
    return Response(json.dumps(payload), mimetype="application/json", headers=with_ignored(headers, ignored))


@bp.post("/v1/text-to-dialogue/stream/with-timestamps")
def stream_with_timestamps() -> Response:
    base, turns, ignored = parse(timestamps=True)
    run, rate, headers = start_dialogue(base, turns, None, streaming=True)
    return Response(timestamped_lines(run, base.response_format, rate, turns), mimetype="application/json",
                    headers={**with_ignored(headers, ignored), **STREAM_HEADERS})


def timestamped_lines(run: DialogueRun, fmt: str, rate: int, turns: list[TurnRequest]) -> Iterator[bytes]:
    """One JSON object a line, as ElevenLabs streams them: each text chunk's audio with the alignment
    of its words; the last line also has every voice segment, indexed into all the lines' characters."""
    encoder = StreamEncoder(fmt, run.info.sample_rate, output_rate=rate)
    clock, everything = WordClock(run.info.sample_rate), Timeline(run)
    pending = encoder.header()
    try:
        for chunk in run.audio():
            pending += speech.encode_chunk(encoder, chunk.pcm)
            words = clock.feed(chunk.index, len(chunk.pcm), chunk.words)
            if words is None:
                continue
            everything.add(chunk.index, words)
            alignment = character_alignment(words)
            yield line(pending, {"alignment": alignment, "normalized_alignment": alignment, "voice_segments": []})
            pending = b""
        pending += encoder.finish()
        yield line(pending, {"alignment": None, "normalized_alignment": None,
                             "voice_segments": voice_segments(run, turns, everything)})
    except PoolError as exc:
        if exc.status != 499:
            raise speech.StreamAborted(str(exc)) from exc
    finally:
        run.close()


def line(audio: bytes, rest: dict[str, Any]) -> bytes:
    return json.dumps({"audio_base64": base64.b64encode(audio).decode("ascii"), **rest}).encode() + b"\n"


class Timeline:
    """The words of a dialogue's audio so far, each with its turn (from its chunk's global index)."""

    def __init__(self, run: DialogueRun) -> None:
        self.run = run
        self.words: list[tuple[int, Word]] = []
        self.bounds: list[int] = []
        total = 0
        for turn in run.turns:
            total += turn.job.units
            self.bounds.append(total)

    def add(self, chunk_index: int, words: tuple[Word, ...] | None) -> None:
        if words:
            turn = next(number for number, bound in enumerate(self.bounds) if chunk_index < bound)
            self.words += [(turn, word) for word in words]

    def shaped(self, turns: list[TurnRequest]) -> dict[str, Any]:
        alignment = character_alignment([word for _, word in self.words])
        return {"alignment": alignment, "normalized_alignment": alignment,
                "voice_segments": voice_segments(self.run, turns, self)}


def voice_segments(run: DialogueRun, turns: list[TurnRequest], timeline: Timeline | None = None) -> list[dict]:
    """ElevenLabs' voice segments of the turns finished so far; character indices into the alignment
    of `timeline`'s words (words joined by single spaces)."""
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    position = 0
    for number, (turn, (word, _, _)) in enumerate(timeline.words if timeline else []):
        if number:
            position += 1
        starts.setdefault(turn, position)
        position += len(word)
        ends[turn] = position
    return [{"voice_id": turns[segment.turn].voice or "default", "start_time_seconds": round(segment.start, 3),
             "end_time_seconds": round(segment.end, 3), "character_start_index": starts.get(segment.turn, 0),
             "character_end_index": ends.get(segment.turn, 0), "dialogue_input_index": segment.turn}
            for segment in run.segments if segment.end is not None]
