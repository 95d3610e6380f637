"""The voice library: voices under DATA_DIR/voices (in folders), their metadata beside them, the
library's aliases and default voice, and the rules that turn a request's `voice` into a VoiceRef.

No client string becomes a path without store.paths; every write is atomic. No Flask or gevent here.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.errors import ApiError
from chatterbox_server.security.untrusted_audio import STORED_RATE, decode_reference
from chatterbox_server.store import files, paths
from chatterbox_server.store.voices_meta import LibraryState, StateFile, check_alias, now_iso, sidecar
from workers.engines.base import EngineInfo, VoiceRef

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
                 "verse", "marin", "cedar")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")     # always fullmatch: `$` allows "\n"


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ApiError(400, "voice names are 1-64 letters, digits, '_' or '-', starting with a letter or "
                            "digit", param="name", code="invalid_voice_name")
    if name in ("default", *OPENAI_VOICES):
        raise ApiError(400, f"{name!r} is a reserved voice name", param="name", code="invalid_voice_name")


AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4")
Owns = Callable[[str | None], bool]     # whether the caller may act on a thing of this owner (security.guards)


def everyone(_: str | None) -> bool:
    return True


@dataclass(frozen=True)
class StoredVoice:
    name: str                   # the voice id: "folder/sub/stem", or "stem" at the top of the library
    path: str
    duration_seconds: float
    source_format: str
    created: float
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def folder(self) -> str:
        return paths.split(self.name)[0]

    @property
    def stem(self) -> str:
        return paths.split(self.name)[1]

    @property
    def display_name(self) -> str:
        return self.meta.get("display_name") or self.stem

    @property
    def default_parameters(self) -> dict:
        value = self.meta.get("default_parameters")
        return value if isinstance(value, dict) else {}

    @property
    def owner(self) -> str | None:
        """The workspace (API key name) that uploaded it; None: made without keys or before workspaces."""
        owner = self.meta.get("owner")
        return owner if isinstance(owner, str) else None

    @property
    def shared(self) -> bool:
        """Shared on purpose by its owner: every key sees and uses it; only the owner (or an admin) changes it."""
        return self.meta.get("shared") is True

    def visible_to(self, owns: Owns) -> bool:
        return self.shared or owns(self.owner)

    def describe(self) -> dict:
        return {"name": self.name, "duration_seconds": round(self.duration_seconds, 3),
                "source_format": self.source_format, "created": self.created}


class VoiceLibrary:
    """Voices under `directory` (optionally in folders), their metadata beside them, and the
    library's aliases and default voice in `state_dir`. Every write is atomic; read-modify-writes
    hold the library lock, so server instances sharing DATA_DIR keep each other's changes.

    Workspaces: a voice's metadata records its `owner` (the API key's name) and whether it is
    `shared`. Methods take `owns` (security.guards.owner_check()): a voice is visible when it is
    shared or `owns(owner)`; one that is not answers like one that does not exist. Changing or
    deleting a visible voice also needs `owns(owner)` (else 403). Voice ids are one namespace for
    every workspace (aliases, the default voice and long jobs name voices by id)."""

    def __init__(self, directory: str, max_upload_bytes: int, aliases: dict[str, str] | None = None,
                 default_voice: str = "", state_dir: str | None = None) -> None:
        self.directory = directory
        self.max_upload_bytes = max_upload_bytes
        self.env_aliases = dict(aliases or {})
        self.env_default = default_voice
        self.state = StateFile(state_dir or os.path.join(os.path.dirname(os.path.abspath(directory)), "state"))
        os.makedirs(directory, exist_ok=True)

    @property
    def aliases(self) -> dict[str, str]:
        """CHATTERBOX_VOICE_ALIASES, then the aliases set through the API (which win on a clash)."""
        return {**self.env_aliases, **self.state.read().aliases}

    @property
    def default_voice(self) -> str:
        return self.state.read().default_voice or self.env_default

    # -- reading --------------------------------------------------------------------------------------
    def names(self, owns: Owns = everyone) -> list[str]:
        found = set(paths.walk_files(self.directory))
        every = sorted(paths.join(folder, name[:-5]) for folder, name in found
                       if name.endswith(".json") and NAME_PATTERN.fullmatch(name[:-5])
                       and (folder, name[:-5] + ".wav") in found)
        return every if owns is everyone else [name for name in every if self.get(name, owns) is not None]

    def locate(self, reference: str, param: str = "voice") -> tuple[str, str]:
        """(voice id, absolute path without extension) of a reference like "folder/x.wav"; PathError
        for anything that is not a clean relative path inside the library."""
        relative = paths.clean_relative(reference, param, allow_empty=False)
        folder, name = paths.split(relative)
        stem, extension = os.path.splitext(name)
        if extension.lower() in AUDIO_EXTENSIONS and stem:
            name = stem
        if not NAME_PATTERN.fullmatch(name):
            raise paths.PathError(param, f"{name!r} is not a voice name (letters, digits, '_', '-')")
        voice_id = paths.join(folder, name)
        return voice_id, paths.confine(self.directory, voice_id, param)

    def get(self, reference: str, owns: Owns = everyone) -> StoredVoice | None:
        try:
            voice_id, base = self.locate(reference)
        except paths.PathError:
            return None
        meta = files.read_json(base + ".json")
        audio_path = base + ".wav"
        if meta is None or not os.path.isfile(audio_path) or os.path.islink(audio_path):
            return None
        stored = StoredVoice(voice_id, audio_path, float(meta.get("duration_seconds", 0.0)),
                             str(meta.get("source_format", "wav")), float(meta.get("created", 0.0)), meta)
        return stored if stored.visible_to(owns) else None

    def find(self, reference: str, owns: Owns = everyone) -> StoredVoice | None:
        """A voice by id, or by its bare name when exactly one folder holds a voice of that name
        (among those `owns` lets the caller see)."""
        stored = self.get(reference, owns)
        if stored is not None or "/" in reference:
            return stored
        try:
            wanted = paths.split(self.locate(reference)[0])[1]
        except paths.PathError:
            return None
        matches = [name for name in self.names(owns) if paths.split(name)[1] == wanted]
        return self.get(matches[0], owns) if len(matches) == 1 else None

    def list(self, owns: Owns = everyone) -> list[StoredVoice]:
        return [voice for voice in (self.get(name, owns) for name in self.names(owns)) if voice is not None]

    def visible_aliases(self, owns: Owns = everyone) -> dict[str, str]:
        """The aliases whose target the caller sees (or that name no library voice: a built-in one)."""
        return {alias: target for alias, target in self.aliases.items()
                if owns is everyone or self.get(target) is None or self.get(target, owns) is not None}

    def _changeable(self, reference: str, owns: Owns) -> StoredVoice | None:
        """The voice a change names: None when the caller does not see it; 403 when the caller sees
        it (shared) but it is another workspace's."""
        stored = self.find(reference, owns)
        if stored is not None and not owns(stored.owner):
            raise ApiError(403, f"voice {stored.name!r} is shared by another workspace: only its owner or an "
                                "admin key may change or delete it", param="name", code="voice_not_owned")
        return stored

    def aliases_of(self, voice_id: str) -> list[str]:
        return sorted(alias for alias, target in self.aliases.items() if target == voice_id)

    # -- writing --------------------------------------------------------------------------------------
    def add(self, name: str, data: bytes, replace: bool = False, folder: str = "",
            fields: dict | None = None, owner: str | None = None, owns: Owns = everyone,
            shared: bool = False, room: Callable[[int], None] | None = None) -> StoredVoice:
        """Store an upload as `folder/name` for the workspace `owner`. 409 when the id exists and
        `replace` is false, or when it is another workspace's (which no overwrite replaces; a
        replaced voice keeps its owner). `room` (the disk quota) is told the bytes this adds and
        raises to refuse them."""
        check_name(name)
        folder = paths.clean_relative(folder, "folder_path")
        voice_id, base = self.locate(paths.join(folder, name), "name")
        pcm, source_format, seconds = decode_reference(data, self.max_upload_bytes)
        wav = pcm_to_wav(pcm, STORED_RATE)
        with self.state.lock():
            existing = self.get(voice_id)
            if existing is not None and not owns(existing.owner):
                raise ApiError(409, f"the voice name {voice_id!r} is taken; choose another name or folder",
                               param="name", code="voice_exists")
            if existing is not None and not replace:
                raise ApiError(409, f"voice {voice_id!r} exists; delete it first or send overwrite=true",
                               param="name", code="voice_exists")
            if voice_id in self.aliases:
                raise ApiError(409, f"{voice_id!r} is already an alias", param="name", code="voice_exists")
            if room is not None:
                room(len(wav) - (os.path.getsize(existing.path) if existing is not None else 0))
            meta = sidecar(seconds, source_format, STORED_RATE, len(wav), **(fields or {}))
            meta.update(owner=existing.owner if existing is not None else owner, shared=bool(shared))
            os.makedirs(os.path.dirname(base), exist_ok=True)
            files.atomic_write(base + ".wav", wav)
            files.write_json(base + ".json", meta)
        return self.get(voice_id)

    def delete(self, reference: str, owns: Owns = everyone) -> list[str]:
        """Delete a voice, its aliases and its default-voice setting; the deleted files, [] if none."""
        with self.state.lock():
            stored = self._changeable(reference, owns)
            if stored is None:
                return []
            base = stored.path[:-4]
            deleted = [stored.name + suffix for suffix in (".wav", ".json") if files.remove(base + suffix)]
            self._forget(stored.name, None)
        return deleted

    def update(self, reference: str, changes: dict, owns: Owns = everyone) -> StoredVoice | None:
        """Change metadata fields (display_name, description, tags, default_parameters, language,
        shared) and, with `folder_path`, move the voice to another folder. None when there is no such voice."""
        with self.state.lock():
            stored = self._changeable(reference, owns)
            if stored is None:
                return None
            meta = {**stored.meta, **{k: v for k, v in changes.items() if k not in ("folder_path", "owner")}}
            target = stored.name
            if "folder_path" in changes:
                folder = paths.clean_relative(changes["folder_path"], "folder_path")
                target = self._move(stored, paths.join(folder, stored.stem), "folder_path")
            _, base = self.locate(target)
            files.write_json(base + ".json", meta)
        return self.get(target)

    def rename(self, reference: str, new_name: str, owns: Owns = everyone) -> StoredVoice | None:
        """A new id in the same folder; aliases and the default follow. None when there is no such voice."""
        check_name(new_name)
        with self.state.lock():
            stored = self._changeable(reference, owns)
            if stored is None:
                return None
            target = self._move(stored, paths.join(stored.folder, new_name), "new_name")
        return self.get(target)

    def _move(self, stored: StoredVoice, target: str, param: str) -> str:
        """Move a voice's files to `target` (under the lock); aliases and the default follow."""
        if target == stored.name:
            return target
        target, base = self.locate(target, param)
        if self.get(target) is not None or target in self.aliases:
            raise ApiError(409, f"voice {target!r} exists", param=param, code="voice_exists")
        os.makedirs(os.path.dirname(base), exist_ok=True)
        os.replace(stored.path[:-4] + ".json", base + ".json")
        os.replace(stored.path, base + ".wav")
        self._forget(stored.name, target)
        return target

    def _forget(self, voice_id: str, renamed_to: str | None) -> None:
        """Point the library state's aliases and default at `renamed_to`, or drop them (under the lock)."""
        state = self.state.read()
        aliases = {alias: (renamed_to or "") if target == voice_id else target
                   for alias, target in state.aliases.items()}
        aliases = {alias: target for alias, target in aliases.items() if target}
        default = state.default_voice
        if default == voice_id:
            default = renamed_to
        if aliases != state.aliases or default != state.default_voice:
            self.state.write(LibraryState(aliases, default))

    def add_alias(self, reference: str, alias: str, owns: Owns = everyone) -> list[str] | None:
        alias = check_alias(alias)
        with self.state.lock():
            stored = self._changeable(reference, owns)
            if stored is None:
                return None
            if alias in self.env_aliases:
                raise ApiError(409, f"{alias!r} is set by CHATTERBOX_VOICE_ALIASES", param="alias", code="alias_exists")
            state = self.state.read()
            if alias in state.aliases or self.get(alias) is not None or alias == "default":
                raise ApiError(409, f"{alias!r} is already a voice or an alias", param="alias", code="alias_exists")
            state.aliases[alias] = stored.name
            self.state.write(state)
        return self.aliases_of(stored.name)

    def remove_alias(self, reference: str, alias: str, owns: Owns = everyone) -> list[str] | None:
        """The voice's remaining aliases; None when the voice or its alias does not exist."""
        with self.state.lock():
            stored = self._changeable(reference, owns)
            state = self.state.read()
            if stored is None or state.aliases.get(alias) != stored.name:
                return None
            del state.aliases[alias]
            self.state.write(state)
        return self.aliases_of(stored.name)

    def set_default(self, reference: str, owns: Owns = everyone, require_shared: bool = False) -> StoredVoice | None:
        """Make a voice the server-wide default; None when the caller sees no such voice. With
        `require_shared` (keys configured) only a shared voice can be every key's default: 409 else."""
        with self.state.lock():
            stored = self.find(self.aliases.get(reference, reference), owns)
            if stored is not None and require_shared and not stored.shared:
                raise ApiError(409, f"voice {stored.name!r} is private to its workspace; the default voice is every "
                                    "key's, so share it first (shared=true)", param="voice_name",
                               code="voice_not_shared")
            if stored is not None:
                state = self.state.read()
                self.state.write(LibraryState(state.aliases, stored.name))
        return stored

    def clear_default(self) -> None:
        with self.state.lock():
            state = self.state.read()
            if state.default_voice is not None:
                self.state.write(LibraryState(state.aliases, None))

    def cleanup(self) -> list[str]:
        """Remove what no longer has its other half: metadata without audio, audio without metadata,
        aliases and a default naming a missing voice. Returns what was removed."""
        removed: list[str] = []
        with self.state.lock():
            found = set(paths.walk_files(self.directory))
            for folder, name in sorted(found):
                stem, extension = os.path.splitext(name)
                other = ".wav" if extension == ".json" else ".json" if extension == ".wav" else None
                if other and (folder, stem + other) not in found and NAME_PATTERN.fullmatch(stem):
                    if files.remove(os.path.join(paths.confine(self.directory, folder, "folder"), name)):
                        removed.append(paths.join(folder, name))
            names = set(self.names())
            state = self.state.read()
            aliases = {alias: target for alias, target in state.aliases.items() if target in names}
            removed += [f"alias {alias}" for alias in sorted(set(state.aliases) - set(aliases))]
            default = state.default_voice if state.default_voice in names else None
            if default != state.default_voice:
                removed.append(f"default {state.default_voice}")
            if aliases != state.aliases or default != state.default_voice:
                self.state.write(LibraryState(aliases, default))
        return removed

    # -- resolving a request's voice ------------------------------------------------------------------
    def available(self, info: EngineInfo, owns: Owns = everyone) -> list[str]:
        names = {"default", *info.voices, *OPENAI_VOICES, *self.visible_aliases(owns)}
        if info.supports_cloning:
            names.update(self.names(owns))
        return sorted(names)

    def default_for(self, owns: Owns = everyone) -> str:
        """The default voice as this caller gets it: "" (the built-in one) when the server-wide
        default is a library voice the caller does not see (another workspace's private voice)."""
        default = self.default_voice
        if default and owns is not everyone and self.find(default) is not None and self.find(default, owns) is None:
            return ""
        return default

    def resolve(self, requested: str | None, info: EngineInfo, param: str = "voice",
                owns: Owns = everyone) -> VoiceRef:
        name = self.aliases.get(requested or "", requested) or self.default_for(owns) or "default"
        if name in ("default", *OPENAI_VOICES, *info.voices):
            return self._built_in_or_default(info, owns)
        stored = self.find(name, owns)
        if stored is None:
            raise ApiError(400, f"unknown voice {requested!r}; available voices: "
                                f"{', '.join(self.available(info, owns))}", param=param, code="voice_not_found")
        if not info.supports_cloning:
            raise ApiError(400, f"voice {name!r} is a cloned voice: the {info.engine} engine has only its "
                                f"built-in voice; cloning needs the chatterbox engine", param=param,
                           code="voice_not_supported")
        self.record_use(stored)
        return VoiceRef(stored.name, stored.path)

    def record_use(self, stored: StoredVoice) -> None:
        """usage_count and last_used in the voice's metadata. Best effort: a request never fails
        because its voice's statistics could not be written."""
        try:
            with self.state.lock():
                current = self.get(stored.name)
                if current is None:
                    return
                meta = {**current.meta, "usage_count": int(current.meta.get("usage_count") or 0) + 1,
                        "last_used": now_iso()}
                files.write_json(current.path[:-4] + ".json", meta, durable=False)   # no fsync per request
        except OSError:
            pass

    def stored_for(self, requested: str | None, owns: Owns = everyone) -> StoredVoice | None:
        """The library voice a request's voice field (or the default) ends up using, if any."""
        name = self.aliases.get(requested or "", requested) or self.default_for(owns)
        return self.find(name, owns) if name and name not in ("default", *OPENAI_VOICES) else None

    def _built_in_or_default(self, info: EngineInfo, owns: Owns = everyone) -> VoiceRef:
        default = self.default_for(owns)
        stored = self.find(default, owns) if default and info.supports_cloning else None
        if stored is not None:
            return VoiceRef(stored.name, stored.path)
        return VoiceRef(info.default_voice)
