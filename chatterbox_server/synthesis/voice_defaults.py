"""A voice's default_parameters fill the synthesis fields a request leaves out (both API families)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema

from chatterbox_server.store.voice_library import Owns, VoiceLibrary, everyone

# default_parameters use the Extended names; the OpenAI family calls speed_factor `speed`
EXTENDED_NAMES = {"speed": "speed_factor"}
OPENAI_NAMES = {"speed_factor": "speed"}


def merge_defaults(data: Mapping[str, Any], defaults: Mapping[str, Any], accepted: set[str],
                   renames: Mapping[str, str]) -> dict[str, Any]:
    """`data` with every default it does not set itself, among the fields the schema accepts."""
    merged = dict(data)
    for key, value in defaults.items():
        key = renames.get(key, key)
        if key in accepted and key not in merged:
            merged[key] = value
    return merged


def with_voice_defaults(library: VoiceLibrary, data: dict[str, Any], voice_field: str, schema: type[Schema],
                        renames: Mapping[str, str], owns: Owns = everyone) -> dict[str, Any]:
    """The request body with the default_parameters of the library voice it names (or of the
    library's default voice when it names none). Anything unusable is left to the schema's checks."""
    requested = data.get(voice_field)
    if requested is not None and not isinstance(requested, str):
        return data
    stored = library.stored_for(requested, owns)      # never another workspace's private voice
    if stored is None or not stored.default_parameters:
        return data
    accepted = set(schema._declared_fields) - {"input", "text", voice_field}
    return merge_defaults(data, stored.default_parameters, accepted, renames)
