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


MAX_SPEAKERS = 32
MAX_VOICE_NAME = 256


def speakers_field() -> fields.Dict:
    """Inline speakers' voices: {"S1": "alice", "Speaker 2": "bob"} (text/speakers.py reads the labels)."""
    return fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=64)),
                       values=fields.String(validate=validate.Length(min=1, max=MAX_VOICE_NAME)),
                       load_default=None, allow_none=True,
                       validate=validate.Length(max=MAX_SPEAKERS, error=f"At most {MAX_SPEAKERS} speakers."))


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
    speakers: dict[str, str] | None = None  # inline speaker labels -> voices ("S1" -> "alice"); see text/speakers.py


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
    model: str | None = None            # which served model (synthesis/routing.py); None: the default


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
    speakers = speakers_field()

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


# -- dialogue -------------------------------------------------------------------------------------
TURN_OVERRIDES = ("exaggeration", "cfg_weight", "temperature", "speed")
GAP_MS_MAX = 5000


@dataclass(frozen=True)
class TurnRequest:
    """One turn as a request names it: its text, its voice (None: the request's) and its own settings."""
    text: str
    voice: str | None = None
    overrides: tuple[tuple[str, float], ...] = ()     # (field, value) from TURN_OVERRIDES


@dataclass(frozen=True)
class DialogueRequest:
    base: SpeechRequest                 # the request-wide fields; base.input is every turn's text joined
    turns: tuple[TurnRequest, ...] | None   # None: base.input holds inline speakers (text/speakers.py)
    gap_ms: int | None                  # None: CHATTERBOX_DIALOGUE_GAP_MS


class DialogueTurnSchema(Schema):
    class Meta:
        unknown = RAISE

    text = fields.String(required=True, validate=validate.Length(min=1))
    voice = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=MAX_VOICE_NAME))
    voice_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=MAX_VOICE_NAME))
    exaggeration = fields.Float(validate=in_range(0.25, 2.0))
    cfg_weight = fields.Float(validate=in_range(0.0, 1.0))
    temperature = fields.Float(validate=in_range(0.05, 5.0))
    speed = fields.Float(validate=in_range(*SPEED_RANGE))

    @validates("text")
    def _check_text(self, value: str, data_key: str) -> None:
        if not value.strip():
            raise ValidationError("Must contain text to speak.")

    @post_load
    def _turn(self, data: dict[str, Any], **_: Any) -> TurnRequest:
        voice = data.pop("voice") or data.pop("voice_id")
        overrides = tuple((name, float(data[name])) for name in TURN_OVERRIDES if name in data)
        return TurnRequest(data["text"], voice, overrides)


class DialogueRequestSchema(SpeechRequestSchema):
    """POST /v1/audio/dialogue: `inputs` (a list of turns) or `input` with inline speakers and `speakers`."""

    input = fields.String(load_default=None)
    inputs = fields.List(fields.Nested(DialogueTurnSchema), load_default=None)
    gap_ms = WholeNumber(load_default=None, allow_none=True, validate=in_range(0, GAP_MS_MAX))

    def __init__(self, *, max_input_chars: int, max_turns: int, **kwargs: Any) -> None:
        super().__init__(max_input_chars=max_input_chars, **kwargs)
        self.max_turns = max_turns

    @pre_load
    def _count_turns(self, data: Any, **_: Any) -> Any:
        """Refused before 10,000 turns are each validated."""
        if isinstance(data, dict):
            inputs = data.get("inputs")
            if isinstance(inputs, list) and len(inputs) > self.max_turns:
                raise ValidationError(f"{len(inputs)} turns; at most {self.max_turns} in one request "
                                      "(CHATTERBOX_DIALOGUE_MAX_TURNS); use a long-text job for more.",
                                      field_name="inputs")
        return data

    @validates("input")
    def _check_input(self, value: str | None, data_key: str) -> None:
        if value is not None:
            super()._check_input(value, data_key)

    @validates_schema
    def _one_script(self, data: dict[str, Any], **_: Any) -> None:
        inputs, text = data.get("inputs"), data.get("input")
        if (inputs is None) == (text is None):
            raise ValidationError('Send either "inputs" (a list of {"text", "voice"} turns) or "input" (a script '
                                  'with inline speakers and a "speakers" table).', field_name="inputs")
        if inputs is not None:
            if not inputs:
                raise ValidationError("Must have at least one turn.", field_name="inputs")
            total = sum(len(turn.text) for turn in inputs)
            if total > self.max_input_chars:
                raise ValidationError(f"The turns hold {total} characters, more than the limit of "
                                      f"{self.max_input_chars}.", field_name="inputs")

    @post_load
    def _resolve(self, data: dict[str, Any], **kwargs: Any) -> DialogueRequest:
        inputs, gap_ms = data.pop("inputs"), data.pop("gap_ms")
        if inputs is not None:
            data["input"] = "\n".join(turn.text for turn in inputs)
        base = super()._resolve(data, **kwargs)
        return DialogueRequest(base, tuple(inputs) if inputs is not None else None, gap_ms)
