"""Decoding audio a client sent, with FFmpeg (PyAV) held on a short leash.

FFmpeg left to itself probes the whole buffer and may pick a demuxer that opens other inputs: an
"mp3" that continues as SDP text makes it open RTP/UDP ports, HLS and ffconcat playlists open
files and URLs. So the demuxer is named from the sniffed magic bytes, every protocol is refused
(the buffer reaches FFmpeg through a Python file object, which needs none), nested demuxers are
refused, and a wall-clock limit bounds the whole decode: FFmpeg's interrupt callback covers
opening and demuxing, the loop below covers decoding. No Flask or gevent here.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from chatterbox_server.errors import ApiError

DEMUXERS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "ogg": "ogg", "webm": "matroska", "mp4": "mov",
            "aac": "aac"}
DECODE_TIMEOUT_SECONDS = 15.0    # a 20 MB upload decodes in well under a second on one core
MAX_SOURCE_RATE = 384_000        # the highest rate real audio uses; above it a header lies


class UntrustedAudioError(ValueError):
    """The data is not audio this server decodes, or decoding it took too long."""


def open_options(demuxer: str) -> dict[str, str]:
    """AVFormatContext options for untrusted input: no protocol and no demuxer but the one we named."""
    return {"protocol_whitelist": "", "format_whitelist": demuxer, "enable_drefs": "0"}


def decode_pcm16(data: bytes, fmt: str, rate: int, max_seconds: float, min_rate: int,
                 timeout: float | None = None) -> tuple[np.ndarray, int]:
    """(PCM16 mono at `rate`, the source's sample rate) of at most `max_seconds` + 1 s of audio.

    Raises UntrustedAudioError with a short reason (never FFmpeg's text, which may name paths)."""
    import av
    timeout = DECODE_TIMEOUT_SECONDS if timeout is None else timeout
    demuxer = DEMUXERS.get(fmt)
    if demuxer is None:
        raise UntrustedAudioError(f"unsupported format {fmt!r}")
    deadline = time.monotonic() + timeout
    max_samples = int((max_seconds + 1) * rate)
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer, container_options=open_options(demuxer),
                     timeout=timeout) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise UntrustedAudioError("no audio stream")
            source_rate = stream.codec_context.sample_rate or 0
            if not min_rate <= source_rate <= MAX_SOURCE_RATE:
                raise UntrustedAudioError(f"sample rate {source_rate} Hz is outside {min_rate} to "
                                          f"{MAX_SOURCE_RATE} Hz")
            parts = list(_resampled(container, stream, rate, max_samples, deadline, timeout))
    except UntrustedAudioError:
        raise
    except (av.FFmpegError, ValueError, EOFError, OSError, IndexError, MemoryError) as exc:
        if isinstance(exc, av.ExitError) or time.monotonic() > deadline:
            raise UntrustedAudioError(f"decoding took longer than {timeout:g} s") from None
        raise UntrustedAudioError(f"not decodable as {fmt} ({type(exc).__name__})") from None
    samples = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    return samples, source_rate


def _resampled(container: Any, stream: Any, rate: int, max_samples: int, deadline: float,
               timeout: float) -> Iterator[np.ndarray]:
    import av
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    total = 0
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            part = out.to_ndarray().reshape(-1)
            total += part.size
            yield part
        if total > max_samples:          # stop early: a bomb never fills memory
            break
        if time.monotonic() > deadline:
            raise UntrustedAudioError(f"decoding took longer than {timeout:g} s")
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


STORED_RATE = 24000                     # library voices are stored at this rate
MIN_SECONDS, MAX_SECONDS = 1.0, 120.0
MIN_SOURCE_RATE = 8000
MAGIC = ((b"RIFF", "wav"), (b"ID3", "mp3"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"\x1a\x45\xdf\xa3", "webm"))


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
