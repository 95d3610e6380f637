"""Deepgram's ``/v1/speak`` socket on our session core: one conversation per socket.

Query: ``model`` (a voice of ours if it names one, else the default voice), ``encoding``
(``linear16``, ``mulaw``, ``alaw``), ``sample_rate`` (default 24000 for linear16, 8000 for
G.711). ``{"type": "Speak", "text"}`` appends (LiveKit sends one word at a time: our segmenter
cuts), ``Flush`` synthesizes what is buffered and is answered ``Flushed`` with its
``sequence_id`` after that audio, ``Clear`` drops the buffered text and the audio being made and
is answered ``Cleared`` (no earlier audio follows it: Deepgram's audio carries no turn id),
``Close`` finishes what was flushed and closes. Audio goes out as binary frames; ``Metadata``
opens the socket.
"""
from __future__ import annotations

from typing import Any

from chatterbox_server.api.realtime.channel import Channel, Frame, dumps, parse_json
from chatterbox_server.api.realtime.common import Wires, output_rate
from chatterbox_server.api.realtime.vendor import our_voice, vendor_context
from chatterbox_server.synthesis.realtime import Audio, Cancelled, ContextFailed, Done, Event, Flushed, SessionError
from chatterbox_server.text.segmenter import SegmentPolicy
from workers.engines.base import EngineInfo

ENCODINGS = {"linear16": "pcm", "mulaw": "mulaw", "alaw": "alaw"}
SENT_TYPES = ("Speak", "Flush", "Clear", "Close")


class DeepgramProtocol:
    def __init__(self, info: EngineInfo, query: dict[str, str], idle_timeout: float) -> None:
        self.info = info
        self.idle_timeout = idle_timeout
        encoding = query.get("encoding") or "linear16"
        if encoding not in ENCODINGS:
            raise SessionError(f"encoding {encoding!r} is not served; use one of {', '.join(ENCODINGS)}",
                               param="encoding")
        self.format = ENCODINGS[encoding]
        requested = query.get("sample_rate")
        if requested is not None and not requested.isdigit():
            raise SessionError("sample_rate must be a whole number", param="sample_rate")
        rate = int(requested) if requested else (24000 if self.format == "pcm" else 8000)
        self.rate = output_rate(self.format, info.sample_rate, rate)
        self.model = query.get("model") or "aura-2-thalia-en"
        self.voice = our_voice(self.model, info)
        self.wires = Wires(info)
        self.turns = 0
        self.flushes = 0
        self.clears = 0
        self.clear_ids: dict[int, int] = {}

    @property
    def context_id(self) -> str:
        return f"turn-{self.turns}"

    def opened(self, channel: Channel) -> list[Frame]:
        return [dumps({"type": "Metadata", "request_id": channel.session.id, "model_name": self.model,
                       "model_version": self.info.model, "model_uuid": channel.session.id})]

    # -- client messages ------------------------------------------------------------------------
    def handle(self, message: Any, channel: Channel) -> None:
        data = parse_json(message)
        kind = data.get("type")
        session = channel.session
        if kind == "Speak":
            text = data.get("text")
            if not isinstance(text, str):
                raise SessionError("Speak needs `text`, a string", param="text")
            if self.context_id not in session.contexts:
                settings = vendor_context(self.info, {"voice": self.voice}, SegmentPolicy(), self.context_id)
                context = session.open(self.context_id, settings)
                self.wires.open(context.serial, self.format, self.rate)
            session.append(self.context_id, text)
        elif kind == "Flush":
            sequence = self.flushes
            self.flushes += 1
            if self.context_id in session.contexts:
                session.flush(self.context_id, sequence)
            else:
                channel.send(dumps({"type": "Flushed", "sequence_id": sequence}))
        elif kind == "Clear":
            sequence = self.clears
            self.clears += 1
            current = session.contexts.get(self.context_id)
            if current is None:
                channel.send(dumps({"type": "Cleared", "sequence_id": sequence}))
            else:
                self.clear_ids[current.serial] = sequence
                session.cancel(self.context_id)
            self.turns += 1             # the next Speak starts a new turn
        elif kind == "Close":
            channel.close(graceful=True)
        else:
            raise SessionError(f"unknown message type {kind!r}; send one of {', '.join(SENT_TYPES)}", param="type")

    # -- server events --------------------------------------------------------------------------
    def frames(self, event: Event) -> list[Frame]:
        if isinstance(event, Audio):
            data = self.wires.feed(event)
            return [data] if data else []
        if isinstance(event, Flushed):
            return [dumps({"type": "Flushed", "sequence_id": event.flush_id})]
        if isinstance(event, Cancelled):
            self.wires.forget(event.serial)
            return [dumps({"type": "Cleared", "sequence_id": self.clear_ids.pop(event.serial, 0)})]
        if isinstance(event, Done):
            tail = self.wires.finish(event.serial)
            return [tail] if tail else []
        if isinstance(event, ContextFailed):
            self.wires.forget(event.serial)
            return self.error_frames(SessionError(event.message, event.context_id, code=event.code,
                                                  status=event.status))
        return []

    def error_frames(self, error: SessionError) -> list[Frame]:
        return error_frames(error)

    def ends_socket(self, event: Event) -> bool:
        return False


def error_frames(error: SessionError) -> list[Frame]:
    return [dumps({"type": "Error", "err_code": error.code, "err_msg": str(error), "description": str(error),
                   "status": error.status})]
