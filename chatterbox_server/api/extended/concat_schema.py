"""Request schemas of POST /api/v1/concat and /api/v1/concat/mixed (the Extended family's ConcatRequest and
MixedConcatRequest), plus one segment kind of ours: `tts`, new speech synthesized through the pool."""
from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from chatterbox_server.api.extended.fields import RESPONSE_MODES
from chatterbox_server.audio.concat import SILENCE_RANGE_MS, silence_ms
from chatterbox_server.audio.encoders import FILE_EXTENSIONS
from chatterbox_server.synthesis.requests import WholeNumber, in_range, one_of

CONCAT_FORMATS = ("wav", "mp3", "flac")
SEGMENT_TYPES = ("server_file", "upload", "silence", "tts")
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def output_base(name: str) -> str:
    """output_filename without a known audio extension: the base every format's file is named after."""
    stem, dot, extension = name.rpartition(".")
    return stem if dot and extension.lower() in FILE_EXTENSIONS.values() else name


def check_silence(item: str) -> None:
    ms = silence_ms(item)
    if ms is not None and not SILENCE_RANGE_MS[0] <= ms <= SILENCE_RANGE_MS[1]:
        raise ValidationError(f"Silence duration must be between 50ms and 10s: {item}")


class JoinFields(Schema):
    class Meta:
        unknown = RAISE

    export_formats = fields.List(fields.String(validate=one_of(CONCAT_FORMATS)), load_default=lambda: ["wav"],
                                 validate=validate.Length(min=1, error="Name at least one format."))
    normalize_levels = fields.Boolean(load_default=True)
    crossfade_ms = WholeNumber(load_default=0, validate=in_range(0, 5000))
    pause_duration_ms = WholeNumber(load_default=0, validate=in_range(0, 3000))
    pause_variation_ms = WholeNumber(load_default=200, validate=in_range(0, 500))
    trim = fields.Boolean(load_default=False)
    trim_threshold_ms = WholeNumber(load_default=200, validate=in_range(50, 1000))
    output_filename = fields.String(load_default=None, allow_none=True)

    @validates("output_filename")
    def _check_name(self, value: str | None, data_key: str) -> None:
        """The whole name is checked (the view keeps it all but a known extension): "x./a" is a folder."""
        if value is not None and not OUTPUT_NAME.fullmatch(output_base(value)):
            raise ValidationError("Letters, digits, '_', '-' and '.', up to 100 characters, no folders.")

    @validates_schema
    def _check_pause(self, data: dict[str, Any], **_: Any) -> None:
        if data["pause_duration_ms"] > 0 and data["pause_variation_ms"] >= data["pause_duration_ms"]:
            raise ValidationError({"pause_variation_ms": [
                "Pause variation must be less than base pause duration when pause is enabled."]})


class ConcatSchema(JoinFields):
    files = fields.List(fields.String(validate=validate.Length(min=1)), required=True)
    response_mode = fields.String(load_default=None, allow_none=True, validate=one_of(RESPONSE_MODES))

    @validates("files")
    def _check_files(self, value: list[str], data_key: str) -> None:
        for item in value:
            check_silence(item)
        audio = [item for item in value if silence_ms(item) is None]
        if not audio:
            raise ValidationError("At least one audio file required (silence-only concatenation not allowed).")
        if len(audio) == len(value) and len(audio) < 2:
            raise ValidationError("At least 2 files required for concatenation when not using manual silence.")


class SegmentSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=one_of(SEGMENT_TYPES))
    source = fields.String(load_default=None, allow_none=True)
    index = WholeNumber(load_default=None, allow_none=True, validate=in_range(0, 99))
    tts = fields.Dict(load_default=None, allow_none=True)

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        kind = data["type"]
        wanted = {"server_file": "source", "silence": "source", "upload": "index", "tts": "tts"}[kind]
        for name in ("source", "index", "tts"):
            if name == wanted and data[name] is None:
                raise ValidationError({name: [f"A {kind} segment needs {name}."]})
            if name != wanted and data[name] is not None:
                raise ValidationError({name: [f"A {kind} segment takes no {name}."]})
        if kind == "silence":
            if silence_ms(data["source"]) is None:
                raise ValidationError({"source": ["Use the notation '(500ms)' or '(1.5s)'."]})
            check_silence(data["source"])


class MixedConcatSchema(JoinFields):
    segments = fields.List(fields.Nested(SegmentSchema), required=True,
                           validate=validate.Length(min=1, max=100))

    @validates_schema(skip_on_field_errors=True)
    def _check_segments(self, data: dict[str, Any], **_: Any) -> None:
        value = data["segments"]
        if not any(s["type"] != "silence" for s in value):
            raise ValidationError({"segments": [
                "At least one audio segment required (silence-only concatenation not allowed)."]})
        indices = {s["index"] for s in value if s["type"] == "upload"}
        if indices and indices != set(range(max(indices) + 1)):
            raise ValidationError({"segments": [
                f"Upload indices must be consecutive starting from 0; found {sorted(indices)}."]})
