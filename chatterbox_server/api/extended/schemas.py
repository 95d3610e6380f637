"""Request schemas of the Extended API family under /api/v1, besides
/api/v1/tts's own (api/extended/tts_schema.py).

No Flask here: the views hand these schemas a dict and get back a typed request or a
ValidationError (turned into a 400 that names the field by `schemas.first_error`).
"""
from __future__ import annotations

import os
import re
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validates

from chatterbox_server.store import paths
from chatterbox_server.synthesis.requests import one_of, seed_field

EXPORT_FORMATS = ("wav", "mp3", "flac", "opus", "aac")
RESPONSE_MODES = ("stream", "url")
# Extensions stripped from reference_audio_filename: "speaker1.wav" names the library voice "speaker1".
REFERENCE_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4")


def reference_voice_name(filename: str) -> str:
    """The library voice a reference_audio_filename names ("speaker1.wav", "team/speaker1.wav" or
    "speaker1"); ValidationError for anything that is not a clean path inside the voice library."""
    if not filename.strip():
        raise ValidationError("Must name a voice from the library (see GET /api/v1/voices).")
    try:
        relative = paths.clean_relative(filename, "reference_audio_filename", allow_empty=False)
    except paths.PathError as exc:
        raise ValidationError(f"Must be a voice name or a path inside the voice library: {exc.message}") from None
    folder, name = paths.split(relative)
    stem, extension = os.path.splitext(name)
    return paths.join(folder, stem if extension.lower() in REFERENCE_EXTENSIONS and stem else name)


class TtsQuerySchema(Schema):
    """The query string of POST /api/v1/tts; other parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    response_mode = fields.String(load_default="stream",
                                  validate=one_of(RESPONSE_MODES))


def voice_name_from_filename(filename: str) -> str:
    """A library name from an uploaded file's name: "My Voice (1).wav" -> "My_Voice_1"; may be ""."""
    stem = os.path.splitext(os.path.basename(filename.replace("\\", "/")))[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:64]


class VcFormSchema(Schema):
    """The form fields of POST /api/v1/vc (the files are `input_audio` and optionally `target_voice_source`)."""

    class Meta:
        unknown = RAISE

    target_voice_source = fields.String(load_default=None, allow_none=True)
    export_formats = fields.Raw(load_default="wav")
    seed = seed_field()

    @validates("target_voice_source")
    def _check_target(self, value: str | None, data_key: str) -> None:
        if value:
            reference_voice_name(value)

    @post_load
    def _formats(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """export_formats as a repeated field, or one field "wav,mp3" (curl -F friendly)."""
        raw = data["export_formats"]
        items = raw if isinstance(raw, list) else [raw]
        formats = [part.strip().lower() for item in items for part in str(item).split(",") if part.strip()]
        bad = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
        if bad or not formats:
            raise ValidationError({"export_formats": [f"Must be one of: {', '.join(EXPORT_FORMATS)}."]})
        target = data["target_voice_source"]
        return {**data, "export_formats": tuple(dict.fromkeys(formats)),
                "target_voice_source": reference_voice_name(target) if target else None}
