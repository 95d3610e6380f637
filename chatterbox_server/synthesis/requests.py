"""Request schemas: every field and range of both API families, enforced by marshmallow.

No Flask here: the views hand these schemas a dict (parsed JSON or form fields) and get back a
typed request or a ValidationError whose first field becomes the error's ``param``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from chatterbox_server.audio.encoders import OUTPUT_RATES, output_rate_for
from chatterbox_server.text.chunking import STRATEGIES
from chatterbox_server.text.prep import TextOptions

RESPONSE_FORMATS = ("wav", "mp3", "opus", "aac", "flac", "pcm", "mulaw", "alaw")
STREAM_FORMATS = ("audio", "sse")
QUALITIES = ("fast", "balanced", "high")
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
SEED_MAX = 2**32 - 1

# streaming_quality presets: what each quality means when the request does not say otherwise
QUALITY_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"streaming_chunk_size": 100, "streaming_strategy": "word"},
    "balanced": {"streaming_chunk_size": 200, "streaming_strategy": "sentence"},
    "high": {"streaming_chunk_size": 300, "streaming_strategy": "paragraph"},
}


class WholeNumber(fields.Integer):
    """An integer that also arrives as a form string ("200"), but never silently truncates 5.5 to 5."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.make_error("invalid")
        return super()._validated(value)


def in_range(low: float, high: float) -> validate.Range:
    return validate.Range(min=low, max=high)


def one_of(choices: tuple[str, ...]) -> validate.OneOf:
    return validate.OneOf(choices, error="Must be one of: {choices}.")


SPEED_RANGE = (0.25, 4.0)


def seed_field() -> WholeNumber:
    return WholeNumber(load_default=None, allow_none=True, validate=in_range(0, SEED_MAX))


class SynthesisFields(Schema):
    """The synthesis parameters both API families take, with their ranges, declared once."""

    exaggeration = fields.Float(load_default=0.5, validate=in_range(0.25, 2.0))
    cfg_weight = fields.Float(load_default=0.5, validate=in_range(0.0, 1.0))
    temperature = fields.Float(load_default=0.8, validate=in_range(0.05, 5.0))
    seed = seed_field()
    language = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=2, max=16))


@dataclass(frozen=True)
class SpeechRequest:
    input: str
    model: str | None
    voice: str | None
    response_format: str
    speed: float
    stream_format: str
    exaggeration: float
    cfg_weight: float
    temperature: float
    seed: int | None
    streaming_chunk_size: int
    streaming_strategy: str
    streaming_buffer_size: int
    streaming_quality: str
    language: str | None
    instructions: str | None
    explicit: frozenset[str]            # fields the client actually sent
    sample_rate: int | None = None      # the wire rate asked for; None: the format's default (output_rate_for)
    timestamps: bool = False            # word timings with the audio (SSE events; the captioned answer)


@dataclass(frozen=True)
class Candidates:
    per_chunk: int
    max_attempts: int
    bypass_whisper: bool
    whisper_model: str
    use_faster_whisper: bool
    longest_on_fail: bool


@dataclass(frozen=True)
class AfterSynthesis:
    normalize: bool
    normalize_method: str
    normalize_level: float
    normalize_tp: float
    normalize_lra: float
    auto_editor: bool
    ae_threshold: float
    ae_margin: float
    keep_original_wav_ae: bool
    trim: bool
    trim_threshold_ms: int


@dataclass(frozen=True)
class ExtendedTtsRequest:
    text: str
    reference_voice: str | None
    exaggeration: float
    temperature: float
    cfg_weight: float
    seed: int | None                    # None: random (absent or 0)
    language: str | None
    speed_factor: float
    speed_factor_library: str
    text_options: TextOptions
    enable_batching: bool
    smart_batch_short_sentences: bool
    candidates: Candidates
    after: AfterSynthesis
    folder: str                         # "" : the outputs directory itself
    export_formats: tuple[str, ...]
    disable_watermark: bool
    explicit: frozenset[str]


class SpeechRequestSchema(SynthesisFields):
    """POST /v1/audio/speech and its /stream and /upload variants."""

    class Meta:
        unknown = RAISE

    input = fields.String(required=True)
    model = fields.String(load_default=None)
    voice = fields.String(load_default=None)
    response_format = fields.String(load_default="wav", validate=one_of(RESPONSE_FORMATS))
    speed = fields.Float(load_default=1.0, validate=in_range(*SPEED_RANGE))
    stream_format = fields.String(load_default="audio", validate=one_of(STREAM_FORMATS))
    streaming_chunk_size = WholeNumber(validate=in_range(50, 500))
    streaming_strategy = fields.String(validate=one_of(STRATEGIES))
    streaming_buffer_size = WholeNumber(load_default=3, validate=in_range(1, 10))
    streaming_quality = fields.String(load_default="balanced", validate=one_of(QUALITIES))
    instructions = fields.String(load_default=None, allow_none=True)   # OpenAI field; see docs/api.md
    sample_rate = WholeNumber(load_default=None, allow_none=True,
                              validate=validate.OneOf(OUTPUT_RATES, error="Must be one of: {choices}."))
    timestamps = fields.Boolean(load_default=False)     # word timings: `speech.audio.timestamps` SSE events

    def __init__(self, *, max_input_chars: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_input_chars = max_input_chars
        self._sent: frozenset[str] = frozenset()

    @pre_load
    def _remember_sent_fields(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            self._sent = frozenset(data)
        return data

    @validates("input")
    def _check_input(self, value: str, data_key: str) -> None:
        if not value.strip():
            raise ValidationError("Must contain text to speak.")
        if len(value) > self.max_input_chars:
            raise ValidationError(f"Longer than the limit of {self.max_input_chars} characters "
                                  f"({len(value)}); use the streaming endpoint or split the text.")

    @validates_schema
    def _check_sample_rate(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("sample_rate") is not None:
            try:
                output_rate_for(data["response_format"], data["sample_rate"], data["sample_rate"])
            except ValueError as exc:
                raise ValidationError(f"{exc}.", field_name="sample_rate") from exc

    @post_load
    def _resolve(self, data: dict[str, Any], **_: Any) -> SpeechRequest:
        explicit = self._sent & frozenset(self.fields)
        preset = QUALITY_PRESETS[data["streaming_quality"]]
        for name, value in preset.items():
            data.setdefault(name, value)
        return SpeechRequest(**data, explicit=explicit)


def first_error(error: ValidationError) -> tuple[str | None, str]:
    """(field, message) of the first problem, for an error envelope that names one parameter."""
    messages = error.messages
    if isinstance(messages, dict) and messages:
        field, problems = next(iter(messages.items()))
        if field == "_schema":
            return None, _flatten(problems)
        text = _flatten(problems)
        if text == "Unknown field.":
            text = "Unknown field; see /docs for the accepted fields."
        return field, f"{field}: {text}"
    return None, _flatten(messages)


def _flatten(problems: Any) -> str:
    if isinstance(problems, (list, tuple)):
        return " ".join(_flatten(p) for p in problems)
    if isinstance(problems, dict):
        return " ".join(f"{key}: {_flatten(value)}" for key, value in problems.items())
    return str(problems)
