"""Metadata of the voice library: each voice's sidecar fields and the library's shared state.

A voice `folder/id` is `voices/folder/id.wav` with its metadata in `voices/folder/id.json` beside it.
The library's own state (aliases set through the API and the default voice) is one JSON file in
DATA_DIR/state, changed only under the voices lock, so two server instances sharing DATA_DIR never
lose each other's updates. No Flask or gevent here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from chatterbox_server.errors import ApiError
from chatterbox_server.store import files

ALIAS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}")
DISPLAY_NAME_MAX, DESCRIPTION_MAX, TAG_MAX, TAGS_MAX = 200, 2000, 64, 32
STATE_FILE, LOCK_FILE = "voices.json", "voices.lock"


class MetadataError(ApiError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(400, f"{param}: {message}", param=param, code="invalid_value")


@dataclass
class LibraryState:
    aliases: dict[str, str] = field(default_factory=dict)     # alias -> voice id
    default_voice: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"aliases": self.aliases, "default_voice": self.default_voice}


class StateFile:
    """DATA_DIR/state/voices.json, re-read when another process has replaced it."""

    def __init__(self, state_dir: str) -> None:
        self.directory = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self._cache: tuple[tuple[int, int], LibraryState] | None = None

    def read(self) -> LibraryState:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return LibraryState()
        key = (info.st_ino, info.st_mtime_ns)
        if self._cache is None or self._cache[0] != key:
            raw = files.read_json(self.path) or {}
            aliases = raw["aliases"] if isinstance(raw.get("aliases"), dict) else {}
            default = raw.get("default_voice") if isinstance(raw.get("default_voice"), str) else None
            self._cache = (key, LibraryState({str(k): str(v) for k, v in aliases.items()}, default))
        cached = self._cache[1]
        return LibraryState(dict(cached.aliases), cached.default_voice)

    def write(self, state: LibraryState) -> None:
        os.makedirs(self.directory, exist_ok=True)
        files.write_json(self.path, state.to_json())

    def lock(self):
        return files.locked(self.directory, LOCK_FILE)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean_tags(value: Any, param: str = "tags") -> list[str]:
    """Tags as a list or one comma-separated string (a form field)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(tag, str) for tag in items):
        raise MetadataError(param, "must be a list of strings or one comma-separated string")
    tags = list(dict.fromkeys(tag.strip() for tag in items if tag.strip()))
    if len(tags) > TAGS_MAX or any(len(tag) > TAG_MAX for tag in tags):
        raise MetadataError(param, f"at most {TAGS_MAX} tags of up to {TAG_MAX} characters")
    return tags


def clean_text(value: Any, param: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MetadataError(param, "must be a string")
    if "\x00" in value or len(value) > limit:
        raise MetadataError(param, f"must be text of at most {limit} characters")
    return value.strip() or None


def check_alias(alias: str) -> str:
    alias = (alias or "").strip()
    if not ALIAS_PATTERN.fullmatch(alias) or alias.endswith((" ", ".")):
        raise MetadataError("alias", "aliases are 1-100 ASCII letters, digits, space, '_', '.' or '-', "
                                     "starting with a letter or digit")
    return alias


def sidecar(duration: float, source_format: str, sample_rate: int, size: int, **fields: Any) -> dict[str, Any]:
    """A new voice's metadata; `fields` are the client's (display_name, description, tags, ...)."""
    created = now_iso()
    return {"duration_seconds": duration, "source_format": source_format, "sample_rate": sample_rate,
            "file_size_bytes": size, "created": datetime.now(timezone.utc).timestamp(), "created_date": created,
            "display_name": fields.get("display_name"), "description": fields.get("description"),
            "tags": fields.get("tags") or [], "default_parameters": fields.get("default_parameters") or {},
            "language": fields.get("language"), "original_filename": fields.get("original_filename"),
            "usage_count": 0, "last_used": None}
