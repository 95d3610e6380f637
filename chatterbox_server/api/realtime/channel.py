"""One WebSocket, whatever its protocol: reading, one writer, limits, keepalive and closing.

The view's greenlet reads messages and hands them to the protocol's :class:`Translator`, which
turns them into session commands; a single writer greenlet sends every frame, so frames of
several contexts never interleave (simple-websocket writes with ``socket.send``, which may write
part of a frame: :class:`WholeFrames` makes every write whole and one at a time, the pings of
simple-websocket's own reader included). The writer takes events from a bounded queue: a client
that reads slowly fills it, the contexts then stop taking audio from the model worker, whose
credits park the job. That is the back-pressure; memory stays bounded.

Close codes: 1000 normal (the client closed the session, or it was idle for the timeout), 1001 the
front worker is stopping or reloading (after the turns in progress are spoken), 1008
a protocol violation that cannot be answered with an error event, 1009 a message too big to read,
1011 a server error, 1013 the server is full (sent before any GPU time, with an error event that
carries a retry hint).
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock
from simple_websocket import ConnectionClosed

from chatterbox_server.runtime.draining import worker_exiting
from chatterbox_server.runtime.pool_client import PoolBusy, PoolError
from chatterbox_server.security.redact import public_pool_message
from chatterbox_server.synthesis.realtime import Audio, Event, Session, SessionError

log = logging.getLogger("chatterbox.realtime")
OUTGOING_AUDIO_SECONDS = 2.0        # engine audio waiting for the writer before the contexts wait
OUTGOING_EVENTS = 256               # any events waiting: a client that reads nothing stops being read
POLL_SECONDS = 0.5                  # how often the reading loop looks at the clock while nothing arrives
CLOSE_WAIT_SECONDS = 300.0          # longest a graceful close waits for the turns still being spoken
NORMAL, GOING_AWAY, POLICY, TOO_BIG, SERVER_ERROR, TRY_AGAIN_LATER = 1000, 1001, 1008, 1009, 1011, 1013
Frame = str | bytes
Item = Event | Frame | None          # None: the writer's end


class WholeFrames:
    """The gunicorn socket, with every send written whole and one at a time."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = gevent.lock.RLock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Outgoing:
    """The writer's queue, bounded by the audio it holds (and by its length): `put` waits while it is
    full, which is what stops a context from taking more audio from its job (the job's credits then
    park it in the model worker). An item bigger than the bound still goes when the queue is empty."""

    def __init__(self, max_audio_bytes: int, max_items: int = OUTGOING_EVENTS) -> None:
        self.max_audio_bytes = max_audio_bytes
        self.max_items = max_items
        self.items: deque[Item] = deque()
        self.audio_bytes = 0
        self.ready = gevent.event.Event()
        self.room = gevent.event.Event()
        self.closed = False

    def put(self, item: Item) -> None:
        size = len(item.pcm) if isinstance(item, Audio) else 0
        while not self.closed and (len(self.items) >= self.max_items
                                   or size and self.audio_bytes and self.audio_bytes + size > self.max_audio_bytes):
            self.room.clear()
            self.room.wait(1.0)
        if self.closed:
            return
        self.items.append(item)
        self.audio_bytes += size
        self.ready.set()

    def get(self) -> Item:
        while not self.items:
            self.ready.clear()
            self.ready.wait()
        item = self.items.popleft()
        if isinstance(item, Audio):
            self.audio_bytes -= len(item.pcm)
        self.room.set()
        return item

    def close(self) -> None:
        """The writer is gone: drop what is queued and let every waiting `put` return."""
        self.closed = True
        self.items.clear()
        self.audio_bytes = 0
        self.room.set()


class Translator(Protocol):
    """A wire protocol on the session core (ours or a vendor's)."""
    idle_timeout: float

    def opened(self, channel: Channel) -> list[Frame]:
        """Frames to send when the socket opens (after admission)."""

    def handle(self, message: Any, channel: Channel) -> None:
        """One client message (str or bytes, size already checked): session commands or SessionError."""

    def frames(self, event: Event) -> list[Frame]:
        """The frames for one session event (called in the writer, in order)."""

    def error_frames(self, error: SessionError) -> list[Frame]:
        """The frames that report an error (to one context when it names one)."""

    def ends_socket(self, event: Event) -> bool:
        """Whether the socket closes once this event's frames are out (a one-turn protocol)."""


class Channel:
    def __init__(self, ws: Any, session_factory: Callable[[Callable[[Event], None]], Session],
                 translator: Translator, max_message_bytes: int) -> None:
        self.ws = ws
        self.translator = translator
        self.max_message_bytes = max_message_bytes
        self.outgoing = Outgoing(0)
        self.session = session_factory(self.outgoing.put)
        self.outgoing.max_audio_bytes = int(OUTGOING_AUDIO_SECONDS * self.session.info.sample_rate) * 2
        self.closing: tuple[int, str] | None = None
        self.graceful = False
        self.writer: gevent.Greenlet | None = None

    # -- what translators call ------------------------------------------------------------------
    def send(self, *frames: Frame) -> None:
        """Queue frames behind the events already queued (the writer keeps the order)."""
        for frame in frames:
            self.outgoing.put(frame)

    def close(self, code: int = NORMAL, reason: str = "", graceful: bool = False) -> None:
        """Stop reading; `graceful`: first let every open context finish speaking what it has."""
        self.closing = (code, reason)
        self.graceful = graceful

    # -- the socket's life ----------------------------------------------------------------------
    def serve(self) -> None:
        if not self._admitted():
            return
        self.writer = gevent.spawn(self._write_loop)
        try:
            self.send(*self.translator.opened(self))
            self._read_loop()
        finally:
            self._finish()

    def _admitted(self) -> bool:
        try:
            self.session.admit()
        except PoolError as exc:
            retry = exc.retry_after if isinstance(exc, PoolBusy) else 1
            error = SessionError(public_pool_message(str(exc), exc.status, exc.code), code=exc.code,
                                 status=exc.status, retry_after=retry or 1)
            try:
                for frame in self.translator.error_frames(error):
                    self.ws.send(frame)
                self.ws.close(TRY_AGAIN_LATER, "the server is full; try again shortly")
            except ConnectionClosed:
                pass
            return False
        return True

    def _read_loop(self) -> None:
        last_heard = time.monotonic()
        while self.closing is None:
            try:
                message = self.ws.receive(timeout=POLL_SECONDS)
            except ConnectionClosed:
                return
            now = time.monotonic()
            if worker_exiting():        # a stop or reload: finish the turns in progress, then 1001
                self.close(GOING_AWAY, "the server is restarting; reconnect", graceful=True)
                return
            if message is None:
                if not self.ws.connected or (self.writer is not None and self.writer.dead):
                    return
                if self.session.busy():
                    last_heard = now
                elif now - last_heard >= self.translator.idle_timeout:
                    self.close(NORMAL, f"no message for {self.translator.idle_timeout:g} s")
                continue
            last_heard = now
            size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
            if size > self.max_message_bytes:
                self._report(SessionError(f"message of {size} bytes is over the limit of "
                                          f"{self.max_message_bytes}; send text in smaller pieces",
                                          code="message_too_big", status=413))
                continue
            try:
                self.translator.handle(message, self)
            except SessionError as exc:
                self._report(exc)

    def _report(self, error: SessionError) -> None:
        self.send(*self.translator.error_frames(error))

    def _finish(self) -> None:
        code, reason = self.closing or (NORMAL, "")
        if self.graceful and self.ws.connected:
            for context_id in list(self.session.contexts):
                try:
                    self.session.end(context_id)
                except SessionError:
                    pass
            self.session.wait(CLOSE_WAIT_SECONDS)
        self.session.close()
        if self.writer is not None:
            if not self.writer.dead:
                self.outgoing.put(None)     # behind what is queued: a graceful end sends it all
                self.writer.join(timeout=10)
            self.writer.kill(block=False)
        try:
            self.ws.close(code, reason[:120] or None)
        except ConnectionClosed:
            pass

    def _write_loop(self) -> None:
        try:
            while True:
                item = self.outgoing.get()
                if item is None:
                    return
                if isinstance(item, (str, bytes)):
                    self.ws.send(item)
                    continue
                if isinstance(item, Audio) and not self.session.live(item.serial):
                    continue        # cancelled: nothing of it follows the acknowledgement
                for frame in self.translator.frames(item):
                    self.ws.send(frame)
                if self.translator.ends_socket(item):
                    self.close()
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - a failed write ends this socket only
            log.exception("realtime writer failed")
            self.close(SERVER_ERROR, "server error")
        finally:
            self.session.close()
            self.outgoing.close()


def parse_json(message: Any) -> dict:
    """A client message as a JSON object, or a SessionError that says what is wrong with it."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise SessionError("binary messages must be UTF-8 JSON", code="invalid_json") from None
    try:
        data = json.loads(message)
    except ValueError as exc:
        raise SessionError(f"message is not JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise SessionError("message must be a JSON object", code="invalid_json")
    return data


def dumps(data: dict) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
