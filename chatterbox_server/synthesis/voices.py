"""Reference audio: name rules, and decoding of untrusted uploads (the library is store/voice_library.py).

Uploaded audio is untrusted: its size is bounded, its format is sniffed from the content (never
from the client's file name), it is decoded by FFmpeg (PyAV) into 24 kHz mono PCM16 and stored as
WAV under a name we check, so no client string ever becomes a path. Writes are atomic.
No Flask or gevent here.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import wave
from collections.abc import Callable

import numpy as np

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.janitor import upload_prefix
from chatterbox_server.security.untrusted_audio import UntrustedAudioError, decode_pcm16
from chatterbox_server.synthesis.requests import OPENAI_VOICES

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")     # always fullmatch: `$` allows "\n"
STORED_RATE = 24000
MIN_SECONDS, MAX_SECONDS = 1.0, 120.0
MIN_SOURCE_RATE = 8000
MAGIC = ((b"RIFF", "wav"), (b"ID3", "mp3"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"\x1a\x45\xdf\xa3", "webm"))


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ApiError(400, "voice names are 1-64 letters, digits, '_' or '-', starting with a letter or "
                            "digit", param="name", code="invalid_voice_name")
    if name in ("default", *OPENAI_VOICES):
        raise ApiError(400, f"{name!r} is a reserved voice name", param="name", code="invalid_voice_name")


def sniff_format(data: bytes) -> str | None:
    for magic, fmt in MAGIC:
        if data.startswith(magic):
            return fmt
    if data[4:8] == b"ftyp":
        return "mp4"
    if len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        return "mp3" if (data[1] & 0x06) != 0 else "aac"
    return None


def decode_reference(data: bytes, max_bytes: int) -> tuple[np.ndarray, str, float]:
    """Untrusted voice upload -> (PCM16 mono at 24 kHz, sniffed format, seconds). Raises ApiError 4xx."""
    return decode_upload(data, max_bytes=max_bytes, rate=STORED_RATE, seconds=(MIN_SECONDS, MAX_SECONDS),
                         param="voice_file")


def decode_upload(data: bytes, *, max_bytes: int, rate: int, seconds: tuple[float, float],
                  param: str, too_long: Callable[[float], None] | None = None) -> tuple[np.ndarray, str, float]:
    """Untrusted audio -> (PCM16 mono at `rate`, sniffed format, duration), bounded in size and length.

    Decoding stops just past seconds[1]; audio longer than that is a 400, or whatever `too_long`
    (given the seconds decoded) raises: a request budget's refusal."""
    if len(data) > max_bytes:
        raise ApiError(413, f"{param} is {len(data)} bytes; the limit is {max_bytes}", param=param,
                       code="file_too_large")
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError(400, f"{param} is not audio this server reads (wav, mp3, flac, ogg, webm, m4a, aac)",
                       param=param, code="unsupported_audio")
    samples, _ = _decode(data, fmt, rate, seconds[1], param)
    duration = samples.size / rate
    if too_long is not None and duration > seconds[1]:
        too_long(duration)
    if not seconds[0] <= duration <= seconds[1]:
        raise ApiError(400, f"{param} lasts {duration:.1f} s; send {seconds[0]:.0f} to {seconds[1]:.0f} s of "
                            "clear speech", param=param, code="unsupported_audio")
    return samples, fmt, duration


def _decode(data: bytes, fmt: str, rate: int, max_seconds: float, param: str) -> tuple[np.ndarray, int]:
    try:
        return decode_pcm16(data, fmt, rate, max_seconds, MIN_SOURCE_RATE)
    except UntrustedAudioError as exc:
        raise ApiError(400, f"{param} could not be decoded as audio: {exc}", param=param,
                       code="unsupported_audio") from None


def pcm_to_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def write_temporary_voice(directory: str, data: bytes, max_bytes: int) -> str:
    """A one-off voice_file, decoded and checked like a library voice; the caller deletes it."""
    samples, _, _ = decode_reference(data, max_bytes)
    return write_temporary_wav(directory, samples, STORED_RATE)


def write_temporary_wav(directory: str, samples: np.ndarray, rate: int) -> str:
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=upload_prefix(), suffix=".wav", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pcm_to_wav(samples, rate))
    except BaseException:
        os.unlink(path)             # a full disk leaves no half file behind
        raise
    return path


def __getattr__(name: str) -> object:
    """VoiceLibrary and StoredVoice live in store.voice_library now; old imports keep working."""
    if name in ("VoiceLibrary", "StoredVoice"):
        from chatterbox_server.store import voice_library
        return getattr(voice_library, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
