"""Generation metadata of the files in DATA_DIR/outputs, and the listing built from it.

Every generation writes `{base}.json` beside its audio files (`{base}.wav`, `{base}.mp3`, ...) with
its type, parameters and sources. The sidecar is written once, atomically, under a base name no one
else can hold (see OutputStore.store), so instances sharing DATA_DIR never contend for it; it
survives restarts, and retention deletes it with the last of its files. No Flask or gevent here.
"""
from __future__ import annotations

import os
import wave
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from chatterbox_server.store import files, paths
from chatterbox_server.store.outputs import SIDECAR_SUFFIX, OutputStore

AUDIO_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus", "aac": "aac", "m4a": "aac",
                 "ogg": "ogg", "pcm": "pcm"}
GENERATION_TYPES = ("tts", "vc", "concat")


def base_of(filename: str) -> str:
    return filename.split(".", 1)[0]


def record_generation(store: OutputStore, written: Mapping[str, str], generation_type: str,
                      parameters: Mapping[str, Any], *, duration_seconds: float | None = None,
                      sample_rate: int | None = None, source_files: list[str] | None = None,
                      extra: Mapping[str, Any] | None = None, owner: str | None = None) -> str:
    """Store the metadata of one generation beside its files. `written` is what OutputStore.store
    returned ({format or extension: relative file name}); `owner` is the workspace (the API key's
    name; None without keys). Returns the sidecar's relative name."""
    first = next(iter(written.values()))
    folder, name = paths.split(first)
    relative = paths.join(folder, base_of(name) + SIDECAR_SUFFIX)
    path = paths.confine(store.directory, relative, "filename")
    now = datetime.now(timezone.utc)
    files.write_json(path, {
        "generation_type": generation_type, "parameters": dict(parameters),
        "source_files": list(source_files or []), "created": now.timestamp(),
        "created_date": now.isoformat(timespec="milliseconds"), "duration_seconds": duration_seconds,
        "sample_rate": sample_rate, "files": {key: paths.split(value)[1] for key, value in written.items()},
        **dict(extra or {}), "owner": owner})
    return relative


def scan(store: OutputStore) -> list[dict[str, Any]]:
    """One entry per audio file (the peer's GeneratedFileMetadata), newest first, then by path."""
    sidecars: dict[str, dict[str, Any] | None] = {}
    entries = []
    for folder, name in paths.walk_files(store.directory):
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if extension not in AUDIO_FORMATS:
            continue
        relative = paths.join(folder, name)
        key = paths.join(folder, base_of(name))
        if key not in sidecars:
            sidecars[key] = files.read_json(os.path.join(store.directory, key + SIDECAR_SUFFIX))
        try:
            entries.append(_entry(store, folder, name, relative, sidecars[key]))
        except FileNotFoundError:       # deleted (another instance, retention) after the listing
            continue
    entries.sort(key=lambda entry: (-entry["_created"], entry["path"]))
    return entries


def _entry(store: OutputStore, folder: str, name: str, relative: str, meta: dict[str, Any] | None) -> dict[str, Any]:
    path = os.path.join(store.directory, relative)
    info = os.stat(path)
    meta = meta or {}
    created = float(meta.get("created") or info.st_mtime)
    generation_type = meta.get("generation_type") or next(
        (kind for kind in GENERATION_TYPES if name.startswith(kind + "_")), "unknown")
    duration = meta.get("duration_seconds")
    if duration is None and name.endswith(".wav"):
        duration = _wav_seconds(path)
    return {"filename": name, "generation_type": generation_type,
            "created_date": meta.get("created_date") or datetime.fromtimestamp(created, timezone.utc).isoformat(),
            "file_size_bytes": info.st_size, "duration_seconds": duration,
            "format": AUDIO_FORMATS[name.rsplit(".", 1)[-1].lower()], "parameters": meta.get("parameters"),
            "source_files": meta.get("source_files") or None, "folder_path": folder or None,
            "path": relative, "_created": created, "_owner": _owner(meta)}


def _owner(meta: Mapping[str, Any]) -> str | None:
    owner = meta.get("owner")
    return owner if isinstance(owner, str) else None


def owner_of(path: str) -> str | None:
    """The workspace that made the output file at `path` (from its base name's metadata); None
    when it has none: made without keys, before workspaces, or by hand."""
    directory, name = os.path.split(path)
    return _owner(files.read_json(os.path.join(directory, base_of(name) + SIDECAR_SUFFIX)) or {})


def public(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if not key.startswith("_")}


def _wav_seconds(path: str) -> float | None:
    try:
        with wave.open(path, "rb") as audio:
            return round(audio.getnframes() / audio.getframerate(), 3)
    except (wave.Error, EOFError, OSError, ZeroDivisionError):
        return None


def delete(store: OutputStore, relative: str) -> list[str]:
    """Delete one output file, and its base name's metadata when no file of it is left."""
    path = store.locate(relative)
    if path is None:
        return []
    folder, name = paths.split(relative)
    deleted = [relative] if files.remove(path) else []
    directory = os.path.dirname(path)
    base = base_of(name)
    if deleted and not any(other.startswith(base + ".") and not other.endswith(SIDECAR_SUFFIX)
                           for other in os.listdir(directory)):
        if files.remove(os.path.join(directory, base + SIDECAR_SUFFIX)):
            deleted.append(paths.join(folder, base + SIDECAR_SUFFIX))
    return deleted
