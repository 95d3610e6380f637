"""Cartesia's ``/tts/websocket`` on our session core.

Each client message is one piece of a context: ``{"context_id", "transcript", "continue",
"model_id", "voice": {"mode": "id", "id"}, "output_format": {"container": "raw", "encoding",
"sample_rate"}, "language", "add_timestamps", "max_buffer_delay_ms", "flush"?,
"generation_config"?: {"speed"}}``. The first piece opens the context with its voice and format;
pieces are joined verbatim; ``continue: false`` ends the context (after its last piece);
``{"context_id", "cancel": true}`` stops it (nothing of it is sent after that); ``flush: true`` is
answered ``flush_done`` with an increasing ``flush_id`` once its audio is out. A piece without
``continue: true`` is the context's last, as there.
``max_buffer_delay_ms: 0`` (what pipecat and LiveKit send) synthesizes each piece as it comes;
otherwise our segmenter waits at most that long for a better cut.

The server sends ``chunk`` (``data`` base64), ``timestamps`` (``word_timestamps`` ``{words,
start, end}`` in seconds from the context's start), ``done`` as its own message, ``flush_done``
and ``error``, each with ``type``, ``context_id``, ``done`` and ``status_code``.
"""
from __future__ import annotations

import base64
from typing import Any

from chatterbox_server.api.realtime.channel import Channel, Frame, dumps, parse_json
from chatterbox_server.api.realtime.common import Wires, output_rate, with_max_delay
from chatterbox_server.api.realtime.vendor import our_voice, vendor_context
from chatterbox_server.audio.timings import cartesia as word_timestamps
from chatterbox_server.synthesis.realtime import (
    Audio,
    Cancelled,
    ContextFailed,
    Done,
    Event,
    Flushed,
    SessionError,
)
from chatterbox_server.text.segmenter import SegmentPolicy
from workers.engines.base import EngineInfo

ENCODINGS = {"pcm_s16le": "pcm", "pcm_f32le": "pcm_f32le", "pcm_mulaw": "mulaw", "pcm_alaw": "alaw"}
SPEED_RANGE = (0.6, 1.5)


class CartesiaProtocol:
    def __init__(self, info: EngineInfo, idle_timeout: float) -> None:
        self.info = info
        self.idle_timeout = idle_timeout
        self.wires = Wires(info)
        self.flush_ids: dict[str, int] = {}
        self.immediate: set[str] = set()        # contexts whose pieces go to synthesis as they come

    def opened(self, channel: Channel) -> list[Frame]:
        return []

    # -- client messages ------------------------------------------------------------------------
    def handle(self, message: Any, channel: Channel) -> None:
        data = parse_json(message)
        context_id = data.get("context_id")
        if not isinstance(context_id, str) or not 0 < len(context_id) <= 128:
            raise SessionError("context_id must be a string of 1 to 128 characters", "", param="context_id")
        session = channel.session
        if data.get("cancel"):
            session.cancel(context_id)
            return
        transcript = data.get("transcript", "")
        if not isinstance(transcript, str):
            raise SessionError("transcript must be a string", context_id, param="transcript")
        if context_id not in session.contexts:
            self._open(channel, context_id, data)
        if transcript:
            session.append(context_id, transcript)
        if data.get("flush"):
            session.flush(context_id, self._next_flush_id(context_id))
        elif transcript and context_id in self.immediate:
            session.flush(context_id, ack=False)
        if data.get("continue") is not True:        # Cartesia's default: this request is the last piece
            session.end(context_id)

    def _next_flush_id(self, context_id: str) -> int:
        self.flush_ids[context_id] = self.flush_ids.get(context_id, 0) + 1
        return self.flush_ids[context_id]

    def _open(self, channel: Channel, context_id: str, data: dict[str, Any]) -> None:
        fmt, rate = self._format(data.get("output_format"), context_id)
        voice = data.get("voice") or {}
        options: dict[str, Any] = {"voice": our_voice(voice.get("id") if isinstance(voice, dict) else None, self.info),
                                   "timestamps": bool(data.get("add_timestamps"))}
        model = data.get("model_id")
        if isinstance(model, str) and model:
            options["model"] = model        # sonic-* (theirs) speaks with the default model; ours route
        language = data.get("language")
        if isinstance(language, str) and language:
            options["language"] = language
        config = data.get("generation_config")
        speed = config.get("speed") if isinstance(config, dict) else None
        if speed is not None:
            if not isinstance(speed, (int, float)) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
                raise SessionError(f"generation_config.speed must be between {SPEED_RANGE[0]} and {SPEED_RANGE[1]}",
                                   context_id, param="generation_config.speed")
            options["speed"] = float(speed)
        delay = data.get("max_buffer_delay_ms")
        if delay is not None and (not isinstance(delay, (int, float)) or not 0 <= delay <= 5000):
            raise SessionError("max_buffer_delay_ms must be between 0 and 5000", context_id,
                               param="max_buffer_delay_ms")
        policy = SegmentPolicy() if not delay else with_max_delay(SegmentPolicy(), int(delay))
        settings = vendor_context(self.info, options, policy, context_id)
        if delay == 0:
            self.immediate.add(context_id)
        context = channel.session.open(context_id, settings)
        self.wires.open(context.serial, fmt, rate)

    def _format(self, output_format: Any, context_id: str) -> tuple[str, int]:
        if output_format is None:
            return "pcm", self.info.sample_rate
        if not isinstance(output_format, dict):
            raise SessionError("output_format must be an object", context_id, param="output_format")
        if output_format.get("container", "raw") != "raw":
            raise SessionError("only the raw container is served on the socket", context_id,
                               param="output_format.container")
        encoding = output_format.get("encoding", "pcm_s16le")
        if encoding not in ENCODINGS:
            raise SessionError(f"encoding {encoding!r} is not served; use one of {', '.join(ENCODINGS)}",
                               context_id, param="output_format.encoding")
        rate = output_format.get("sample_rate", self.info.sample_rate)
        if not isinstance(rate, int):
            raise SessionError("sample_rate must be an integer", context_id, param="output_format.sample_rate")
        fmt = ENCODINGS[encoding]
        return fmt, output_rate(fmt, self.info.sample_rate, rate, "output_format.sample_rate")

    # -- server events --------------------------------------------------------------------------
    def frames(self, event: Event) -> list[Frame]:
        if isinstance(event, Audio):
            data = self.wires.feed(event)
            frames: list[Frame] = [self._chunk(event.context_id, data, event.synth_seconds)] if data else []
            if event.words:
                frames.append(dumps({"type": "timestamps", "context_id": event.context_id, "done": False,
                                     "status_code": 206, "word_timestamps": word_timestamps(event.words)}))
            return frames
        if isinstance(event, Flushed):
            return [dumps({"type": "flush_done", "context_id": event.context_id, "flush_id": event.flush_id,
                           "flush_done": True, "done": False, "status_code": 206})]
        if isinstance(event, Done):
            tail = self.wires.finish(event.serial)
            self._forget(event.context_id)
            frames = [self._chunk(event.context_id, tail, 0.0)] if tail else []
            frames.append(dumps({"type": "done", "context_id": event.context_id, "done": True, "status_code": 200}))
            return frames
        if isinstance(event, Cancelled):
            self.wires.forget(event.serial)
            self._forget(event.context_id)
            return []       # Cartesia sends nothing more for a cancelled context
        if isinstance(event, ContextFailed):
            self.wires.forget(event.serial)
            self._forget(event.context_id)
            return self.error_frames(SessionError(event.message, event.context_id, code=event.code,
                                                  status=event.status))
        return []

    def _forget(self, context_id: str) -> None:
        self.flush_ids.pop(context_id, None)
        self.immediate.discard(context_id)

    def _chunk(self, context_id: str, data: bytes, seconds: float) -> str:
        return dumps({"type": "chunk", "context_id": context_id, "data": base64.b64encode(data).decode("ascii"),
                      "step_time": round(seconds * 1000, 1), "done": False, "status_code": 206})

    def error_frames(self, error: SessionError) -> list[Frame]:
        return error_frames(error)

    def ends_socket(self, event: Event) -> bool:
        return False


def error_frames(error: SessionError) -> list[Frame]:
    """Every Cartesia message carries `context_id` (pipecat reads it before anything else)."""
    return [dumps({"type": "error", "context_id": error.context_id or "", "error": str(error),
                   "error_code": error.code, "status_code": error.status, "done": True})]
