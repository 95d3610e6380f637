"""Our own socket protocol, `GET /v1/audio/speech/realtime`: JSON events named like our SSE's.

Client -> server (every event may carry ``context_id``; without one it is ``"default"``):

- ``session.update`` ``{"session": {options}}``: the options new contexts get (voice, model,
  response_format, sample_rate, timestamps, binary, speed, exaggeration, cfg_weight, temperature,
  seed, language, segmentation, chunk_schedule, max_delay_ms, buffer_size); answered
  ``session.updated``. Options may also come as query parameters of the URL.
- ``context.create`` ``{"context_id", "session"?: {overrides}}``: opens a context with its own
  options; answered ``context.created`` with its seed and format. ``input_text.append`` opens one
  with the session's options if it is not open.
- ``input_text.append`` ``{"text"}``: text as the LLM writes it.
- ``input_text.flush`` ``{"flush_id"?}``: synthesize what is buffered now; ``input_text.flushed``
  follows the audio of that text.
- ``input_text.done``: the turn's text is complete; ``speech.audio.done`` follows its last audio.
- ``context.cancel``: barge-in; ``context.cancelled`` at once, and no audio of it after that.
- ``session.close``: finish the turns in progress, then close (1000).

Server -> client: ``session.created``, ``session.updated``, ``context.created``,
``speech.audio.delta`` ``{"context_id", "sequence", "audio": base64}`` (with ``binary`` on: the
same event without ``audio`` but with ``bytes``, followed at once by one binary frame holding
them), ``speech.audio.timestamps`` ``{"context_id", "words": [{"word", "start", "end"}]}``
(seconds from the context's first sample), ``input_text.flushed``, ``speech.audio.done``
``{"context_id", "usage"}``, ``context.cancelled`` ``{"context_id", "reason"}`` and ``error``
``{"context_id"?, "error": {"message", "type", "code", "param", "status", "retry_after"?}}``.
"""
from __future__ import annotations

import base64
from typing import Any

from chatterbox_server.api.realtime.channel import Channel, Frame, dumps, parse_json
from chatterbox_server.api.realtime.common import SocketOptions, Wires, context_settings, load_options, output_rate
from chatterbox_server.audio.timings import word_objects
from chatterbox_server.errors import OPENAI_TYPES
from chatterbox_server.synthesis.realtime import (
    Audio,
    Cancelled,
    ContextFailed,
    Done,
    Event,
    Flushed,
    SessionError,
)
from workers.engines.base import EngineInfo

DEFAULT_CONTEXT = "default"
MAX_CONTEXT_ID = 128
SENT_TYPES = ("session.update", "context.create", "input_text.append", "input_text.flush", "input_text.done",
              "context.cancel", "session.close")


class NativeProtocol:
    def __init__(self, info: EngineInfo, query: dict[str, Any], idle_timeout: float) -> None:
        self.info = info
        self.idle_timeout = idle_timeout
        self.options = load_options(query, "query: ")
        # by context serial (an id may be reused once its context ended: its last events may still be queued)
        self.wires = Wires(info)
        self.binary: dict[int, bool] = {}
        self.sequences: dict[int, int] = {}

    # -- client messages ------------------------------------------------------------------------
    def opened(self, channel: Channel) -> list[Frame]:
        return [dumps({"type": "session.created", "session_id": channel.session.id,
                       "session": self._describe(self.options), "engine": self.info.engine,
                       "limits": {"max_contexts": channel.session.limits.max_contexts,
                                  "max_context_chars": channel.session.limits.max_context_chars,
                                  "max_message_bytes": channel.max_message_bytes,
                                  "idle_timeout": self.idle_timeout}})]

    def handle(self, message: Any, channel: Channel) -> None:
        data = parse_json(message)
        kind = data.get("type")
        context_id = data.get("context_id", DEFAULT_CONTEXT)
        if not isinstance(context_id, str) or not 0 < len(context_id) <= MAX_CONTEXT_ID:
            raise SessionError(f"context_id must be a string of 1 to {MAX_CONTEXT_ID} characters",
                               code="invalid_value", param="context_id")
        session = channel.session
        if kind == "session.update":
            sent = _object(data.get("session", {}), "session")
            self.options = load_options({**self.options.sent, **sent}, "session.")
            channel.send(dumps({"type": "session.updated", "session": self._describe(self.options)}))
        elif kind == "context.create":
            self._open(channel, context_id, _object(data.get("session", {}), "session"))
        elif kind == "input_text.append":
            text = data.get("text")
            if not isinstance(text, str):
                raise SessionError("input_text.append needs `text`, a string", context_id, param="text")
            if context_id not in session.contexts:
                self._open(channel, context_id, {})
            session.append(context_id, text)
        elif kind == "input_text.flush":
            session.flush(context_id, data.get("flush_id"))
        elif kind == "input_text.done":
            session.end(context_id)
        elif kind == "context.cancel":
            if not session.cancel(context_id):
                raise SessionError(f"no open context {context_id!r}", context_id, code="context_not_found",
                                   status=404)
        elif kind == "session.close":
            channel.close(graceful=True)
        else:
            raise SessionError(f"unknown event type {kind!r}; send one of {', '.join(SENT_TYPES)}",
                               context_id if "context_id" in data else None, code="unknown_event", param="type")

    def _open(self, channel: Channel, context_id: str, overrides: dict[str, Any]) -> None:
        options = load_options({**self.options.sent, **overrides}, "session.") if overrides else self.options
        rate = output_rate(options["response_format"], self.info.sample_rate, options["sample_rate"],
                           "session.sample_rate")
        settings = context_settings(options, self.info, context_id=context_id)
        context = channel.session.open(context_id, settings)
        self.binary[context.serial] = options["binary"]
        self.wires.open(context.serial, options["response_format"], rate)
        channel.send(dumps({"type": "context.created", "context_id": context_id, "seed": settings.seed,
                            "voice": settings.voice.name, "session": self._describe(options)}))

    def _describe(self, options: SocketOptions) -> dict[str, Any]:
        described = dict(options.values)
        described["sample_rate"] = output_rate(options["response_format"], self.info.sample_rate,
                                               options["sample_rate"])
        return described

    # -- server events --------------------------------------------------------------------------
    def frames(self, event: Event) -> list[Frame]:
        if isinstance(event, Audio):
            frames = self._audio(event)
            if event.words:
                frames.append(dumps({"type": "speech.audio.timestamps", "context_id": event.context_id,
                                     "words": word_objects(event.words)}))
            return frames
        if isinstance(event, Flushed):
            return [dumps({"type": "input_text.flushed", "context_id": event.context_id,
                           "flush_id": event.flush_id})]
        if isinstance(event, Done):
            frames = self._tail(event.serial, event.context_id)
            usage = event.usage
            frames.append(dumps({"type": "speech.audio.done", "context_id": event.context_id, "usage": {
                "input_characters": usage.characters, "segments": usage.segments,
                "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens, "audio_seconds": usage.audio_seconds}}))
            return frames
        if isinstance(event, Cancelled):
            self._forget(event.serial)
            return [dumps({"type": "context.cancelled", "context_id": event.context_id, "reason": event.reason})]
        if isinstance(event, ContextFailed):
            self._forget(event.serial)
            return self.error_frames(SessionError(event.message, event.context_id, code=event.code,
                                                  status=event.status, retry_after=event.retry_after))
        return []

    def _audio(self, event: Audio) -> list[Frame]:
        data = self.wires.feed(event)
        return self._delta(event.serial, event.context_id, data) if data else []

    def _delta(self, serial: int, context_id: str, data: bytes) -> list[Frame]:
        sequence = self.sequences.get(serial, 0)
        self.sequences[serial] = sequence + 1
        head = {"type": "speech.audio.delta", "context_id": context_id, "sequence": sequence}
        if self.binary.get(serial, False):
            return [dumps({**head, "bytes": len(data)}), data]
        return [dumps({**head, "audio": base64.b64encode(data).decode("ascii")})]

    def _tail(self, serial: int, context_id: str) -> list[Frame]:
        """What the encoder still holds (codecs buffer a frame), sent before the context's end."""
        tail = self.wires.finish(serial)
        frames = self._delta(serial, context_id, tail) if tail else []
        self._forget(serial)
        return frames

    def _forget(self, serial: int) -> None:
        self.wires.forget(serial)
        self.binary.pop(serial, None)
        self.sequences.pop(serial, None)

    def ends_socket(self, event: Event) -> bool:
        return False

    def error_frames(self, error: SessionError) -> list[Frame]:
        return error_frames(error)


def error_frames(error: SessionError) -> list[Frame]:
    body: dict[str, Any] = {"message": str(error), "type": OPENAI_TYPES.get(error.status, "server_error"),
                            "code": error.code, "param": error.param, "status": error.status}
    if error.retry_after is not None:
        body["retry_after"] = error.retry_after
    event: dict[str, Any] = {"type": "error"}
    if error.context_id is not None:
        event["context_id"] = error.context_id
    event["error"] = body
    return [dumps(event)]


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SessionError(f"`{name}` must be a JSON object", param=name)
    return value
