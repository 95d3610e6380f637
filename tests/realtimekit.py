"""A small synchronous client of the realtime sockets for tests (the `websockets` library's sync
client: simple-websocket's own client loses frames that arrive in the same read as its handshake)."""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from ssl import SSLContext

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + path


@dataclass
class Received:
    events: list[dict] = field(default_factory=list)
    binary: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def of(self, kind: str, context_id: str | None = None) -> list[dict]:
        return [e for e in self.events
                if e.get("type") == kind and (context_id is None or e.get("context_id") == context_id)]

    def audio(self, context_id: str = "default") -> bytes:
        return b"".join(base64.b64decode(e["audio"]) for e in self.of("speech.audio.delta", context_id) if "audio" in e)

    def index(self, kind: str, context_id: str | None = None) -> int:
        for i, e in enumerate(self.events):
            if e.get("type") == kind and (context_id is None or e.get("context_id") == context_id):
                return i
        raise AssertionError(f"no {kind} event for {context_id}: {[e.get('type') for e in self.events]}")


class RealtimeClient:
    def __init__(self, url: str, headers: dict | None = None, sock=None, max_queue: int = 16,
                 ssl: SSLContext | None = None) -> None:
        """`max_queue`: messages the client's reader thread holds before it stops reading the socket."""
        self.ws = connect(url, additional_headers=headers, max_size=None, open_timeout=10, sock=sock,
                          max_queue=max_queue, ssl=ssl)
        self.received = Received()
        self.started = time.monotonic()
        self.closed: tuple[int | None, str | None] | None = None

    @property
    def connected(self) -> bool:
        return self.closed is None

    def send(self, kind: str, **fields) -> None:
        self.ws.send(json.dumps({"type": kind, **fields}))

    def send_raw(self, data: str | bytes) -> None:
        self.ws.send(data)

    def next(self, timeout: float = 20.0) -> dict | bytes | None:
        """The next message; None on timeout or once the server closed (see `closed`)."""
        if self.closed is not None:
            return None
        try:
            message = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            self.closed = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, None)
            return None
        self.received.times.append(time.monotonic() - self.started)
        if isinstance(message, bytes):
            self.received.binary.append(message)
            return message
        event = json.loads(message)
        self.received.events.append(event)
        return event

    def until(self, predicate, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(event, dict) and predicate(event):
                return event
            if self.closed is not None:
                break
        raise AssertionError(f"condition not met (closed: {self.closed}); got "
                             f"{[e.get('type') for e in self.received.events][-20:]}")

    def until_type(self, kind: str, context_id: str | None = None, timeout: float = 30.0) -> dict:
        return self.until(lambda e: e.get("type") == kind and (context_id is None or e.get("context_id") == context_id),
                          timeout)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.closed is None:
            self.next(timeout=max(0.05, deadline - time.monotonic()))

    def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str | None]:
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            self.next(timeout=0.2)
        assert self.closed is not None, "the server did not close the socket"
        return self.closed

    def close(self) -> None:
        self.ws.close()
