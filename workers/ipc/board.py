"""The pool board: a small memory-mapped file where model workers publish their state.

The supervisor and each model worker write their own slot; the front workers read every slot to
pick the least-busy worker and to answer /health. A slot has one writer at a time, fields are
aligned fixed-size values, and readers tolerate a value that changes under them, so no lock is
needed. The info JSON is too long for that: it is guarded by a sequence number (odd while a write
is under way), and a reader retries until it copied the text between two equal even numbers.
Standard library only.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import time
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"CBXBRD01"
HEADER = struct.Struct("<8s q d i i")          # magic, supervisor pid, supervisor heartbeat, slots, pad
SUPERVISOR = struct.Struct("<q d")              # the header's supervisor pid and heartbeat, at offset 8
DOUBLE = struct.Struct("<d")
SLOT = struct.Struct("<q i i i i q q d d d")   # pid, state, restarts, active, engine failures, done, failed, beat,
                                               # started, queued seconds
BEAT_AT = SLOT.size - 24                        # the beat field's offset in a slot
INFO_BYTES = 4096
ERROR_BYTES = 512
SLOT_BYTES = SLOT.size + INFO_BYTES + ERROR_BYTES
INFO_SEQ = struct.Struct("<q")                 # the first bytes of the info field
INFO_SPINS = 50                                # tries between two yields to the writer
INFO_READ_SECONDS = 0.05                       # then the previous info is used
INFO_FIRST_READ_SECONDS = 1.0                  # with none read before, the wait for a preempted writer


class WorkerState(IntEnum):
    EMPTY = 0
    STARTING = 1      # process started, engine loading or warming up
    READY = 2         # accepting jobs
    FAILED = 3        # died or could not load; the supervisor restarts it after a back-off
    STOPPED = 4       # shut down on purpose
    UNLOADED = 5      # running without its model's weights (not preloaded, or idle-unloaded); a job makes it load
    LOADING = 6       # loading its model's weights (or waiting for room in the memory budget); jobs wait

# the states in which a worker takes a job: READY runs it, the others hold it until their model is loaded
TAKES_JOBS = (WorkerState.READY, WorkerState.LOADING, WorkerState.UNLOADED)


@dataclass(frozen=True)
class SlotView:
    slot: int
    pid: int
    state: WorkerState
    restarts: int
    active: int
    jobs_done: int
    jobs_failed: int
    heartbeat: float
    started: float
    info: dict
    last_error: str
    engine_failures: int = 0        # jobs failed in a row by engine errors (workers/liveness.FailureStreak)
    queued_seconds: float = 0.0     # the worker's estimate of a new job's wait (chatterbox_server/admission)


class Board:
    def __init__(self, path: str, slots: int, create: bool = False) -> None:
        self.path = path
        self.slots = slots
        self._last_info: dict[int, dict] = {}
        size = HEADER.size + slots * SLOT_BYTES
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if create:
            self._store(0, HEADER, MAGIC, 0, 0.0, slots, 0)
        elif self._map[:8] != MAGIC:
            raise ValueError(f"{path} is not a pool board")

    @classmethod
    def open(cls, path: str) -> Board:
        with open(path, "rb") as f:
            _, _, _, slots, _ = HEADER.unpack(f.read(HEADER.size))
        return cls(path, slots)

    def close(self) -> None:
        self._map.close()

    def _store(self, offset: int, layout: struct.Struct, *values: object) -> None:
        """Write packed values in one copy. Not Struct.pack_into: it zeroes the whole field before
        it writes, and a reader in another process caught in between saw a ready worker as EMPTY
        (a spurious 503 "no model worker is ready"), a queue as empty (a 429 not given) and the
        supervisor's pid as 0."""
        self._map[offset:offset + layout.size] = layout.pack(*values)

    # -- supervisor ------------------------------------------------------------------------------
    def supervisor_beat(self, pid: int) -> None:
        self._store(8, SUPERVISOR, pid, time.time())

    def supervisor(self) -> tuple[int, float]:
        return SUPERVISOR.unpack_from(self._map, 8)

    # -- one slot ---------------------------------------------------------------------------------
    def _offset(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise IndexError(slot)
        return HEADER.size + slot * SLOT_BYTES

    def _fields(self, slot: int) -> list:
        return list(SLOT.unpack_from(self._map, self._offset(slot)))

    def _write(self, slot: int, values: list) -> None:
        self._store(self._offset(slot), SLOT, *values)

    def reset(self, slot: int, pid: int, restarts: int, error: str = "") -> None:
        """A new worker in the slot; `error` carries why the previous one was replaced."""
        now = time.time()
        self._write(slot, [pid, WorkerState.STARTING, restarts, 0, 0, 0, 0, now, now, 0.0])
        self._write_info(slot, "")
        self._put_text(slot, SLOT.size + INFO_BYTES, ERROR_BYTES, error)

    def set_state(self, slot: int, state: WorkerState, error: str | None = None) -> None:
        if error is not None:
            self._put_text(slot, SLOT.size + INFO_BYTES, ERROR_BYTES, error)
        values = self._fields(slot)
        values[1] = int(state)
        if state in (WorkerState.FAILED, WorkerState.STOPPED):
            values[3] = 0
            values[9] = 0.0
        self._write(slot, values)

    def publish_info(self, slot: int, info: dict) -> None:
        self._write_info(slot, json.dumps(info, separators=(",", ":")))

    def _write_info(self, slot: int, text: str) -> None:
        at = self._offset(slot) + SLOT.size
        (sequence,) = INFO_SEQ.unpack_from(self._map, at)
        sequence += sequence % 2            # a writer killed mid-write left it odd
        self._store(at, INFO_SEQ, sequence + 1)
        self._put_text(slot, SLOT.size + INFO_SEQ.size, INFO_BYTES - INFO_SEQ.size, text)
        self._store(at, INFO_SEQ, sequence + 2)

    def _read_info(self, slot: int) -> dict:
        """The info of the last whole write; the previous one read if a writer keeps it busy."""
        at = self._offset(slot) + SLOT.size
        if self._map[at] == ord("{"):       # written by a pool from before the sequence number (a HUP upgrade)
            text = self._get_text(slot, SLOT.size, INFO_BYTES)
            # or a sequence number whose low byte is "{": as text it is shorter than its 8 bytes, and
            # 32123 reads as "{}" (CI's torn reads, twice: {} from a board being rewritten)
            if len(text) > INFO_SEQ.size:
                try:
                    return json.loads(text)
                except ValueError:
                    pass
        # a reader with nothing to fall back on waits longer: {} would read as a worker that never said
        wait = INFO_READ_SECONDS if slot in self._last_info else INFO_FIRST_READ_SECONDS
        deadline = time.monotonic() + wait
        attempt = 0
        while True:
            attempt += 1
            if attempt % INFO_SPINS == 0:
                if time.monotonic() > deadline:
                    break
                # a writer preempted mid-write needs the CPU to finish; sched_yield gives it up to other
                # processes without a gevent switch, so a front worker's admission stays one atomic step
                os.sched_yield()
            (before,) = INFO_SEQ.unpack_from(self._map, at)
            if before % 2:
                continue
            text = self._get_text(slot, SLOT.size + INFO_SEQ.size, INFO_BYTES - INFO_SEQ.size)
            if INFO_SEQ.unpack_from(self._map, at)[0] != before:
                continue
            try:
                info = json.loads(text) if text else {}
            except ValueError:      # a whole write that is not JSON (cut at the field's end): nothing to wait for
                info = {}
            self._last_info[slot] = info
            return info
        return self._last_info.get(slot, {})

    def update_load(self, slot: int, active: int, done: int, failed: int) -> None:
        values = self._fields(slot)
        values[3], values[5], values[6], values[7] = active, done, failed, time.time()
        self._write(slot, values)

    def set_queued_seconds(self, slot: int, seconds: float) -> None:
        self._store(self._offset(slot) + SLOT.size - 8, DOUBLE, seconds)

    def beat(self, slot: int) -> None:
        self._store(self._offset(slot) + BEAT_AT, DOUBLE, time.time())

    def beat_of(self, slot: int) -> float:
        """The slot's heartbeat alone: cheap enough to poll while waiting for a job's audio."""
        return struct.unpack_from("<d", self._map, self._offset(slot) + BEAT_AT)[0]

    def set_engine_failures(self, slot: int, count: int) -> None:
        values = self._fields(slot)
        values[4] = count
        self._write(slot, values)

    def view(self, slot: int) -> SlotView:
        pid, state, restarts, active, engine_failures, done, failed, beat, started, queued = self._fields(slot)
        return SlotView(slot, pid, WorkerState(state), restarts, active, done, failed, beat, started,
                        self._read_info(slot), self._get_text(slot, SLOT.size + INFO_BYTES, ERROR_BYTES),
                        engine_failures=engine_failures, queued_seconds=queued)

    def views(self) -> list[SlotView]:
        return [self.view(slot) for slot in range(self.slots)]

    # -- text fields ------------------------------------------------------------------------------
    def _put_text(self, slot: int, offset: int, size: int, text: str) -> None:
        data = text.encode("utf-8")[: size - 1].decode("utf-8", "ignore").encode("utf-8")
        start = self._offset(slot) + offset
        self._map[start:start + size] = data + b"\0" * (size - len(data))

    def _get_text(self, slot: int, offset: int, size: int) -> str:
        start = self._offset(slot) + offset
        raw = bytes(self._map[start:start + size])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # alive, but someone else's
        return True
    return True


@dataclass(frozen=True)
class Speed:
    """What the ready model workers published for admission (info["admission"] on the board), read by
    the front workers' whole-file estimates (chatterbox_server/synthesis/budget.py)."""
    per_char: float | None             # slowest measured seconds per character on one row; None: not yet
    per_input_second: float | None     # the same for voice conversion, per second of input audio
    rows: int                          # batch rows of every ready worker together
    queued: float                      # the shortest wait any ready worker estimates for a new job
    engine: str = ""
    device: str = ""

    def fallback_key(self) -> str:
        return f"{self.engine}-cpu" if self.engine == "chatterbox" and self.device == "cpu" else self.engine
