"""What every socket protocol shares: validated speech options, a context's settings from them, the
wire encoding of a context's audio, and the Flask-side of starting a session."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, ValidationError, fields, validate

from chatterbox_server.api.openai.speech import check_engine_fields
from chatterbox_server.audio.encoders import OUTPUT_RATES, StreamEncoder, output_rate_for
from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.synthesis import routing
from chatterbox_server.synthesis.realtime import Audio, ContextSettings, Event, Session, SessionError, SessionLimits
from chatterbox_server.synthesis.requests import (
    SPEED_RANGE,
    SpeechRequest,
    SpeechRequestSchema,
    SynthesisFields,
    WholeNumber,
    first_error,
    in_range,
    one_of,
    speakers_field,
)
from chatterbox_server.synthesis.speech import encode_chunk, random_seed
from chatterbox_server.synthesis.voice_defaults import OPENAI_NAMES, with_voice_defaults
from chatterbox_server.text.segmenter import MODES, SegmentPolicy
from chatterbox_server.text.speakers import normalize_label
from workers.engines.base import EngineInfo, SynthesisSettings, VoiceRef

# the encodings a socket can carry: raw PCM (16-bit or float), G.711, and the streamable codecs
SOCKET_FORMATS = ("pcm", "pcm_f32le", "mulaw", "alaw", "mp3", "opus")


class SocketOptionsSchema(SynthesisFields):
    """A socket's speech options (our `session.update`, a context's overrides); every range as HTTP."""

    class Meta:
        unknown = RAISE

    voice = fields.String(load_default=None, allow_none=True)
    model = fields.String(load_default=None, allow_none=True)
    response_format = fields.String(load_default="pcm", validate=one_of(SOCKET_FORMATS))
    sample_rate = WholeNumber(load_default=None, allow_none=True,
                              validate=validate.OneOf(OUTPUT_RATES, error="Must be one of: {choices}."))
    speed = fields.Float(load_default=1.0, validate=in_range(*SPEED_RANGE))
    timestamps = fields.Boolean(load_default=False)
    binary = fields.Boolean(load_default=False)
    segmentation = fields.String(load_default="adaptive", validate=one_of(MODES))
    chunk_schedule = fields.List(WholeNumber(validate=in_range(1, 1000)), load_default=None, allow_none=True,
                                 validate=validate.Length(min=1, max=16))
    max_delay_ms = WholeNumber(load_default=None, allow_none=True, validate=in_range(0, 10_000))
    buffer_size = WholeNumber(load_default=3, validate=in_range(1, 10))
    speakers = speakers_field()         # inline speakers' voices: [S1] ... [S2] ... in the text


@dataclass(frozen=True)
class SocketOptions:
    values: dict[str, Any]               # as validated (defaults filled in)
    sent: dict[str, Any]                 # as the client sent them: what a context's overrides merge onto

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def load_options(sent: dict[str, Any], param_prefix: str = "") -> SocketOptions:
    """Validate options as sent; SessionError naming the first bad field."""
    svc = services()
    data = with_voice_defaults(svc.voices, dict(sent), "voice", SocketOptionsSchema, OPENAI_NAMES,
                               guards.owner_check())
    try:
        values = SocketOptionsSchema().load(data)
    except ValidationError as exc:
        field, message = first_error(exc)
        raise SessionError(message, code="invalid_value", status=400,
                           param=f"{param_prefix}{field}" if field else None) from None
    return SocketOptions(values, dict(sent))


def policy_for(options: SocketOptions) -> SegmentPolicy:
    delay = options["max_delay_ms"]
    if options["segmentation"] == "schedule":
        schedule = tuple(options["chunk_schedule"] or ())
        policy = SegmentPolicy.chunk_schedule(schedule) if schedule else SegmentPolicy.chunk_schedule()
    elif options["segmentation"] == "sentence":
        policy = SegmentPolicy.whole_sentences()
    else:
        policy = SegmentPolicy()
    return policy if delay is None else with_max_delay(policy, delay)


def with_max_delay(policy: SegmentPolicy, delay_ms: int) -> SegmentPolicy:
    """The longest any text waits for a better cut; the first segment's shorter delay stays."""
    seconds = delay_ms / 1000
    first = seconds if policy.first_max_delay is None else min(policy.first_max_delay, seconds)
    return dataclasses.replace(policy, first_max_delay=first, max_delay=seconds)


def context_settings(options: SocketOptions, info: EngineInfo, policy: SegmentPolicy | None = None,
                     context_id: str | None = None) -> ContextSettings:
    """The settings a new context speaks with; the voice is resolved now (in the request context). The
    context speaks with the socket's model unless its options name another (or a language only another speaks)."""
    svc = services()
    probe = _as_speech_request(options)
    try:
        info = context_engine(options, info)
        check_engine_fields(probe, info)
        voice = svc.voices.resolve(options["voice"], info, owns=guards.owner_check())
    except ApiError as exc:
        raise session_error(exc, context_id) from None
    seed = options["seed"] if options["seed"] is not None else random_seed()
    synthesis = SynthesisSettings(speed=options["speed"], exaggeration=options["exaggeration"],
                                  cfg_weight=options["cfg_weight"], temperature=options["temperature"],
                                  language=options["language"])
    owns = guards.owner_check()

    def voice_for(name: str) -> VoiceRef:       # [voice:NAME] in a context's text, later, off the request
        try:
            return svc.voices.resolve(name, info, owns=owns)
        except ApiError as exc:
            raise session_error(exc, context_id) from None
    speakers = {normalize_label(label): voice_for(name) for label, name in (options["speakers"] or {}).items()}
    return ContextSettings(voice, synthesis, seed, policy or policy_for(options), options["timestamps"],
                           options["buffer_size"], frozenset(info.tags), speakers, voice_for, model=info.group)


def context_engine(options: SocketOptions, socket_info: EngineInfo) -> EngineInfo:
    """The engine of the model a context's options pick (synthesis/routing.py), else the socket's."""
    svc = services()
    if options["model"] is not None:
        return svc.require_engine(options["model"], options["language"], vendor_ids=True)
    language = options["language"]
    if not language:
        return socket_info
    other = routing.speaker_of(language, routing.Served(socket_info.group, socket_info), svc.served())
    return (svc.engine_info(other) if other else None) or socket_info


def _as_speech_request(options: SocketOptions) -> SpeechRequest:
    """The HTTP request these options amount to, for the engine checks the speech endpoint makes."""
    values = options.values
    return SpeechRequest(input=".", model=values["model"], voice=values["voice"], response_format="pcm",
                         speed=values["speed"], stream_format="audio", exaggeration=values["exaggeration"],
                         cfg_weight=values["cfg_weight"], temperature=values["temperature"], seed=values["seed"],
                         streaming_chunk_size=200, streaming_strategy="sentence", streaming_buffer_size=3,
                         streaming_quality="balanced", language=values["language"], instructions=None,
                         explicit=frozenset(options.sent) & frozenset(SpeechRequestSchema._declared_fields))


def output_rate(fmt: str, engine_rate: int, requested: int | None, param: str = "sample_rate") -> int:
    """The wire rate of a format; SessionError when the format cannot carry the rate asked for."""
    try:
        return output_rate_for(fmt, engine_rate, requested)
    except ValueError as exc:
        raise SessionError(str(exc), code="invalid_value", param=param) from None


class WireAudio:
    """One context's audio in its wire encoding (PCM16 from the engine in; encoded bytes out)."""

    def __init__(self, fmt: str, engine_rate: int, rate: int) -> None:
        self.encoder = StreamEncoder(fmt, engine_rate, output_rate=rate)
        self.head = self.encoder.header()

    def feed(self, pcm: bytes) -> bytes:
        data, self.head = self.head + encode_chunk(self.encoder, pcm), b""
        return data

    def finish(self) -> bytes:
        data, self.head = self.head + self.encoder.finish(), b""
        return data


class Wires:
    """The wire encoding of each context, by its serial."""

    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        self.by_serial: dict[int, WireAudio] = {}

    def open(self, serial: int, fmt: str, rate: int) -> None:
        self.by_serial[serial] = WireAudio(fmt, self.info.sample_rate, rate)

    def feed(self, event: Audio) -> bytes:
        wire = self.by_serial.get(event.serial)
        return wire.feed(event.pcm) if wire is not None else b""

    def finish(self, serial: int) -> bytes:
        wire = self.by_serial.pop(serial, None)
        return wire.finish() if wire is not None else b""

    def forget(self, serial: int) -> None:
        self.by_serial.pop(serial, None)


def new_session(emit: Callable[[Event], None], info: EngineInfo | None = None) -> Session:
    """`info`: the socket's model (its admission is checked on that model's workers); None: the default one."""
    svc = services()
    settings = svc.settings
    limits = SessionLimits(settings.realtime_max_contexts, settings.realtime_max_context_chars,
                           settings.realtime_lookahead_seconds)
    return Session(svc.pool, info or svc.require_engine(), emit, limits)


def session_error(exc: ApiError, context_id: str | None = None) -> SessionError:
    return SessionError(exc.message, context_id, code=exc.code or "invalid_value", status=exc.status,
                        param=exc.param)
