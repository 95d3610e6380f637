"""Generated files under DATA_DIR/outputs: atomic writes, safe look-ups, retention.

No Flask or gevent here. Files are published with a hard link from a temporary file in the same
directory, so a reader sees a whole file or none, and an existing name is never overwritten (two
requests that pick the same base name in the same millisecond cannot clobber each other).
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from chatterbox_server.store import files, paths

FILE_NAME = re.compile(r"[A-Za-z0-9_.-]+")       # always fullmatch
TEMP_PREFIX = ".tmp-"
TEMP_MAX_AGE = 3600.0           # a temporary file this old belongs to a writer that died
NAME_ATTEMPTS = 8
UNGUESSABLE_BYTES = 8
SIDECAR_SUFFIX = ".json"          # a base name's generation metadata (see store.outputs_index)
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}


class OutputStore:
    """One directory of generated files with an age limit and a size limit (0 disables either)."""

    def __init__(self, directory: str, retention_seconds: float, max_bytes: int) -> None:
        self.directory = os.path.abspath(directory)
        self.retention_seconds = retention_seconds
        self.max_bytes = max_bytes
        os.makedirs(directory, exist_ok=True)

    # -- writing ----------------------------------------------------------------------------------
    def new_base_name(self, now: float | None = None, prefix: str = "tts", tag: str = "") -> str:
        """`tts_YYYY-MM-DD_HHMMSS_mmm_<random>[_tag]` (UTC): the seed's prefix, then 64 random bits so
        nobody can fetch another caller's output by guessing its name from the time it was made."""
        moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
        stamp = f"{moment:%Y-%m-%d_%H%M%S}_{moment.microsecond // 1000:03d}"
        base = f"{prefix}_{stamp}_{secrets.token_hex(UNGUESSABLE_BYTES)}"
        return f"{base}_{tag}" if tag else base

    def write_atomic(self, name: str, data: bytes, replace: bool = False) -> str:
        """Write `name` whole or not at all; FileExistsError if it exists and `replace` is False."""
        if not _plain_name(name):
            raise ValueError(f"not a plain file name: {name!r}")
        final = os.path.join(self.directory, name)
        fd, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _publish(temporary, final, replace)
        finally:
            files.remove(temporary)
        return name

    def subfolder(self, folder: str, param: str = "folder") -> OutputStore:
        """The store of a sub-folder (a clean relative path, see store.paths), created on demand;
        it shares this store's limits, and pruning this store covers it. PathError (400) for a path
        that is not plain or leads outside."""
        if not folder:
            return self
        path = paths.confine(self.directory, paths.clean_relative(folder, param), param)
        return OutputStore(path, self.retention_seconds, self.max_bytes)

    def existing_subfolder(self, folder: str) -> OutputStore | None:
        """The store of a sub-folder that is there, for reading: None for a bad path or a folder that
        does not exist (a read never creates one)."""
        try:
            path = paths.confine(self.directory, paths.clean_relative(folder, "folder"), "folder")
        except paths.PathError:
            return None
        if not folder or not os.path.isdir(path):
            return None
        return OutputStore(path, self.retention_seconds, self.max_bytes)

    def store(self, files: Mapping[str, bytes], now: float | None = None, prefix: str = "tts",
              tag: str = "", folder: str = "") -> dict[str, str]:
        """Write {extension: data} under one fresh base name; returns {extension: file name}, the
        name relative to this store ("project/tts_....wav" when `folder` is given)."""
        if folder:
            target = self.subfolder(folder)
            inside = target.store(files, now, prefix, tag)
            return {extension: paths.join(paths.clean_relative(folder, "folder"), name)
                    for extension, name in inside.items()}
        for _ in range(NAME_ATTEMPTS):
            base = self.new_base_name(now, prefix, tag)
            written: dict[str, str] = {}
            try:
                for extension, data in files.items():
                    written[extension] = self.write_atomic(f"{base}.{extension}", data)
                return written
            except FileExistsError:     # lost a race for this base name: undo and pick another
                self._remove_all(written.values())
            except BaseException:
                self._remove_all(written.values())
                raise
            now = None
        raise FileExistsError(f"no free output name after {NAME_ATTEMPTS} attempts")

    # -- reading ----------------------------------------------------------------------------------
    def path_for(self, filename: str) -> str | None:
        """The path of a regular file directly in the directory, or None for anything else."""
        if not _plain_name(filename):
            return None
        path = os.path.join(self.directory, filename)
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(self.directory):
            return None
        try:
            info = os.lstat(path)
        except (OSError, ValueError):
            return None
        return path if stat.S_ISREG(info.st_mode) else None

    def locate(self, relative: str) -> str | None:
        """Like path_for, for a file in a sub-folder too ("project/tts_1.wav"); None for anything
        that is not a regular file inside the store (symlinked folders included)."""
        try:
            folder, name = paths.split(paths.clean_relative(relative, "filename", allow_empty=False))
            directory = paths.confine(self.directory, folder, "filename")
        except paths.PathError:
            return None
        if not os.path.isdir(directory):
            return None
        return OutputStore(directory, 0, 0).path_for(name)

    # -- retention --------------------------------------------------------------------------------
    def prune(self, now: float | None = None, keep: Iterable[str] = ()) -> list[str]:
        """Delete stale temporary files, files past the age limit, then the oldest files until the
        total fits the size limit. Files named in `keep` (just written) are never deleted."""
        now = time.time() if now is None else now
        protected = set(keep)
        removed: list[str] = []
        live: list[tuple[float, str, int]] = []
        for name, info in self._entries():
            age = now - info.st_mtime
            if os.path.basename(name).startswith(TEMP_PREFIX):
                if age > TEMP_MAX_AGE and self._remove(name):
                    removed.append(name)
            elif os.path.basename(name).startswith("."):
                continue
            elif self.retention_seconds > 0 and age > self.retention_seconds and name not in protected:
                if self._remove(name):
                    removed.append(name)
            else:
                live.append((info.st_mtime, name, info.st_size))
        removed.extend(self._prune_to_size(live, protected))
        if removed:
            self.remove_orphan_sidecars()
        return removed

    def remove_orphan_sidecars(self) -> list[str]:
        """Delete the metadata of base names that have no file left."""
        removed = []
        for directory, folders, names in os.walk(self.directory, followlinks=False):
            folders[:] = [name for name in folders if not name.startswith(".")]
            bases = {name.split(".", 1)[0] for name in names if not name.endswith(SIDECAR_SUFFIX)}
            for name in names:
                if name.endswith(SIDECAR_SUFFIX) and not name.startswith(".") and \
                        name[:-len(SIDECAR_SUFFIX)] not in bases:
                    files.remove(os.path.join(directory, name))
                    removed.append(name)
        return removed

    def total_bytes(self) -> int:
        return sum(info.st_size for name, info in self._entries() if not os.path.basename(name).startswith("."))

    def _prune_to_size(self, live: list[tuple[float, str, int]], protected: set[str]) -> list[str]:
        if self.max_bytes <= 0:
            return []
        total = sum(size for _, _, size in live)
        removed = []
        for _, name, size in sorted(live):
            if total <= self.max_bytes:
                break
            if name in protected:
                continue
            if self._remove(name):
                removed.append(name)
            total -= size
        return removed

    # -- helpers ----------------------------------------------------------------------------------
    def _entries(self) -> Iterable[tuple[str, os.stat_result]]:
        """(relative name, lstat) of the regular files here and in sub-folders; symlinks are never
        followed or touched. Metadata sidecars (`.json`) are left to store.outputs_index."""
        for directory, folders, names in os.walk(self.directory, followlinks=False):
            folders[:] = [name for name in folders if not name.startswith(".")]
            prefix = os.path.relpath(directory, self.directory)
            for name in names:
                if name.endswith(SIDECAR_SUFFIX) and not name.startswith("."):
                    continue
                try:
                    info = os.lstat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield (name if prefix == "." else f"{prefix}/{name}"), info

    def _remove(self, name: str) -> bool:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:       # another front worker pruned it first
            return False
        return True

    def _remove_all(self, names: Iterable[str]) -> None:
        for name in names:
            self._remove(name)


def _plain_name(name: str) -> bool:
    return bool(FILE_NAME.fullmatch(name)) and not name.startswith(".")


def _publish(temporary: str, final: str, replace: bool) -> None:
    if replace:
        os.replace(temporary, final)
        return
    try:
        os.link(temporary, final)       # atomic and fails if `final` exists, unlike os.replace
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(final):      # a file system without hard links: best effort
            raise FileExistsError(errno.EEXIST, "file exists", final) from None
        os.replace(temporary, final)
