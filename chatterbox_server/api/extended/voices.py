"""The Extended API's voice library: /api/v1/voice(s) with folders, metadata and paging."""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields

from chatterbox_server.api import disk_quota
from chatterbox_server.api.bodies import form_fields, json_object, load
from chatterbox_server.api.common import deletion, list_query, paged, require_confirm, require_criteria, upload_flag
from chatterbox_server.api.extended.fields import voice_name_from_filename
from chatterbox_server.api.extended.tts_schema import ExtendedTtsSchema
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.store import paging, paths
from chatterbox_server.store.voice_library import NAME_PATTERN, StoredVoice, VoiceLibrary
from chatterbox_server.store.voices_meta import (
    DESCRIPTION_MAX,
    DISPLAY_NAME_MAX,
    MetadataError,
    clean_tags,
    clean_text,
)
from chatterbox_server.synthesis.budget import check_stored_sound_words
from chatterbox_server.synthesis.requests import first_error

bp = Blueprint("extended_voices", __name__)
# default_parameters may hold any synthesis field of POST /api/v1/tts but these
NOT_DEFAULTS = ("text", "reference_audio_filename", "export_formats", "speakers", "gap_ms")  # per script, not per voice


def voice_entry(voice: StoredVoice, library: VoiceLibrary) -> dict[str, Any]:
    """The peer's VoiceMetadata, plus our `id` and the name to send as reference_audio_filename."""
    meta = voice.meta
    return {"name": voice.display_name, "id": voice.name, "url": f"{voice.name}.wav", "filename": f"{voice.stem}.wav",
            "reference_audio_filename": f"{voice.name}.wav", "description": meta.get("description"),
            "duration_seconds": round(voice.duration_seconds, 3), "sample_rate": meta.get("sample_rate", 24000),
            "file_size_bytes": meta.get("file_size_bytes"), "format": "wav", "source_format": voice.source_format,
            "default_parameters": voice.default_parameters, "tags": meta.get("tags") or [],
            "created_date": meta.get("created_date"), "created": voice.created, "last_used": meta.get("last_used"),
            "usage_count": meta.get("usage_count", 0), "folder_path": voice.folder or None,
            "aliases": library.aliases_of(voice.name), "shared": voice.shared, "owner": voice.owner}


def check_default_parameters(value: Any) -> dict[str, Any]:
    """A JSON object (or a JSON string of one, from a form) of /api/v1/tts fields with valid values."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise MetadataError("default_parameters", "is not valid JSON") from None
        except RecursionError:      # no ValueError
            raise MetadataError("default_parameters", "is nested too deeply") from None
    if not isinstance(value, dict):
        raise MetadataError("default_parameters", "must be a JSON object of synthesis fields")
    schema = ExtendedTtsSchema(max_input_chars=current_app.config["SETTINGS"].max_input_chars)
    allowed = sorted(set(schema.fields) - set(NOT_DEFAULTS))
    unknown = sorted(set(value) - set(allowed) - {"speed"})
    if unknown:
        raise MetadataError("default_parameters", f"{unknown[0]!r} is not a synthesis field; use {', '.join(allowed)}")
    renamed = {("speed_factor" if key == "speed" else key): item for key, item in value.items()}
    try:
        schema.load({"text": "x", **renamed})
    except ValidationError as exc:
        field, message = first_error(exc)
        raise MetadataError("default_parameters", f"{field}: {message}") from None
    words = renamed.get("sound_words_field")
    if isinstance(words, str) and words.strip():
        settings = current_app.config["SETTINGS"]
        check_stored_sound_words(words, settings.max_sound_words, settings.max_input_chars)
    return renamed


class MetadataUpdateSchema(Schema):
    """PUT /api/v1/voice/{filename}/metadata (VoiceMetadataUpdateRequest)."""

    class Meta:
        unknown = RAISE

    name = fields.Raw(load_default=None)
    description = fields.Raw(load_default=None)
    tags = fields.Raw(load_default=None)
    folder_path = fields.Raw(load_default=None)
    default_parameters = fields.Raw(load_default=None)
    shared = fields.Raw(load_default=None)


class VoiceUploadForm(Schema):
    """The form fields of POST /api/v1/voice (the file itself is `voice_file`)."""

    class Meta:
        unknown = RAISE

    name = fields.String(load_default=None)
    description = fields.String(load_default=None)
    tags = fields.String(load_default=None)
    folder_path = fields.String(load_default=None)
    default_parameters = fields.String(load_default=None)
    overwrite = fields.String(load_default=None)
    language = fields.String(load_default=None)
    shared = fields.String(load_default=None)


def metadata_changes(data: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if data.get("name") is not None:
        changes["display_name"] = clean_text(data["name"], "name", DISPLAY_NAME_MAX)
    if data.get("description") is not None:
        changes["description"] = clean_text(data["description"], "description", DESCRIPTION_MAX)
    if data.get("tags") is not None:
        changes["tags"] = clean_tags(data["tags"])
    if data.get("default_parameters") is not None:
        changes["default_parameters"] = check_default_parameters(data["default_parameters"])
    if data.get("folder_path") is not None:
        if not isinstance(data["folder_path"], str):
            raise MetadataError("folder_path", "must be a string")
        changes["folder_path"] = paths.clean_relative(data["folder_path"], "folder_path")
    if data.get("shared") is not None:
        shared = data["shared"]
        changes["shared"] = shared if isinstance(shared, bool) else upload_flag(shared, "shared")
    return changes


def voice_id_for(name: str | None, filename: str) -> tuple[str, str | None]:
    """(voice id, display name). A `name` that is a valid id is the id; any other text is the display
    name, and the id comes from it or from the uploaded file's name."""
    if name and NAME_PATTERN.fullmatch(name):
        return name, None
    voice_id = voice_name_from_filename(name or "") or voice_name_from_filename(filename)
    if not voice_id:
        raise ApiError(400, "name: the file name gives no usable voice name; send a name field", param="name",
                       code="invalid_voice_name")
    return voice_id, name or None


@bp.get("/voices")
def list_voices() -> Response:
    query = list_query()
    svc = services()
    library = svc.voices
    owns = guards.owner_check()
    entries = [voice_entry(voice, library) for voice in library.list(owns)]
    entries = [entry for entry in entries
               if paging.in_folder(entry["folder_path"] or "", query["folder"])
               and (not query["tag"] or query["tag"] in entry["tags"])
               and paging.matches(query["search"], (entry["name"], entry["id"], entry["description"],
                                                    entry["folder_path"], *entry["tags"]))]
    info = svc.engine_info()
    body = paged(entries, query, "voices")
    body.update({"default": library.default_for(owns) or (info.default_voice if info else "default"),
                 "built_in": list(info.voices) if info else [],
                 "cloning_supported": bool(info and info.supports_cloning)})
    return jsonify(body)


@bp.post("/voice")
def upload_voice() -> tuple[Response, int]:
    form = load(VoiceUploadForm(), form_fields(("voice_file",)))
    upload = request.files.get("voice_file")
    if upload is None or not upload.filename:
        raise ApiError(400, "voice_file: a file is required", param="voice_file", code="missing_file")
    voice_id, display_name = voice_id_for(form["name"], upload.filename)
    changes = metadata_changes({**form, "name": display_name})
    folder = changes.pop("folder_path", "")
    shared = changes.pop("shared", False)
    fields_ = {**changes, "original_filename": upload.filename, "language": form["language"]}
    library = services().voices
    stored = off_hub(library.add, voice_id, upload.read(), upload_flag(form["overwrite"], "overwrite"), folder,
                     fields_, guards.workspace(), guards.owner_check(), shared, disk_quota.room_check())
    entry = voice_entry(stored, library)
    return jsonify({"success": True, "message": f"voice {stored.name!r} added",
                    "voice": {**stored.describe(), "display_name": stored.display_name,
                              "reference_audio_filename": f"{stored.name}.wav"},
                    "voice_metadata": entry, "filename": f"{stored.name}.wav"}), 201


@bp.put("/voice/<path:filename>/metadata")
def update_metadata(filename: str) -> Response:
    data = load(MetadataUpdateSchema(), json_object())
    library = services().voices
    library.locate(filename, "filename")
    stored = library.update(filename, metadata_changes(data), guards.owner_check())
    if stored is None:
        raise ApiError(404, f"voice {filename!r} not found", param="filename", code="voice_not_found")
    return jsonify({"success": True, "message": f"metadata of {stored.name!r} updated",
                    "voice_metadata": voice_entry(stored, library), "filename": f"{stored.name}.wav"})


@bp.delete("/voice/<path:filename>")
def delete_voice(filename: str) -> Response:
    query = list_query()
    require_confirm(query, "a voice")
    library = services().voices
    library.locate(filename, "filename")
    deleted = library.delete(filename, guards.owner_check())
    if not deleted:
        raise ApiError(404, f"voice {filename!r} not found", param="filename", code="voice_not_found")
    return jsonify(deletion(deleted, "voice(s)"))


@bp.delete("/voices")
def delete_voices() -> Response:
    query = list_query()
    require_confirm(query, "voices")
    require_criteria(query, ("filenames", "folder", "tag", "search"), "voices")
    library = services().voices
    wanted = set(paging.name_list(query["filenames"]))
    for name in wanted:
        library.locate(name, "filenames")
    deleted: list[str] = []
    owns = guards.owner_check()
    for voice in library.list(owns):
        if not owns(voice.owner):          # another workspace's shared voice: never in a bulk delete
            continue
        entry = voice_entry(voice, library)
        if wanted and not wanted & {voice.name, entry["url"], voice.stem, f"{voice.stem}.wav"}:
            continue
        if not paging.in_folder(voice.folder, query["folder"]):
            continue
        if query["tag"] and query["tag"] not in entry["tags"]:
            continue
        if not paging.matches(query["search"], (entry["name"], voice.name, entry["description"], *entry["tags"])):
            continue
        deleted += library.delete(voice.name, owns)
    return jsonify(deletion(deleted, "voice(s)"))


@bp.get("/voices/folders")
def voice_folders() -> Response:
    library = services().voices
    names = library.names(guards.owner_check())
    tree = paths.folder_tree(library.directory, names, only_leading_to=not guards.sees_all())
    return jsonify({"success": True, **tree})
