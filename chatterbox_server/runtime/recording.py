"""Request history: the progress tracker of every speech request, which also records each one
in the database when it ends (status, duration, characters, audio seconds, error).

Under gevent the database writes are queued for one writer greenlet, so a speech request never
waits on the database: with PostgreSQL down, stopped or hung, speech goes on and the history
catches up when it is back (up to QUEUE_MAX entries; older ones are dropped beyond that)."""
from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import has_request_context, request

from chatterbox_server.runtime.progress import Progress
from chatterbox_server.store.history_db import HistoryStore

log = logging.getLogger("chatterbox.history")
QUEUE_MAX = 1000
WRITER_RETRY_SECONDS = 2.0
SETTLE_SECONDS = 2.0
RECORDED_PARAMETERS = ("model", "response_format", "stream_format", "speed", "exaggeration", "cfg_weight",
                       "temperature", "seed", "language", "streaming_strategy", "streaming_chunk_size")


class RecordingProgress(Progress):
    def __init__(self, directory: str, history: HistoryStore, request_fields: Callable[[], dict[str, Any]],
                 background: bool = False) -> None:
        """`request_fields`: the current request's body fields (JSON or form), {} outside a request."""
        super().__init__(directory)
        self.history = history
        self.request_fields = request_fields
        self.pending: dict[str, dict[str, Any]] = {}
        self.background = background
        self.queue: collections.deque[Callable[[], None]] = collections.deque()
        self.dropped = 0
        self._writer = None
        self._wake = None
        self._writing = False

    def _write(self, what: str, action: Callable[[], None]) -> None:
        if not self.background:
            try:
                action()
            except Exception:  # noqa: BLE001 - history must never fail a request
                log.exception("could not %s", what)
            return
        import gevent
        import gevent.event
        if len(self.queue) >= QUEUE_MAX:
            self.queue.popleft()
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("request history: the database is behind; %d entries dropped", self.dropped)
        self.queue.append(action)
        if self._writer is None or self._writer.dead:
            self._wake = gevent.event.Event()
            self._writer = gevent.spawn(self._drain)
        self._wake.set()

    def _drain(self) -> None:
        import gevent
        while True:
            while self.queue:
                action = self.queue.popleft()
                self._writing = True
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - keep it and try again later
                    if len(self.queue) < QUEUE_MAX:
                        self.queue.appendleft(action)
                    log.warning("request history: database write failed (%s); retrying in %g s",
                                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                                WRITER_RETRY_SECONDS)
                    gevent.sleep(WRITER_RETRY_SECONDS)
                finally:
                    self._writing = False
            self._wake.clear()
            self._wake.wait()

    def settle(self, timeout: float = SETTLE_SECONDS) -> None:
        """Let this front worker's queued history writes land before a history or statistics read, so a
        client that reads right after its request sees it; bounded, so a slow database delays no read long."""
        if not self.background or self._writer is None:
            return
        import gevent
        deadline = time.monotonic() + timeout
        while (self.queue or self._writing) and time.monotonic() < deadline:
            gevent.sleep(0.01)

    def begin(self, request_id: str, total_chunks: int, text_preview: str) -> None:
        super().begin(request_id, total_chunks, text_preview)
        data = self.request_fields()
        text = next((data[key] for key in ("input", "text") if isinstance(data.get(key), str)), "")  # /v1, /api/v1
        voice = data.get("voice") or data.get("reference_audio_filename") or data.get("target_voice_source")
        self.pending[request_id] = {
            "request_id": request_id, "endpoint": request.path if has_request_context() else "",
            "start_time": time.time(), "text_length": len(text),
            "text_preview": text[:100] + ("..." if len(text) > 100 else "") if text else text_preview,
            "voice_source": str(voice or "default")[:128],
            "parameters": {k: data[k] for k in RECORDED_PARAMETERS if k in data}, "total_chunks": total_chunks,
            "owner": self.active[request_id]["owner"]}      # the key's workspace: only it sees the text
        self._write(f"count request {request_id}", self.history.request_started)

    def end(self, request_id: str, result: object | None = None, error: str | None = None) -> None:
        super().end(request_id, result, error)
        entry = self.pending.pop(request_id, None)
        if entry is None:
            return
        ok = result is not None
        entry.update(end_time=time.time(), status="completed" if ok else "error",
                     audio_seconds=getattr(result, "audio_seconds", 0.0) if ok else 0.0,
                     error_message=None if ok else (error or "the request did not complete"))
        self._write(f"record request {request_id} in the history", lambda: self.history.record(entry))

