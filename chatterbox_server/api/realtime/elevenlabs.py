"""ElevenLabs' streaming-input sockets on our session core.

``/v1/text-to-speech/{voice_id}/stream-input`` holds one turn; ``.../multi-stream-input`` holds
contexts. Query: ``model_id`` (any: the engine's model speaks), ``output_format`` (``pcm_{rate}``,
``ulaw_8000``, ``alaw_8000``, ``mp3_{rate}_{kbps}``, ``opus_48000_{kbps}``; default
``mp3_44100_128``, as there), ``auto_mode`` (whole sentences, each sent as soon as it is
complete), ``inactivity_timeout`` (seconds, default 20, at most 180), ``sync_alignment`` and the
rest accepted. Text messages ``{"text", "voice_settings"?, "generation_config"?: {
"chunk_length_schedule"}, "flush"?, "context_id"?}``; ``{"text": ""}`` ends a single stream and
is a keepalive on the multi socket; ``close_context`` ends a context (what was flushed is still
spoken, then ``isFinal``; a context with nothing flushed is stopped at once: pipecat and LiveKit
interrupt a turn this way); ``close_socket`` closes.

Audio goes out as ``{"audio": base64, "isFinal": null, "alignment", "normalizedAlignment"}``
(``contextId`` on the multi socket). Alignment is per message, relative to the start of that
message's audio (ElevenLabs' documented form, which pipecat relies on), covering the segment of
text the message ends; messages that end no segment carry null.
"""
from __future__ import annotations

import base64
from typing import Any

from chatterbox_server.api.realtime.channel import Channel, Frame, dumps, parse_json
from chatterbox_server.api.realtime.common import Wires, output_rate
from chatterbox_server.api.realtime.vendor import our_voice, vendor_context
from chatterbox_server.audio.timings import elevenlabs_alignment, offset_words
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

DEFAULT_CONTEXT = "default"
CODECS = {"pcm": "pcm", "ulaw": "mulaw", "alaw": "alaw", "mp3": "mp3", "opus": "opus"}
SPEED_RANGE = (0.7, 1.2)            # ElevenLabs' voice_settings.speed range
TERMINATORS = (".", "!", "?", "…", ";", ":", "。", "！", "？")


def parse_output_format(value: str, engine_rate: int) -> tuple[str, int]:
    codec, _, rest = value.partition("_")
    rate_text = rest.split("_", 1)[0]
    if codec not in CODECS or not rate_text.isdigit():
        raise SessionError(f"output_format {value!r} is not served; use pcm_<rate>, ulaw_8000, alaw_8000, "
                           "mp3_<rate>_<kbps> or opus_48000_<kbps>", code="invalid_value", param="output_format")
    fmt = CODECS[codec]
    return fmt, output_rate(fmt, engine_rate, int(rate_text), "output_format")


class ElevenLabsProtocol:
    def __init__(self, info: EngineInfo, voice_id: str, query: dict[str, str], multi: bool) -> None:
        self.info = info
        self.multi = multi
        self.voice = our_voice(voice_id, info)
        self.format, self.rate = parse_output_format(query.get("output_format") or "mp3_44100_128",
                                                       info.sample_rate)
        self.auto_mode = (query.get("auto_mode") or "").lower() == "true"
        self.language = query.get("language_code") or None
        try:
            timeout = float(query.get("inactivity_timeout") or 20)
        except ValueError:
            raise SessionError("inactivity_timeout must be a number of seconds", param="inactivity_timeout") from None
        self.idle_timeout = min(max(timeout, 1.0), 180.0)
        self.wires = Wires(info)
        self.texts: dict[int, dict[int, str]] = {}      # serial -> segment index -> text, for the alignment

    def opened(self, channel: Channel) -> list[Frame]:
        return []

    # -- client messages ------------------------------------------------------------------------
    def handle(self, message: Any, channel: Channel) -> None:
        data = parse_json(message)
        session = channel.session
        if data.get("close_socket"):
            channel.close()
            return
        context_id = data.get("context_id", DEFAULT_CONTEXT) if self.multi else DEFAULT_CONTEXT
        if not isinstance(context_id, str) or not 0 < len(context_id) <= 128:
            raise SessionError("context_id must be a string of 1 to 128 characters", param="context_id")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise SessionError("`text` must be a string", context_id, param="text")
        if data.get("close_context"):
            self._close_context(channel, context_id)
            return
        context = session.contexts.get(context_id)
        if text == "" and not data.get("flush"):
            if not self.multi and context is not None:
                session.end(context_id)             # the single stream's end of input
            elif not self.multi:
                channel.close()                     # ended before any text: nothing to speak
            return                                  # a keepalive
        if context is None:
            if text is None and not data.get("flush"):
                raise SessionError("send `text` first", context_id, param="text")
            self._open(channel, context_id, data)
        if text:
            session.append(context_id, text)
        if data.get("flush"):
            session.flush(context_id)
        elif self.auto_mode and text and text.rstrip().endswith(TERMINATORS):
            session.flush(context_id, ack=False)    # auto_mode: a complete sentence goes now

    def _open(self, channel: Channel, context_id: str, data: dict[str, Any]) -> None:
        settings = data.get("voice_settings") or {}
        if not isinstance(settings, dict):
            raise SessionError("voice_settings must be an object", context_id, param="voice_settings")
        config = data.get("generation_config") or {}
        schedule = config.get("chunk_length_schedule") if isinstance(config, dict) else None
        options: dict[str, Any] = {"voice": self.voice, "language": self.language, "timestamps": True}
        speed = settings.get("speed")
        if speed is not None:
            if not isinstance(speed, (int, float)) or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
                raise SessionError(f"voice_settings.speed must be between {SPEED_RANGE[0]} and {SPEED_RANGE[1]}",
                                   context_id, param="voice_settings.speed")
            options["speed"] = float(speed)
        if self.auto_mode:
            policy = SegmentPolicy.whole_sentences()
        elif schedule:
            if not isinstance(schedule, list) or not all(isinstance(n, int) and 0 < n <= 1000 for n in schedule):
                raise SessionError("chunk_length_schedule must be a list of character counts",
                                   context_id, param="generation_config.chunk_length_schedule")
            policy = SegmentPolicy.chunk_schedule(schedule)
        else:
            policy = SegmentPolicy.chunk_schedule()
        context_settings = vendor_context(self.info, options, policy, context_id)
        context = channel.session.open(context_id, context_settings)
        self.wires.open(context.serial, self.format, self.rate)

    def _close_context(self, channel: Channel, context_id: str) -> None:
        context = channel.session.contexts.get(context_id)
        if context is None:
            return
        if context.flushes_pending:
            channel.session.end(context_id, discard_unreleased=True)
        else:
            channel.session.cancel(context_id)

    # -- server events --------------------------------------------------------------------------
    def frames(self, event: Event) -> list[Frame]:
        if isinstance(event, Audio):
            data = self.wires.feed(event)
            alignment = self._alignment(event) if event.words else None
            return [self._audio(event.context_id, data, alignment)] if data or alignment else []
        if isinstance(event, Flushed):
            return []       # ElevenLabs has no flush acknowledgement
        if isinstance(event, (Done, Cancelled)):
            tail = self.wires.finish(event.serial) if isinstance(event, Done) else b""
            self.wires.forget(event.serial)
            frames: list[Frame] = [self._audio(event.context_id, tail)] if tail else []
            frames.append(self._final(event.context_id))
            return frames
        if isinstance(event, ContextFailed):
            self.wires.forget(event.serial)
            return self.error_frames(SessionError(event.message, event.context_id, code=event.code,
                                                  status=event.status))
        return []

    def _alignment(self, event: Audio) -> dict[str, Any]:
        """The segment's characters, relative to its first sample, spanning its whole audio: clients
        that add up each message's span (pipecat) stay on the audio's timeline."""
        words = offset_words(event.words or (), -event.segment_start)
        alignment = elevenlabs_alignment(words)
        segment_ms = round((event.start + len(event.pcm) / 2 / self.info.sample_rate - event.segment_start) * 1000)
        starts, durations = alignment["charStartTimesMs"], alignment["charDurationsMs"]
        covered = starts[-1] + durations[-1] if starts else 0
        if segment_ms > covered:
            alignment["chars"].append(" ")
            starts.append(covered)
            durations.append(segment_ms - covered)
        return alignment

    def _audio(self, context_id: str, data: bytes, alignment: dict[str, Any] | None = None) -> str:
        message: dict[str, Any] = {"audio": base64.b64encode(data).decode("ascii"), "isFinal": None,
                                   "normalizedAlignment": alignment, "alignment": alignment}
        if self.multi:
            message["contextId"] = context_id
        return dumps(message)

    def _final(self, context_id: str) -> str:
        return dumps({"isFinal": True, "contextId": context_id} if self.multi else {"isFinal": True})

    def error_frames(self, error: SessionError) -> list[Frame]:
        return error_frames(error, self.multi)

    def ends_socket(self, event: Event) -> bool:
        """The single stream closes once its turn is over (the SDK reads until the socket closes)."""
        return not self.multi and isinstance(event, (Done, Cancelled, ContextFailed))


def error_frames(error: SessionError, multi: bool) -> list[Frame]:
    """ElevenLabs' error shape: the SDK raises on a `message` key, LiveKit fails the context in `contextId`."""
    message: dict[str, Any] = {"message": str(error), "error": error.code, "code": error.status}
    if multi and error.context_id is not None:
        message["contextId"] = error.context_id
    return [dumps(message)]
