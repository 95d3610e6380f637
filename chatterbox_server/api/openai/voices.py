"""The OpenAI family's voice library (as travisvn/chatterbox-tts-api has it): /v1/voices with the
default voice, aliases, rename, download and cleanup. Served under /v1 and at the root.

Workspaces (security.guards): a key sees its own voices, shared ones and the built-in ones; another
key's private voice answers 404 like one that does not exist. PATCH /v1/voices/{name} (ours) shares
or unshares a voice."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file

from chatterbox_server.api import disk_quota
from chatterbox_server.api.bodies import json_or_none
from chatterbox_server.api.common import upload_flag
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.store.voice_library import StoredVoice, VoiceLibrary, check_name

bp = Blueprint("voice_library", __name__)


def voice_info(voice: StoredVoice, library: VoiceLibrary) -> dict[str, Any]:
    """Our fields (name is the voice id) plus the peer's voice metadata fields."""
    meta = voice.meta
    return {**voice.describe(), "display_name": voice.display_name, "filename": f"{voice.stem}.wav",
            "original_filename": meta.get("original_filename"), "file_extension": ".wav",
            "file_size": meta.get("file_size_bytes"), "upload_date": meta.get("created_date"),
            "language": meta.get("language") or "en", "aliases": library.aliases_of(voice.name),
            "folder_path": voice.folder or None, "exists": True, "shared": voice.shared, "owner": voice.owner}


def sent_fields() -> dict[str, Any]:
    """The form fields, and the keys of a JSON body (the peer takes forms; JSON is friendlier)."""
    source: dict[str, Any] = dict(request.form)
    if request.is_json:
        body = json_or_none()
        if isinstance(body, dict):
            source.update(body)
    return source


def field(*names: str) -> str:
    """A form field, or the same key of a JSON body."""
    source = sent_fields()
    for name in names:
        value = source.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ApiError(400, f"{names[0]}: required (a form field or a JSON key)", param=names[0], code="missing_field")


def shared_flag(value: Any) -> bool:
    """`shared`: true or false (a JSON boolean, or a form's true/false, 1/0, yes/no, on/off)."""
    return value if isinstance(value, bool) else upload_flag(value, "shared")


def find(library: VoiceLibrary, name: str) -> StoredVoice:
    """A voice the caller sees (its own, a shared one), by id, bare name or alias; 404 otherwise."""
    stored = library.find(library.aliases.get(name, name), guards.owner_check())
    if stored is None:
        raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return stored


@bp.get("/voices")
def list_voices() -> Response:
    return jsonify(voices_listing(services()))


def voices_listing(svc: Services) -> dict[str, Any]:
    info = svc.engine_info()
    library = svc.voices
    owns = guards.owner_check()
    voices = [voice_info(voice, library) for voice in library.list(owns)]
    return {"object": "list", "default": library.default_for(owns) or (info.default_voice if info else "default"),
            "built_in": list(info.voices) if info else [], "aliases": library.visible_aliases(owns), "voices": voices,
            "count": len(voices), "cloning_supported": bool(info and info.supports_cloning)}


@bp.post("/voices")
def upload_voice() -> tuple[Response, int]:
    name = field("name", "voice_name")
    upload = request.files.get("voice_file")
    check_name(name)
    if upload is None or not upload.filename:
        raise ApiError(400, "voice_file: a file is required", param="voice_file", code="missing_file")
    language = (request.form.get("language") or "").strip() or None
    shared = shared_flag(request.form.get("shared"))
    library = services().voices
    stored = off_hub(library.add, name, upload.read(), False, "",
                     {"language": language, "original_filename": upload.filename}, guards.workspace(),
                     guards.owner_check(), shared, disk_quota.room_check())
    info = voice_info(stored, library)
    return jsonify({**info, "message": "Voice uploaded successfully", "voice": info}), 201


@bp.get("/voices/default")
def get_default() -> Response:
    svc = services()
    library = svc.voices
    owns = guards.owner_check()
    name = library.default_for(owns)
    stored = library.find(name, owns) if name else None
    if stored is not None:
        return jsonify({"default_voice": stored.name, "source": "voice_library",
                        "voice_info": voice_info(stored, library)})
    info = svc.engine_info()
    return jsonify({"default_voice": None, "source": "built_in",
                    "built_in_voice": info.default_voice if info else "default"})


@bp.post("/voices/default")
def set_default() -> Response:
    name = field("voice_name", "name")
    library = services().voices
    stored = library.set_default(name, guards.owner_check(), require_shared=guards.keys_enabled())
    if stored is None:
        raise ApiError(404, f"voice {name!r} not found in the voice library", param="voice_name",
                       code="voice_not_found")
    return jsonify({"message": "Default voice updated successfully", "default_voice": stored.name,
                    "voice_info": voice_info(stored, library)})


@bp.delete("/voices/default")
def reset_default() -> Response:
    svc = services()
    svc.voices.clear_default()
    info = svc.engine_info()
    fallback = svc.voices.default_for(guards.owner_check()) or None
    return jsonify({"message": "Default voice reset to the server default", "default_voice": fallback,
                    "source": "voice_library" if fallback else "built_in",
                    "built_in_voice": info.default_voice if info else "default"})


@bp.get("/voices/all-names")
def all_names() -> Response:
    library = services().voices
    owns = guards.owner_check()
    names = sorted({*library.names(owns), *library.visible_aliases(owns)})
    return jsonify({"voice_names": names, "count": len(names)})


@bp.post("/voices/cleanup")
def cleanup() -> Response:
    if guards.keys_enabled() and not guards.sees_all():
        raise ApiError(403, "cleanup acts on every workspace's files: it needs an admin key", code="admin_only")
    removed = services().voices.cleanup()
    return jsonify({"message": "Cleanup completed", "removed_voices": removed, "count": len(removed)})


@bp.get("/voices/<path:name>")
def get_voice(name: str) -> Response:
    library = services().voices
    info = voice_info(find(library, name), library)
    return jsonify({**info, "voice": info})


@bp.get("/voices/<path:name>/download")
def download_voice(name: str) -> Response:
    stored = find(services().voices, name)
    response = send_file(stored.path, mimetype="audio/wav", as_attachment=True, download_name=f"{stored.stem}.wav")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.put("/voices/<path:name>")
def rename_voice(name: str) -> Response:
    new_name = field("new_name", "name")
    library = services().voices
    stored = library.rename(find(library, name).name, new_name, guards.owner_check())
    if stored is None:
        raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return jsonify({"message": "Voice renamed successfully", "old_name": name, "new_name": stored.name,
                    "voice": voice_info(stored, library)})


@bp.patch("/voices/<path:name>")
def share_voice(name: str) -> Response:
    """Ours: `shared` true lets every key see and use the voice; only its owner or an admin changes it."""
    sent = sent_fields()
    if "shared" not in sent:
        raise ApiError(400, "shared: required (true or false)", param="shared", code="missing_field")
    shared = shared_flag(sent["shared"])
    library = services().voices
    stored = library.update(find(library, name).name, {"shared": shared}, guards.owner_check())
    if stored is None:
        raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return jsonify({"message": "Voice updated successfully", "voice": voice_info(stored, library)})


@bp.delete("/voices/<path:name>")
def delete_voice(name: str) -> Response:
    library = services().voices
    deleted = library.delete(find(library, name).name, guards.owner_check())
    if not deleted:
        raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return jsonify({"deleted": name, "message": "Voice deleted successfully", "voice_name": name,
                    "deleted_files": deleted})


@bp.get("/voices/<path:name>/aliases")
def list_aliases(name: str) -> Response:
    library = services().voices
    stored = find(library, name)
    aliases = library.aliases_of(stored.name)
    return jsonify({"voice_name": stored.name, "aliases": aliases, "count": len(aliases)})


@bp.post("/voices/<path:name>/aliases")
def add_alias(name: str) -> tuple[Response, int]:
    alias = field("alias")
    library = services().voices
    aliases = library.add_alias(find(library, name).name, alias, guards.owner_check())
    if aliases is None:
        raise ApiError(404, f"voice {name!r} not found", param="name", code="voice_not_found")
    return jsonify({"message": "Alias added successfully", "voice_name": name, "alias": alias,
                    "aliases": aliases}), 201


@bp.delete("/voices/<path:name>/aliases/<alias>")
def remove_alias(name: str, alias: str) -> Response:
    return _remove_alias(name, alias)


@bp.delete("/voices/<path:name>/aliases")
def remove_alias_by_field(name: str) -> Response:
    alias = request.args.get("alias") or field("alias")
    return _remove_alias(name, alias)


def _remove_alias(name: str, alias: str) -> Response:
    library = services().voices
    stored = find(library, name)
    if alias in library.env_aliases and alias not in library.state.read().aliases:
        raise ApiError(409, f"alias {alias!r} is set by CHATTERBOX_VOICE_ALIASES; change it there", param="alias",
                       code="alias_fixed")
    aliases = library.remove_alias(stored.name, alias, guards.owner_check())
    if aliases is None:
        raise ApiError(404, f"voice {name!r} has no alias {alias!r}", param="alias", code="alias_not_found")
    return jsonify({"message": "Alias removed successfully", "voice_name": stored.name, "alias": alias,
                    "aliases": aliases})
