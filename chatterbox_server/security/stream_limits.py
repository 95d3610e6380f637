"""Concurrent streams per API key, counted across every front worker. No Flask or gevent here.

Each admitted request holds a small file `<pid>-<id>` in the key's directory under the pool's
run directory; a file whose front worker died no longer counts (and is removed), so a killed
worker cannot leak slots. Taking a slot first creates the file, then counts: two requests racing
for the last slot may both be refused, never both admitted.
"""
from __future__ import annotations

import hashlib
import os
import uuid

from workers.ipc.board import pid_alive


class TooManyStreams(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this API key already has {limit} request(s) synthesizing; the limit is {limit} "
                         "at a time: wait for one to finish")
        self.limit = limit


class StreamLimits:
    def __init__(self, directory: str, limit: int) -> None:
        self.directory = directory
        self.limit = limit

    def acquire(self, key_name: str) -> str | None:
        """A token for release(), or None when there is no limit. Raises TooManyStreams."""
        if self.limit <= 0:
            return None
        folder = os.path.join(self.directory, hashlib.sha256(key_name.encode()).hexdigest()[:24])
        os.makedirs(folder, mode=0o700, exist_ok=True)
        token = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex}")
        with open(token, "x"):
            pass
        if self._count(folder) > self.limit:
            self.release(token)
            raise TooManyStreams(self.limit)
        return token

    @staticmethod
    def release(token: str | None) -> None:
        if token:
            try:
                os.unlink(token)
            except FileNotFoundError:
                pass

    @staticmethod
    def _count(folder: str) -> int:
        count = 0
        for name in os.listdir(folder):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or pid_alive(int(pid))):
                count += 1
            else:
                StreamLimits.release(os.path.join(folder, name))
        return count
