"""POST /api/v1/tts: every field of the Extended TTSRequest, with its ranges and defaults.

The peer's code (api_models.TTSRequest) is the reference where it and its docs disagree. Only this
family takes these ranges (cfg_weight up to 2, exaggeration from 0, ...); /v1 keeps the OpenAI-style ranges.
No Flask here: the view hands the schema a dict and gets a TtsRequest (an ExtendedTtsRequest with a
script's speakers and gap) or a ValidationError.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, pre_load, validate, validates

from chatterbox_server.api.extended.fields import EXPORT_FORMATS, RESPONSE_MODES, reference_voice_name
from chatterbox_server.audio.post import NORMALIZE_METHODS
from chatterbox_server.synthesis.requests import (
    GAP_MS_MAX,
    SEED_MAX,
    AfterSynthesis,
    Candidates,
    ExtendedTtsRequest,
    WholeNumber,
    in_range,
    one_of,
    speakers_field,
)
from chatterbox_server.text.prep import TextOptions

WHISPER_MODELS = ("tiny", "base", "small", "medium", "large")
SPEED_LIBRARIES = ("auto", "audiostretchy", "librosa", "torchaudio")
PEER_SPEED_RANGE = (0.5, 2.0)
DEFAULT_EXPORT_FORMATS = ("wav", "mp3")
STREAM_SYNONYMS = ("file", "download")
FOLDER_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
FOLDER_MAX_DEPTH = 4


def clean_folder(value: str) -> str:
    """A project/folder path relative to the outputs directory: up to 4 plain parts separated by "/".
    Anything that could leave the directory (.., absolute paths, backslashes, dot files) is refused."""
    raw = value.strip().strip("/")
    if not raw:
        return ""
    if "\\" in raw or "\x00" in raw or value.strip().startswith("/"):
        raise ValidationError("Must be a relative folder path with '/' separators.")
    parts = raw.split("/")
    if len(parts) > FOLDER_MAX_DEPTH:
        raise ValidationError(f"At most {FOLDER_MAX_DEPTH} folder levels.")
    for part in parts:
        if part in ("", ".", "..") or not FOLDER_PART.fullmatch(part) or part.endswith((".", " ")):
            raise ValidationError(f"Invalid folder name {part!r}: letters, digits, space, '_', '-', '.' "
                                  "(not first), up to 64 characters.")
    return posixpath.join(*parts)


@dataclass(frozen=True)
class TtsRequest(ExtendedTtsRequest):
    """An ExtendedTtsRequest with what only /api/v1/tts reads: a script's speakers and its gap."""
    speakers: dict[str, str] | None = None      # inline speaker labels -> library voices (text/speakers.py)
    gap_ms: int | None = None                   # silence between turns; None: CHATTERBOX_DIALOGUE_GAP_MS


class ExtendedTtsSchema(Schema):
    class Meta:
        unknown = RAISE

    text = fields.String(required=True)
    reference_audio_filename = fields.String(load_default=None, allow_none=True)
    exaggeration = fields.Float(load_default=0.5, validate=in_range(0.0, 2.0))
    temperature = fields.Float(load_default=0.75, validate=in_range(0.1, 2.0))
    seed = WholeNumber(load_default=0, allow_none=True, validate=in_range(0, SEED_MAX))
    cfg_weight = fields.Float(load_default=1.0, validate=in_range(0.0, 2.0))
    language = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=2, max=16))
    model = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=100))
    num_candidates_per_chunk = WholeNumber(load_default=3, validate=in_range(1, 10))
    max_attempts_per_candidate = WholeNumber(load_default=3, validate=in_range(1, 10))
    bypass_whisper_checking = fields.Boolean(load_default=False)
    whisper_model_name = fields.String(load_default="medium", validate=one_of(WHISPER_MODELS))
    use_faster_whisper = fields.Boolean(load_default=True)
    use_longest_transcript_on_fail = fields.Boolean(load_default=True)
    enable_batching = fields.Boolean(load_default=False)
    smart_batch_short_sentences = fields.Boolean(load_default=True)
    to_lowercase = fields.Boolean(load_default=True)
    normalize_spacing = fields.Boolean(load_default=True)
    fix_dot_letters = fields.Boolean(load_default=True)
    remove_reference_numbers = fields.Boolean(load_default=True)
    use_auto_editor = fields.Boolean(load_default=False)
    keep_original_wav_ae = fields.Boolean(load_default=False)
    ae_threshold = fields.Float(load_default=0.06, validate=in_range(0.0, 1.0))
    ae_margin = fields.Float(load_default=0.2, validate=in_range(0.0, 1.0))
    normalize_audio = fields.Boolean(load_default=False)
    normalize_method = fields.String(load_default="ebu", validate=one_of(NORMALIZE_METHODS))
    # FFmpeg loudnorm's own limits: a value outside them is a 400 here, not a failed filter later
    normalize_level = fields.Float(load_default=-24.0, validate=in_range(-70.0, -5.0))
    normalize_tp = fields.Float(load_default=-2.0, validate=in_range(-9.0, 0.0))
    normalize_lra = fields.Float(load_default=7.0, validate=in_range(1.0, 50.0))
    sound_words_field = fields.String(load_default="", validate=validate.Length(max=10_000))
    speed_factor = fields.Float(load_default=1.0, validate=in_range(*PEER_SPEED_RANGE))
    speed_factor_library = fields.String(load_default="auto", allow_none=True, validate=one_of(SPEED_LIBRARIES))
    project = fields.String(load_default=None, allow_none=True)
    folder = fields.String(load_default=None, allow_none=True)
    trim = fields.Boolean(load_default=False)
    trim_threshold_ms = WholeNumber(load_default=200, validate=in_range(50, 1000))
    export_formats = fields.List(fields.String(validate=one_of(EXPORT_FORMATS)),
                                 load_default=lambda: list(DEFAULT_EXPORT_FORMATS),
                                 validate=validate.Length(min=1, error="Name at least one format."))
    disable_watermark = fields.Boolean(load_default=True)
    # ours: inline speakers in `text` ("[S1] Hi. [S2] Hello.") and their library voices, and the gap
    speakers = speakers_field()
    gap_ms = WholeNumber(load_default=None, allow_none=True, validate=in_range(0, GAP_MS_MAX))

    def __init__(self, *, max_input_chars: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_input_chars = max_input_chars
        self._sent: frozenset[str] = frozenset()

    @pre_load
    def _remember(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            return data
        self._sent = frozenset(data)
        formats = data.get("export_formats")
        if isinstance(formats, list):
            data = {**data, "export_formats": [f.lower() if isinstance(f, str) else f for f in formats]}
        return data

    @validates("text")
    def _check_text(self, value: str, data_key: str) -> None:
        if not value.strip():
            raise ValidationError("Must contain text to speak.")
        if len(value) > self.max_input_chars:
            raise ValidationError(f"Longer than the limit of {self.max_input_chars} characters ({len(value)}).")

    @validates("reference_audio_filename")
    def _check_reference(self, value: str | None, data_key: str) -> None:
        if value is not None:
            reference_voice_name(value)

    @validates("speakers")
    def _check_speakers(self, value: dict[str, str] | None, data_key: str) -> None:
        for voice in (value or {}).values():
            reference_voice_name(voice)

    @validates("project")
    def _check_project(self, value: str | None, data_key: str) -> None:
        if value is not None:
            clean_folder(value)

    @validates("folder")
    def _check_folder(self, value: str | None, data_key: str) -> None:
        if value is not None:
            clean_folder(value)

    @post_load
    def _build(self, d: dict[str, Any], **_: Any) -> TtsRequest:
        project = clean_folder(d["project"]) if d["project"] else ""
        folder = clean_folder(d["folder"]) if d["folder"] else ""
        if project and folder and project != folder:
            raise ValidationError({"folder": ["Cannot differ from project (folder is an alias of project)."]})
        reference = d["reference_audio_filename"]
        return TtsRequest(
            text=d["text"], reference_voice=reference_voice_name(reference) if reference else None,
            exaggeration=d["exaggeration"], temperature=d["temperature"], cfg_weight=d["cfg_weight"],
            seed=d["seed"] or None, language=d["language"], speed_factor=d["speed_factor"],
            speed_factor_library=d["speed_factor_library"] or "auto",
            text_options=TextOptions(d["to_lowercase"], d["normalize_spacing"], d["fix_dot_letters"],
                                     d["remove_reference_numbers"], d["sound_words_field"]),
            enable_batching=d["enable_batching"], smart_batch_short_sentences=d["smart_batch_short_sentences"],
            candidates=Candidates(d["num_candidates_per_chunk"], d["max_attempts_per_candidate"],
                                  d["bypass_whisper_checking"], d["whisper_model_name"], d["use_faster_whisper"],
                                  d["use_longest_transcript_on_fail"]),
            after=AfterSynthesis(d["normalize_audio"], d["normalize_method"], d["normalize_level"],
                                 d["normalize_tp"], d["normalize_lra"], d["use_auto_editor"], d["ae_threshold"],
                                 d["ae_margin"], d["keep_original_wav_ae"], d["trim"], d["trim_threshold_ms"]),
            folder=project or folder, export_formats=tuple(dict.fromkeys(d["export_formats"])),
            disable_watermark=d["disable_watermark"], explicit=self._sent & frozenset(self.fields),
            speakers={label: reference_voice_name(voice) for label, voice in d["speakers"].items()}
            if d["speakers"] is not None else None, gap_ms=d["gap_ms"], model=d["model"])


class ExtendedQuerySchema(Schema):
    """The query string of POST /api/v1/tts (and concat): response_mode and return_format; other
    parameters are ignored, as the peer (FastAPI) ignores them."""

    class Meta:
        unknown = EXCLUDE

    response_mode = fields.String(load_default="stream", validate=one_of((*RESPONSE_MODES, *STREAM_SYNONYMS)))
    return_format = fields.String(load_default=None, allow_none=True, validate=one_of(EXPORT_FORMATS))

    @post_load
    def _synonyms(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The peer streams for "file" and "download" too."""
        mode = data["response_mode"]
        return {**data, "response_mode": "stream" if mode in STREAM_SYNONYMS else mode}
