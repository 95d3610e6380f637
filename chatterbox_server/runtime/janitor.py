"""Which files under DATA_DIR/tmp are litter. No Flask or gevent here.

A front worker names its temporary uploads `upload-<host>-<pid>-…`, so a file whose front worker
on this host is dead (killed mid-request: its `finally` never ran) can go at once; a file from
another host sharing DATA_DIR, or with no owner in its name, goes once it is older than any
request can last.
"""
from __future__ import annotations

import os
import re
import socket
import stat
import time
from collections.abc import Callable

from workers.ipc.board import pid_alive

MAX_AGE_SECONDS = 24 * 3600.0         # longer than the longest stream (100,000 characters)
DEAD_OWNER_GRACE_SECONDS = 5.0        # a file created a moment ago by a worker just forked
_OWNED = re.compile(r"upload-(?P<host>[A-Za-z0-9_.-]+)-(?P<pid>\d+)-")


def upload_prefix(pid: int | None = None) -> str:
    """The temporary-file prefix of this front worker."""
    return f"upload-{_host()}-{os.getpid() if pid is None else pid}-"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def is_litter(name: str, age: float, alive: Callable[[int], bool] = pid_alive) -> bool:
    if age > MAX_AGE_SECONDS:
        return True
    owned = _OWNED.match(name)
    if owned is None or owned["host"] != _host():
        return False
    return age > DEAD_OWNER_GRACE_SECONDS and not alive(int(owned["pid"]))


def sweep(directory: str, now: float | None = None, alive: Callable[[int], bool] = pid_alive) -> list[str]:
    """Delete the litter among the regular files of `directory`; returns their names."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and is_litter(entry.name, now - info.st_mtime, alive):
                os.unlink(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:       # another front worker swept it first
            continue
    return removed
