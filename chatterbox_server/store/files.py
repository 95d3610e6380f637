"""Atomic files and cross-process locks for the stores under DATA_DIR.

Two server instances may share one DATA_DIR. A file is written to a temporary name in the same
directory, flushed and renamed over its final name, so a reader sees the old file or the new one,
never half of one. A read-modify-write of shared metadata holds an exclusive `flock` on a lock file
of its store; the critical sections do no network I/O and never yield to gevent, so a lock is held
for milliseconds. Waiting for a lock never blocks the gevent hub: the lock is tried without
blocking and retried after a cooperative sleep, up to a deadline.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

TEMP_PREFIX = ".tmp-"
LOCK_WAIT_SECONDS = 30.0
LOCK_RETRY_SECONDS = 0.01


def flock_exclusive(fd: int, timeout: float = LOCK_WAIT_SECONDS) -> None:
    """Take an exclusive flock on `fd` without blocking the process (under gevent, time.sleep
    yields to the other greenlets); TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"a lock was held by another process for over {timeout:.0f} s") from None
            time.sleep(LOCK_RETRY_SECONDS)


def atomic_write(path: str, data: bytes, durable: bool = True) -> None:
    """Replace `path` whole; `durable=False` skips the fsync (still atomic, may be lost in a power cut)."""
    fd, temporary = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_json(path: str, value: Any, durable: bool = True) -> None:
    text = json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True, default=str)   # sets, enums: as text
    atomic_write(path, text.encode(), durable)


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON object in `path`, None when it is missing or not a JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def locked(directory: str, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock shared by every process that opens `directory/name`."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flock_exclusive(fd)
        yield
    finally:
        os.close(fd)        # closing releases the lock


def remove(path: str | None) -> bool:
    """Delete the file at `path` if it is there; False when it was not (or there is no path)."""
    if not path:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
