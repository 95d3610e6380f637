"""Server-Sent Events framing of the speech stream (OpenAI's `stream_format: sse` events)."""
from __future__ import annotations

import base64
import json
from typing import Any


def event(payload: dict) -> bytes:
    """One event: a single `data:` line holding compact JSON, then the blank line that ends it."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def audio_info(sample_rate: int, channels: int = 1, bits_per_sample: int = 16, encoding: str | None = None) -> bytes:
    """`sample_rate` is the rate of the deltas' audio; `encoding` is there only when they are not
    raw PCM16 (absent: PCM16, as OpenAI's event has it)."""
    payload: dict[str, Any] = {"type": "speech.audio.info", "sample_rate": sample_rate, "channels": channels,
                     "bits_per_sample": bits_per_sample}
    if encoding is not None:
        payload["encoding"] = encoding
    return event(payload)


def delta_encoding(fmt: str) -> dict[str, Any]:
    """`audio_info`'s bits_per_sample and encoding for deltas in encoder format `fmt` (Cartesia's
    names for the raw ones)."""
    if fmt in ("pcm", "wav"):
        return {}
    if fmt in ("mulaw", "alaw"):
        return {"bits_per_sample": 8, "encoding": f"pcm_{fmt}"}
    if fmt == "pcm_f32le":
        return {"bits_per_sample": 32, "encoding": fmt}
    return {"encoding": fmt}


def audio_delta(audio: bytes) -> bytes:
    return event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})


def audio_timestamps(words: list[dict]) -> bytes:
    """The words of the audio just sent (one text chunk's), in seconds from the stream's first sample."""
    return event({"type": "speech.audio.timestamps", "words": words})


def audio_done(input_tokens: int, output_tokens: int) -> bytes:
    return event({"type": "speech.audio.done",
                  "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                            "total_tokens": input_tokens + output_tokens}})


def error(message: str, code: str) -> bytes:
    return event({"type": "error", "error": {"message": message, "type": "server_error", "code": code}})
