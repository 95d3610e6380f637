"""store/files.flock_exclusive: a lock held by another process is polled with sleeps (which gevent
turns into yields to the other greenlets), never waited on with a blocking flock that would freeze
every stream of the front worker; and it gives up after its timeout."""
from __future__ import annotations

import fcntl
import os
import threading

import pytest

from chatterbox_server.store import files


@pytest.fixture
def held_lock(tmp_path):
    path = str(tmp_path / "lock")
    holder = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)                 # another open file: conflicts as another process would
    yield path, holder
    os.close(holder)


def test_a_held_lock_is_polled_with_sleeps_not_waited_on(held_lock, monkeypatch):
    path, holder = held_lock
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            fcntl.flock(holder, fcntl.LOCK_UN)          # the other process lets go
    monkeypatch.setattr(files.time, "sleep", sleep)
    # a blocking flock would never call sleep: let go after 2 s anyway, so that failure is not a hang
    rescue = threading.Timer(2.0, fcntl.flock, (holder, fcntl.LOCK_UN))
    rescue.start()
    fd = os.open(path, os.O_RDWR)
    try:
        files.flock_exclusive(fd, timeout=10)
    finally:
        rescue.cancel()
        os.close(fd)
    assert len(sleeps) == 3 and all(s <= 0.05 for s in sleeps)


def test_a_lock_held_past_the_timeout_is_a_timeout_error(held_lock):
    path, _ = held_lock
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(TimeoutError, match="held by another process"):
            files.flock_exclusive(fd, timeout=0.1)
    finally:
        os.close(fd)
