"""Sends that never block the model worker: one outbox per connection, drained by its main loop.

The model worker serves every job from one thread, so a blocking ``Connection.send`` to a front
worker that is alive but not reading (stopped, swapped out, stuck) would stop synthesis for every
job on that worker once the socket buffer is full. An outbox frames a message exactly as
``multiprocessing.connection.Connection.send`` does (a ``!i`` length, or ``-1`` and a ``!Q``
length above 2 GiB, then the pickle), so the front side reads it with an ordinary Connection.
It writes with ``MSG_DONTWAIT`` on its own duplicate of the socket (the Connection's descriptor
stays blocking for reads), and what the socket does not take now waits here, in order, until the
main loop sees the socket writable again. Credits bound how many audio messages a job can have
waiting, so an outbox stays small. Standard library only.
"""
from __future__ import annotations

import socket
import struct
import time
from collections import deque
from multiprocessing.reduction import ForkingPickler

SMALL_MESSAGE = 16384          # below this multiprocessing sends header and payload as one write
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)    # Python ignores SIGPIPE anyway


class PeerGone(Exception):
    """The other end closed or reset the connection: nothing more can be delivered."""


def frame(payload: bytes) -> list[bytes]:
    """The writes multiprocessing.connection makes for one message of `payload` bytes."""
    size = len(payload)
    if size > 0x7FFFFFFF:
        return [struct.pack("!i", -1) + struct.pack("!Q", size), payload]
    header = struct.pack("!i", size)
    if size > SMALL_MESSAGE:
        return [header, payload]
    return [header + payload]


class Outbox:
    def __init__(self, fd: int, clock=time.monotonic) -> None:  # noqa: ANN001 - a clock for tests
        self._sock = socket.socket(fileno=socket.dup(fd))
        self._pieces: deque[memoryview] = deque()
        self._clock = clock
        self.pending_bytes = 0
        self.last_progress = clock()     # when the peer last took bytes, or when it had nothing to take

    def put(self, message: object) -> None:
        """Queue one message behind those already waiting; call flush() to write what fits."""
        if not self._pieces:
            self.last_progress = self._clock()
        for piece in frame(ForkingPickler.dumps(message)):
            self._pieces.append(memoryview(piece))
            self.pending_bytes += len(piece)

    @property
    def empty(self) -> bool:
        return not self._pieces

    def stalled_for(self) -> float:
        """Seconds the peer has had bytes waiting without taking any; 0 while nothing waits."""
        return 0.0 if not self._pieces else self._clock() - self.last_progress

    def flush(self) -> bool:
        """Write as much as the socket takes without waiting; True when nothing is left. Raises PeerGone."""
        while self._pieces:
            piece = self._pieces[0]
            try:
                written = self._sock.send(piece, _SEND_FLAGS)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:      # EPIPE, ECONNRESET, a closed descriptor
                raise PeerGone(str(exc)) from exc
            self.pending_bytes -= written
            self.last_progress = self._clock()
            if written == len(piece):
                self._pieces.popleft()
            else:
                self._pieces[0] = piece[written:]
        return True

    def close(self) -> None:
        self._pieces.clear()
        self.pending_bytes = 0
        self._sock.close()
