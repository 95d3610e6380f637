"""The fields every Extended request schema shares: the export formats and response modes, and how
a reference_audio_filename names a library voice. Each route's schema sits beside its view
(tts_schema.py, vc_schema.py, concat_schema.py); no Flask here."""
from __future__ import annotations

import os
import re

from marshmallow import ValidationError

from chatterbox_server.store import paths

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


def voice_name_from_filename(filename: str) -> str:
    """A library name from an uploaded file's name: "My Voice (1).wav" -> "My_Voice_1"; may be ""."""
    stem = os.path.splitext(os.path.basename(filename.replace("\\", "/")))[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:64]
