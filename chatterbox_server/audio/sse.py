"""Server-Sent Events framing of the speech stream (OpenAI's `stream_format: sse` events)."""
from __future__ import annotations

import base64
import json


def event(payload: dict) -> bytes:
    """One event: a single `data:` line holding compact JSON, then the blank line that ends it."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n\n"


def audio_info(sample_rate: int, channels: int = 1, bits_per_sample: int = 16) -> bytes:
    return event({"type": "speech.audio.info", "sample_rate": sample_rate, "channels": channels,
                  "bits_per_sample": bits_per_sample})


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
