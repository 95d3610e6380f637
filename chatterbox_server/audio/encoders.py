"""Encode mono PCM16 little-endian audio into the HTTP response formats.

Two entry points:

* :class:`StreamEncoder` turns PCM chunks into encoded bytes progressively, for
  chunked HTTP responses (every call returns the bytes not yet returned).
* :func:`encode_whole` encodes a complete clip into a complete file.

``wav`` and ``pcm`` need no codec. ``mp3``, ``opus`` (Ogg Opus), ``aac`` (ADTS)
and ``flac`` are encoded with PyAV (FFmpeg). PyAV's encoder re-chunks the input
into the codec's fixed frame size, so callers may feed chunks of any length;
the last partial frame is flushed by :meth:`StreamEncoder.finish`.

Lossy codecs add priming/padding: a decoded mp3/aac stream can be up to about
two codec frames longer than the input (aac ADTS cannot signal the 1024-sample
priming; streamed mp3 has no Xing/LAME header carrying the encoder delay).
Streamed flac has a STREAMINFO block without total sample count and MD5 (the
sink cannot be rewound); :func:`encode_whole` writes a complete one.
With no audio at all, mp3/opus/aac get one silent sample so the file still decodes.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

FORMATS: tuple[str, ...] = ("wav", "mp3", "opus", "aac", "flac", "pcm")

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}

FILE_EXTENSIONS: dict[str, str] = {
    "wav": "wav",
    "mp3": "mp3",
    "opus": "opus",
    "aac": "aac",
    "flac": "flac",
    "pcm": "pcm",
}

_BYTES_PER_SAMPLE = 2
_WAV_PLACEHOLDER = 0xFFFFFFFF


@dataclass(frozen=True)
class _CodecSpec:
    """How one response format maps onto an FFmpeg muxer and encoder."""

    container: str
    codec: str
    bit_rate: int = 0
    container_options: dict[str, str] = field(default_factory=dict)
    # Encode one silent sample if no audio came at all: a file with headers but no
    # audio packets (mp3: ID3 only, Ogg: header pages only, ADTS: empty) won't probe.
    pad_empty: bool = True


_CODEC_SPECS: dict[str, _CodecSpec] = {
    "mp3": _CodecSpec("mp3", "libmp3lame", 64_000),
    # page_duration (µs) bounds how long the Ogg muxer holds packets before it
    # emits a page: the streaming latency added by the container (default 1 s).
    "opus": _CodecSpec("ogg", "libopus", 32_000, {"page_duration": "60000"}),
    "aac": _CodecSpec("adts", "aac", 64_000),
    # No 8 KiB PADDING metadata block: nothing is ever added to the metadata.
    "flac": _CodecSpec("flac", "flac", 0, {"metadata_header_padding": "0"}, pad_empty=False),
}


def _check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a known response format, else raise ValueError."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def wav_header(
    sample_rate: int, channels: int = 1, bits_per_sample: int = 16, data_bytes: int | None = None
) -> bytes:
    """44-byte canonical PCM WAV header.

    ``data_bytes`` None gives a streaming header whose RIFF and data sizes are the
    placeholder 0xFFFFFFFF (length unknown).
    """
    block_align = channels * bits_per_sample // 8
    if data_bytes is None:
        riff_size = data_size = _WAV_PLACEHOLDER
    else:
        if data_bytes < 0:
            raise ValueError("data_bytes must be >= 0")
        data_size = min(data_bytes, _WAV_PLACEHOLDER - 36)
        riff_size = 36 + data_size
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        bits_per_sample,
        b"data",
        data_size,
    )


class _StreamSink:
    """Write-only, non-seekable file object that collects muxer output."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def take(self) -> bytes:
        """Return and forget everything written so far."""
        data = bytes(self._buf)
        self._buf.clear()
        return data


class _FileSink(io.BytesIO):
    """Seekable in-memory file that survives the container closing it."""

    def close(self) -> None:  # PyAV calls close() on custom IO; keep the bytes.
        pass


def _codec_rate(codec_name: str, sample_rate: int) -> int:
    """Sample rate to encode at: ``sample_rate`` if the codec takes it, else the next one up."""
    rates = av.Codec(codec_name, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    higher = [r for r in rates if r >= sample_rate]
    return min(higher) if higher else max(rates)


class _AVEncoder:
    """One PyAV output container with a single mono audio stream."""

    def __init__(self, spec: _CodecSpec, sample_rate: int, sink: object, *, streaming: bool) -> None:
        options = dict(spec.container_options)
        if streaming:
            options["flush_packets"] = "1"  # hand every packet to the sink at once
        self._sample_rate = sample_rate
        self._pad_empty = spec.pad_empty
        self._time_base = Fraction(1, sample_rate)
        self._pts = 0
        self._container = av.open(sink, mode="w", format=spec.container, container_options=options)
        try:
            self._stream = self._container.add_stream(
                spec.codec, rate=_codec_rate(spec.codec, sample_rate), layout="mono"
            )
            if spec.bit_rate:
                self._stream.bit_rate = spec.bit_rate
            self._container.start_encoding()
        except Exception:
            self._container.close()
            raise

    def encode(self, samples: np.ndarray) -> None:
        """Encode int16 mono samples and mux whatever packets are ready."""
        if samples.size == 0:
            return
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._sample_rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += samples.size
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and write the container trailer."""
        if self._pts == 0 and self._pad_empty:
            self.encode(np.zeros(1, dtype=np.int16))
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()


def _samples(pcm: bytes) -> np.ndarray:
    """View whole PCM16 little-endian samples as a native int16 array."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)


class StreamEncoder:
    """Feed PCM16 mono chunks, get encoded bytes out progressively.

    :meth:`header`, :meth:`feed` and :meth:`finish` each return the encoded bytes
    not returned before, so ``header() + feed(a) + feed(b) + finish()`` is the
    whole stream. :meth:`header` is optional: without it the first :meth:`feed`
    carries the header bytes. For wav, ``streaming_wav_header=False`` emits no
    header at all (raw PCM data), for callers that write their own.
    """

    def __init__(self, fmt: str, sample_rate: int, *, streaming_wav_header: bool = True) -> None:
        self.fmt = _check_format(fmt)
        self.sample_rate = sample_rate
        self._finished = False
        self._carry = b""  # odd trailing byte of the last chunk (codec formats only)
        self._sink = _StreamSink()
        self._av: _AVEncoder | None = None
        if fmt == "wav" and streaming_wav_header:
            self._sink.write(wav_header(sample_rate))
        elif fmt in _CODEC_SPECS:
            self._av = _AVEncoder(_CODEC_SPECS[fmt], sample_rate, self._sink, streaming=True)

    @property
    def content_type(self) -> str:
        """HTTP Content-Type of the produced stream."""
        return CONTENT_TYPES[self.fmt]

    def header(self) -> bytes:
        """Bytes that can be sent before any audio (wav header, container headers)."""
        return self._sink.take()

    def feed(self, pcm: bytes) -> bytes:
        """Encode one PCM16 chunk; return the encoded bytes available now (may be b"")."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if self._av is None:
            self._sink.write(bytes(pcm))
            return self._sink.take()
        data = self._carry + bytes(pcm)
        whole = len(data) - len(data) % _BYTES_PER_SAMPLE
        self._carry = data[whole:]
        self._av.encode(_samples(data[:whole]))
        return self._sink.take()

    def finish(self) -> bytes:
        """Flush the encoder and muxer; return the remaining bytes (trailer included)."""
        if self._finished:
            return b""
        self._finished = True
        if self._av is not None:
            self._av.close()
        return self._sink.take()


def encode_whole(fmt: str, pcm: bytes, sample_rate: int) -> bytes:
    """Whole file; for wav the header carries the exact sizes.

    Codec formats are muxed into a seekable buffer, so mp3 gets its Xing/LAME
    header (gapless duration) and flac a STREAMINFO with total samples and MD5.
    """
    _check_format(fmt)
    pcm = bytes(pcm)
    if fmt == "pcm":
        return pcm
    pcm = pcm[: len(pcm) - len(pcm) % _BYTES_PER_SAMPLE]
    if fmt == "wav":
        return wav_header(sample_rate, data_bytes=len(pcm)) + pcm
    sink = _FileSink()
    encoder = _AVEncoder(_CODEC_SPECS[fmt], sample_rate, sink, streaming=False)
    encoder.encode(_samples(pcm))
    encoder.close()
    return sink.getvalue()


def pcm_to_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()
