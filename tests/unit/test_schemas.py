"""Tests for chatterbox_server.synthesis.requests (SpeechRequestSchema and first_error)."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError

from chatterbox_server.store.voice_library import OPENAI_VOICES
from chatterbox_server.synthesis.requests import (
    QUALITY_PRESETS,
    RESPONSE_FORMATS,
    SEED_MAX,
    STREAM_FORMATS,
    SpeechRequest,
    SpeechRequestSchema,
    first_error,
)
from chatterbox_server.text.chunking import STRATEGIES

MAX_CHARS = 100

# field: (lowest accepted, highest accepted, just below, just above)
RANGES = {
    "speed": (0.25, 4.0, 0.2499, 4.0001),
    "exaggeration": (0.25, 2.0, 0.2499, 2.0001),
    "cfg_weight": (0.0, 1.0, -0.0001, 1.0001),
    "temperature": (0.05, 5.0, 0.0499, 5.0001),
    "seed": (0, SEED_MAX, -1, SEED_MAX + 1),
    "streaming_chunk_size": (50, 500, 49, 501),
    "streaming_buffer_size": (1, 10, 0, 11),
}


def load(**fields) -> SpeechRequest:
    data = {"input": "Hello there."}
    data.update(fields)
    return SpeechRequestSchema(max_input_chars=MAX_CHARS).load(data)


def error_of(data: dict) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as info:
        SpeechRequestSchema(max_input_chars=MAX_CHARS).load(data)
    return first_error(info.value)


def test_defaults():
    request = load()
    assert request == SpeechRequest(
        input="Hello there.", model=None, voice=None, response_format="wav", speed=1.0, stream_format="audio",
        exaggeration=0.5, cfg_weight=0.5, temperature=0.8, seed=None, streaming_chunk_size=200,
        streaming_strategy="sentence", streaming_buffer_size=3, streaming_quality="balanced", language=None,
        instructions=None, explicit=frozenset({"input"}))


@pytest.mark.parametrize("field", sorted(RANGES))
def test_range_boundaries_are_accepted(field):
    low, high, _, _ = RANGES[field]
    assert getattr(load(**{field: low}), field) == low
    assert getattr(load(**{field: high}), field) == high


@pytest.mark.parametrize("field", sorted(RANGES))
@pytest.mark.parametrize("side", ["below", "above"])
def test_just_outside_the_range_is_rejected(field, side):
    _, _, below, above = RANGES[field]
    value = below if side == "below" else above
    param, message = error_of({"input": "Hi.", field: value})
    assert param == field
    assert message.startswith(f"{field}: ")
    assert "greater than or equal to" in message


@pytest.mark.parametrize("value, ok", [("e", False), ("en", True), ("x" * 16, True), ("x" * 17, False)])
def test_language_length(value, ok):
    if ok:
        assert load(language=value).language == value
    else:
        assert error_of({"input": "Hi.", "language": value})[0] == "language"


@pytest.mark.parametrize("field, choices", [
    ("response_format", RESPONSE_FORMATS),
    ("stream_format", STREAM_FORMATS),
    ("streaming_strategy", STRATEGIES),
    ("streaming_quality", tuple(QUALITY_PRESETS)),
])
def test_choices(field, choices):
    for choice in choices:
        assert getattr(load(**{field: choice}), field) == choice
    param, message = error_of({"input": "Hi.", field: "nope"})
    assert param == field
    assert "Must be one of" in message and choices[0] in message


def test_sample_rate_is_optional_and_one_of_the_wire_rates():
    assert load().sample_rate is None
    assert load(response_format="mulaw", sample_rate=8000).sample_rate == 8000
    assert load(response_format="pcm", sample_rate="16000").sample_rate == 16000      # a form string
    assert {"mulaw", "alaw"} <= set(RESPONSE_FORMATS)
    param, message = error_of({"input": "Hi.", "sample_rate": 11025})
    assert (param, message) == ("sample_rate", "sample_rate: Must be one of: 8000, 16000, 22050, 24000, 44100, "
                                               "48000.")


@pytest.mark.parametrize("rate", [22050, 44100])
def test_sample_rate_the_format_cannot_carry(rate):
    """Opus runs at 8, 12, 16, 24 or 48 kHz: the error names the field and the rates it takes."""
    param, message = error_of({"input": "Hi.", "response_format": "opus", "sample_rate": rate})
    assert param == "sample_rate"
    assert message == f"sample_rate: opus cannot carry {rate} Hz; use one of 8000, 16000, 24000, 48000."
    assert load(response_format="mp3", sample_rate=rate).sample_rate == rate


def test_voice_and_model_are_free_strings():
    request = load(voice=OPENAI_VOICES[0], model="tts-1")
    assert request.voice == OPENAI_VOICES[0]
    assert request.model == "tts-1"


def test_nullable_fields_accept_none():
    request = load(seed=None, language=None, instructions=None)
    assert request.seed is None and request.language is None and request.instructions is None


def test_unknown_field_rejected():
    param, message = error_of({"input": "Hi.", "volume": 3})
    assert param == "volume"
    assert "Unknown field" in message


def test_missing_input_rejected():
    param, _ = error_of({"voice": "alloy"})
    assert param == "input"


@pytest.mark.parametrize("text", ["", " ", "  \n\t "])
def test_empty_or_whitespace_input_rejected(text):
    param, message = error_of({"input": text})
    assert param == "input"
    assert "text" in message


def test_input_length_limit():
    assert load(input="x" * MAX_CHARS).input == "x" * MAX_CHARS
    param, message = error_of({"input": "x" * (MAX_CHARS + 1)})
    assert param == "input"
    assert str(MAX_CHARS) in message
    assert str(MAX_CHARS + 1) in message


def test_the_limit_is_per_schema_instance():
    text = "x" * 500
    assert SpeechRequestSchema(max_input_chars=500).load({"input": text}).input == text
    with pytest.raises(ValidationError):
        SpeechRequestSchema(max_input_chars=499).load({"input": text})


@pytest.mark.parametrize("field, value", [
    ("speed", "fast"),
    ("speed", float("nan")),
    ("speed", float("inf")),
    ("speed", "nan"),
    ("temperature", float("-inf")),
    ("exaggeration", [1]),
    ("seed", -1),
    ("seed", 2**32),
    ("seed", "abc"),
    ("seed", True),
    ("seed", 1.5),
    ("seed", "1.5"),
    ("speed", True),
    ("streaming_chunk_size", 100.7),
    ("streaming_chunk_size", "big"),
    ("input", 42),
    ("voice", 7),
    ("response_format", None),
    ("sample_rate", 12345),
    ("sample_rate", "8k"),
    ("sample_rate", 8000.5),
    ("sample_rate", True),
])
def test_wrong_types_and_values(field, value):
    data = {"input": "Hi."}
    data[field] = value
    param, message = error_of(data)
    assert param == field
    assert message.startswith(f"{field}: ")


def test_first_error_names_a_field_even_with_several_problems():
    param, _ = error_of({"input": "Hi.", "speed": 99, "seed": -5})
    assert param in ("speed", "seed")


def test_first_error_for_a_non_dict_payload():
    with pytest.raises(ValidationError) as info:
        SpeechRequestSchema(max_input_chars=MAX_CHARS).load(["not", "an", "object"])
    param, message = first_error(info.value)
    assert param is None
    assert message


@pytest.mark.parametrize("quality, size, strategy", [
    ("fast", 100, "word"),
    ("balanced", 200, "sentence"),
    ("high", 300, "paragraph"),
])
def test_streaming_quality_presets(quality, size, strategy):
    request = load(streaming_quality=quality)
    assert (request.streaming_chunk_size, request.streaming_strategy) == (size, strategy)
    assert request.explicit == frozenset({"input", "streaming_quality"})


def test_explicit_fields_override_the_preset():
    request = load(streaming_quality="fast", streaming_chunk_size=450)
    assert (request.streaming_chunk_size, request.streaming_strategy) == (450, "word")
    request = load(streaming_quality="high", streaming_strategy="fixed")
    assert (request.streaming_chunk_size, request.streaming_strategy) == (300, "fixed")
    request = load(streaming_quality="fast", streaming_chunk_size=60, streaming_strategy="sentence")
    assert (request.streaming_chunk_size, request.streaming_strategy) == (60, "sentence")


def test_explicit_contains_exactly_the_sent_fields():
    sent = {"input": "Hi.", "speed": 1.0, "voice": "alloy", "seed": None, "streaming_buffer_size": 3}
    assert SpeechRequestSchema(max_input_chars=MAX_CHARS).load(sent).explicit == frozenset(sent)
    # a default-valued field that was not sent is not explicit
    assert load().explicit == frozenset({"input"})


def test_explicit_does_not_leak_between_loads_of_one_schema():
    schema = SpeechRequestSchema(max_input_chars=MAX_CHARS)
    assert schema.load({"input": "a", "speed": 2}).explicit == frozenset({"input", "speed"})
    assert schema.load({"input": "b"}).explicit == frozenset({"input"})


def test_form_style_string_values_accepted():
    request = load(speed="1.5", streaming_chunk_size="200", seed="42", cfg_weight="0", temperature="0.05",
                   streaming_buffer_size="10")
    assert request.speed == 1.5
    assert request.streaming_chunk_size == 200
    assert request.seed == 42
    assert request.cfg_weight == 0.0
    assert request.temperature == 0.05
    assert request.streaming_buffer_size == 10
    assert request.explicit == frozenset({"input", "speed", "streaming_chunk_size", "seed", "cfg_weight",
                                          "temperature", "streaming_buffer_size"})


def test_form_style_out_of_range_string_rejected():
    assert error_of({"input": "Hi.", "speed": "4.5"})[0] == "speed"
    assert error_of({"input": "Hi.", "streaming_chunk_size": "10"})[0] == "streaming_chunk_size"
