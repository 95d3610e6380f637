"""Per-key disk quota (CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES): the bytes one workspace holds in
outputs, VC inputs and voices, counted from the owner each of them records, and the check a write
must pass. A long-text job's folder counts too (the chunks a failed or cancelled job keeps for a
retry, and its final file; a completed job keeps only the final file), once its runner has marked
the folder with the job's owner. No Flask or gevent here.

A check and the write it allows are apart in time (an upload is decoded, a generation is
synthesized), so `Reservations` makes check-and-reserve one step: a write's bytes are held from its
check until the write is done, and the next check of that workspace counts them.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from chatterbox_server.errors import ApiError
from chatterbox_server.store import files, paths
from chatterbox_server.store.outputs import SIDECAR_SUFFIX

SETTING = "CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES"
LONGTEXT_OWNER_FILE = "owner.json"      # in DATA_DIR/longtext/{job id}/: {"owner": the job's workspace}


def _owner(meta: dict | None) -> str | None:
    owner = (meta or {}).get("owner")
    return owner if isinstance(owner, str) else None


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:           # deleted (another instance, retention) while we counted
        return 0


def output_bytes(directory: str, owner: str) -> int:
    """Every output file (and metadata) of a base name whose metadata records `owner`."""
    owners: dict[str, str | None] = {}
    total = 0
    for folder, name in paths.walk_files(directory):
        key = paths.join(folder, name.split(".", 1)[0])
        if key not in owners:
            owners[key] = _owner(files.read_json(os.path.join(directory, key + SIDECAR_SUFFIX)))
        if owners[key] == owner:
            total += _size(os.path.join(directory, folder, name))
    return total


def sidecar_bytes(directory: str, owner: str, audio_suffix: str | None = None) -> int:
    """Files with a `{name}.json` beside them that records `owner` (VC inputs: any audio name;
    voices: `{stem}.wav` beside `{stem}.json`), their metadata included."""
    found = set(paths.walk_files(directory))
    total = 0
    for folder, name in found:
        if name.endswith(".json"):
            continue
        if audio_suffix is not None:
            if not name.endswith(audio_suffix):
                continue
            meta_name = name[:-len(audio_suffix)] + ".json"
        else:
            meta_name = name + ".json"
        if (folder, meta_name) not in found:
            continue
        meta_path = os.path.join(directory, folder, meta_name)
        if _owner(files.read_json(meta_path)) == owner:
            total += _size(os.path.join(directory, folder, name)) + _size(meta_path)
    return total


def longtext_bytes(directory: str, owner: str) -> int:
    """Every file in the long-text job folders marked as `owner`'s; a file hard-linked into several
    (a retry reuses its first job's chunks) counts once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        jobs = [entry for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for job in jobs:
        if _owner(files.read_json(os.path.join(job.path, LONGTEXT_OWNER_FILE))) != owner:
            continue
        try:
            entries = list(os.scandir(job.path))
        except FileNotFoundError:       # deleted (retention, a user) while we counted
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_file(follow_symlinks=False) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def workspace_bytes(outputs_dir: str, vc_inputs_dir: str, voices_dir: str, owner: str,
                    longtext_dir: str | None = None) -> int:
    return (output_bytes(outputs_dir, owner) + sidecar_bytes(vc_inputs_dir, owner)
            + sidecar_bytes(voices_dir, owner, ".wav") + (longtext_bytes(longtext_dir, owner) if longtext_dir else 0))


def check(used: int, adding: int | None, quota: int) -> None:
    """507 naming the setting when a write of `adding` bytes would take the workspace past `quota`
    (a write that adds nothing, e.g. a smaller replacement, always passes). A write of unknown size
    (a generation: None) is refused once the workspace is full; the quota is checked before the
    work, so no synthesis is thrown away, and one generation may pass it."""
    if quota <= 0:
        return
    if (adding is None and used >= quota) or (adding is not None and adding > 0 and used + adding > quota):
        more = f" and this write adds {adding}" if adding else ""
        raise ApiError(507, f"this key's workspace holds {used} bytes of outputs, VC inputs, voices and long-job "
                            f"audio (writes in progress included){more}; "
                            f"{SETTING} is {quota}: delete some of them to make room",
                       code="quota_exceeded")


class Reservation:
    """The bytes one write may add, held from its check until `release()` (idempotent)."""

    def __init__(self, ledger: Reservations, owner: str, amount: int) -> None:
        self._ledger, self.owner, self.amount = ledger, owner, amount
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._ledger._release(self.owner, self.amount)


class Reservations:
    """Check-and-reserve, atomic per workspace within this process.

    `reserve` holds the workspace's lock while it counts what is on disk, adds what the writes
    still in progress reserved, checks, and reserves this write's bytes, so of two concurrent writes
    by one key the second is checked against the first. The write releases its reservation once its
    file is on disk (until then its bytes may count twice: a check errs on the side of refusing).
    A generation of unknown size (`adding` None) reserves nothing: it is refused once the workspace
    with the reservations is full, and may pass the quota by its own size, as `check` says; so the
    key's generations running at once (at most CHATTERBOX_MAX_STREAMS_PER_KEY) may each pass it.

    What remains with several front worker processes (or instances sharing DATA_DIR): the locks
    and reservations are this process's, so each process checks against the disk plus its own
    writes in progress, never another's. A key writing through W processes at once can take its
    workspace past the quota by what the other processes have reserved and not yet written: at
    most (W-1) x the room left when they checked (each process may fill that room on its own), and
    no more than those writes themselves (an upload or a voice is at most CHATTERBOX_MAX_UPLOAD_BYTES).
    Once they land, every check in every process sees them on disk.

    Call it from native threads only (a front worker runs it off the gevent hub): `lock` must be
    an OS lock, held while the workspace is counted.
    """

    def __init__(self, lock: Callable[[], Any] = threading.Lock) -> None:
        self._new_lock = lock
        self._guard = lock()
        self._locks: dict[str, Any] = {}
        self._held: dict[str, int] = {}

    def held(self, owner: str) -> int:
        with self._guard:
            return self._held.get(owner, 0)

    def _lock_of(self, owner: str) -> Any:
        with self._guard:
            lock = self._locks.get(owner)
            if lock is None:
                lock = self._locks[owner] = self._new_lock()
            return lock

    def reserve(self, owner: str, adding: int | None, quota: int, count: Callable[[], int]) -> Reservation:
        """`count()`: the bytes the workspace holds on disk. Raises check's 507, or reserves `adding`."""
        with self._lock_of(owner):
            check(count() + self.held(owner), adding, quota)
            amount = max(adding or 0, 0)
            with self._guard:
                self._held[owner] = self._held.get(owner, 0) + amount
        return Reservation(self, owner, amount)

    def _release(self, owner: str, amount: int) -> None:
        with self._guard:
            left = self._held.get(owner, 0) - amount
            if left > 0:
                self._held[owner] = left
            else:
                self._held.pop(owner, None)
