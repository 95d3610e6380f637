"""The VC-inputs store under DATA_DIR/vc_inputs: audio a client uploads once and then names in
`POST /api/v1/vc` (`input_audio_source`), optionally in folders.

A file is kept as uploaded (after it decoded as audio within the VC limits) under a sanitised name,
with `{name}.json` beside it (its description text, format, duration, dates). Writes are atomic and
an upload publishes its name under the store lock, so instances sharing DATA_DIR never clobber one
another. No Flask or gevent here.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from chatterbox_server.errors import ApiError
from chatterbox_server.store import files, paths

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4")
SIDECAR = ".json"
LOCK_FILE = "vc_inputs.lock"
Owns = Callable[[str | None], bool]       # whether the caller may see a thing of this owner (security.guards)


def everyone(_: str | None) -> bool:
    return True


def safe_filename(filename: str, sniffed_format: str) -> str:
    """An upload's name as a store name: "My talk (1).MP3" -> "My_talk_1.mp3". The extension is the
    sniffed format's when the client's is not an audio extension."""
    base = os.path.basename((filename or "").replace("\\", "/"))
    stem, extension = os.path.splitext(base)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:100] or "input"
    extension = extension.lower() if extension.lower() in AUDIO_EXTENSIONS else "." + sniffed_format
    return stem + extension


class VcInputStore:
    def __init__(self, directory: str, state_dir: str) -> None:
        self.directory = directory
        self.state_dir = state_dir
        os.makedirs(directory, exist_ok=True)

    def add(self, data: bytes, name: str, folder: str, meta: dict[str, Any], overwrite: bool,
            owner: str | None = None, owns: Owns = everyone) -> dict[str, Any]:
        """Store checked audio bytes as `folder/name` for `owner`; 409 when it exists and `overwrite`
        is false, or when it is another workspace's (which no overwrite replaces)."""
        relative, path = paths.resolve(self.directory, paths.join(folder, name), "folder_path", allow_empty=False)
        with files.locked(self.state_dir, LOCK_FILE):
            if os.path.exists(path) and not owns(self.owner(path)):
                raise ApiError(409, f"the name {relative!r} is taken; choose another file name or folder",
                               param="vc_input_file", code="file_exists")
            if os.path.exists(path) and not overwrite:
                raise ApiError(409, f"VC input {relative!r} exists; send overwrite=true to replace it",
                               param="vc_input_file", code="file_exists")
            meta = {**meta, "owner": owner}
            os.makedirs(os.path.dirname(path), exist_ok=True)
            files.atomic_write(path, data)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            files.write_json(path + SIDECAR, {**meta, "created_date": now, "upload_date": now})
        return self.describe(relative)

    @staticmethod
    def owner(path: str) -> str | None:
        """The workspace of the stored input at `path`; None: made without keys or before workspaces."""
        owner = (files.read_json(path + SIDECAR) or {}).get("owner")
        return owner if isinstance(owner, str) else None

    def locate(self, reference: str, param: str, owns: Owns = everyone) -> tuple[str, str] | None:
        """(relative, absolute) path of a stored input named with or without its folder; a bare name
        is looked up in every folder and must match exactly one file. None when there is none, or
        when it is another workspace's than `owns` allows."""
        relative, path = paths.resolve(self.directory, reference, param, allow_empty=False)
        if relative.endswith(SIDECAR):
            return None
        if os.path.isfile(path) and not os.path.islink(path):
            return (relative, path) if owns(self.owner(path)) else None
        if "/" not in relative:
            matches = [paths.join(folder, name) for folder, name in paths.walk_files(self.directory)
                       if name == relative and owns(self.owner(os.path.join(self.directory, folder, name)))]
            if len(matches) == 1:
                return matches[0], paths.confine(self.directory, matches[0], param)
        return None

    def names(self, owns: Owns = everyone) -> list[str]:
        return [paths.join(folder, name) for folder, name in paths.walk_files(self.directory)
                if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS
                and owns(self.owner(os.path.join(self.directory, folder, name)))]

    def describe(self, relative: str) -> dict[str, Any]:
        """The peer's VCInputFileMetadata of one stored input."""
        path = paths.confine(self.directory, relative, "filename")
        meta = files.read_json(path + SIDECAR) or {}
        info = os.stat(path)
        folder, name = paths.split(relative)
        created = meta.get("created_date") or datetime.fromtimestamp(info.st_mtime, timezone.utc).isoformat()
        return {"filename": name, "folder_path": folder or None, "text": meta.get("text"),
                "file_size_bytes": info.st_size, "duration_seconds": meta.get("duration_seconds"),
                "sample_rate": meta.get("sample_rate"), "format": meta.get("format") or name.rsplit(".", 1)[-1],
                "created_date": created, "upload_date": meta.get("upload_date") or created, "path": relative}

    def scan(self, owns: Owns = everyone) -> list[dict[str, Any]]:
        """Every stored input `owns` allows, newest first, then by path (a total order, for stable pages)."""
        entries = []
        for relative in self.names(owns):
            try:
                entries.append(self.describe(relative))
            except FileNotFoundError:       # deleted by another instance while we listed
                continue
        entries.sort(key=lambda entry: entry["path"])
        entries.sort(key=lambda entry: entry["created_date"], reverse=True)
        return entries

    def delete(self, reference: str, param: str = "filename", owns: Owns = everyone) -> list[str]:
        found = self.locate(reference, param, owns)
        if found is None:
            return []
        relative, path = found
        with files.locked(self.state_dir, LOCK_FILE):
            deleted = [relative] if files.remove(path) else []
            if files.remove(path + SIDECAR):
                deleted.append(relative + SIDECAR)
        return deleted
