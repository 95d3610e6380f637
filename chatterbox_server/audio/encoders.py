"""Encode mono PCM16 little-endian audio into the HTTP response formats, at a chosen rate.

Two entry points:

* :class:`StreamEncoder` turns PCM chunks into encoded bytes progressively, for
  chunked HTTP responses (every call returns the bytes not yet returned).
* :func:`encode_whole` encodes a complete clip into a complete file.

Both take the engine's rate (``sample_rate``, what the PCM is at) and an optional wire
rate (``output_rate``, what the client gets; :func:`output_rate_for` picks and checks it).
A rate change goes through libswresample (PyAV's ``AudioResampler``), one stateful
resampler per stream: chunk joins neither click nor drop samples, :meth:`StreamEncoder.finish`
flushes its tail, and the output has ``len(input) * output_rate / sample_rate`` samples.
The resampler and the container-less encodings live in :mod:`chatterbox_server.audio.pcm`.

``wav`` and ``pcm`` need no codec. ``mulaw`` and ``alaw`` are raw G.711 bytes (one byte a
sample, no header: telephony's wire format), encoded by FFmpeg's ``pcm_mulaw``/``pcm_alaw``.
``pcm_f32le`` (raw float32 in [-1, 1), Cartesia's encoding) is for the WebSocket layer, not an
HTTP ``response_format``. ``mp3``, ``opus`` (Ogg Opus), ``aac`` (ADTS) and ``flac`` are encoded
with PyAV (FFmpeg). PyAV's encoder re-chunks the input into the codec's fixed frame size, so
callers may feed chunks of any length; the last partial frame is flushed by
:meth:`StreamEncoder.finish`.

Rates: every format takes every rate of :data:`OUTPUT_RATES` except Opus, whose encoder runs at
8, 12, 16, 24 or 48 kHz only: 22050 and 44100 are refused for it (ValueError) rather than
quietly sent at another rate than the one asked for. G.711 defaults to 8 kHz (telephony) and,
as Cartesia's ``pcm_mulaw``/``pcm_alaw``, also takes the other rates (wideband G.711 is rare
but harmless); every other format defaults to the engine's rate.

Content types: ``audio/basic`` is the registered type for mu-law (RFC 2046 4.3; strictly 8 kHz
mono, so responses also say the rate in a header). A-law has no registered type outside RTP
(RFC 4856's ``audio/PCMA`` is defined for RTP framing only), so it gets the customary
``audio/x-alaw-basic``.

Lossy codecs add priming/padding: a decoded mp3/aac stream can be up to about
two codec frames longer than the input (aac ADTS cannot signal the 1024-sample
priming; streamed mp3 has no Xing/LAME header carrying the encoder delay).
Streamed flac has a STREAMINFO block without total sample count and MD5 (the
sink cannot be rewound); :func:`encode_whole` writes a complete one.
With no audio at all, mp3/opus/aac get one silent sample so the file still decodes.
"""

from __future__ import annotations

import functools
import io
import struct
import wave
from dataclasses import dataclass, field

import av
import numpy as np

from chatterbox_server.audio.pcm import G711_CODECS, RawEncoder, Resampler, pcm16_frame, resample_all

FORMATS: tuple[str, ...] = ("wav", "mp3", "opus", "aac", "flac", "pcm", "mulaw", "alaw")
# What StreamEncoder and encode_whole take: the HTTP formats and the WebSocket layer's float PCM.
ENCODER_FORMATS: tuple[str, ...] = (*FORMATS, "pcm_f32le")
# The wire rates a client may ask for (Cartesia's and ElevenLabs' lists).
OUTPUT_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 44100, 48000)
G711_RATE = 8000

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
    "mulaw": "audio/basic",
    "alaw": "audio/x-alaw-basic",
}

FILE_EXTENSIONS: dict[str, str] = {
    "wav": "wav",
    "mp3": "mp3",
    "opus": "opus",
    "aac": "aac",
    "flac": "flac",
    "pcm": "pcm",
    "mulaw": "ul",  # sox's and FFmpeg's names for raw G.711
    "alaw": "al",
}

# Not an HTTP response format, so kept out of the tables above (and out of the OpenAPI document).
_INTERNAL_CONTENT_TYPES: dict[str, str] = {"pcm_f32le": "application/octet-stream"}

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
    """Return ``fmt`` if the encoders take it, else raise ValueError."""
    if fmt not in ENCODER_FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


@functools.cache
def rates_for(fmt: str) -> tuple[int, ...]:
    """The :data:`OUTPUT_RATES` that ``fmt`` can carry (its encoder's own list, where it has one)."""
    spec = _CODEC_SPECS.get(_check_format(fmt))
    codec_rates = av.Codec(spec.codec, "w").audio_rates if spec else None
    return tuple(rate for rate in OUTPUT_RATES if not codec_rates or rate in codec_rates)


def output_rate_for(fmt: str, engine_rate: int, requested: int | None) -> int:
    """The wire rate for ``fmt``: ``requested`` if the format carries it, else ValueError.

    With nothing requested: 8000 Hz for G.711, the engine's rate for the others (or, for a
    codec that cannot run at it, the codec's next rate up).
    """
    _check_format(fmt)
    if requested is None:
        if fmt in G711_CODECS:
            return G711_RATE
        spec = _CODEC_SPECS.get(fmt)
        return _codec_rate(spec.codec, engine_rate) if spec else engine_rate
    if isinstance(requested, bool) or requested not in OUTPUT_RATES:
        raise ValueError(f"sample rate {requested!r} is not offered; use one of "
                         f"{', '.join(map(str, OUTPUT_RATES))}")
    allowed = rates_for(fmt)
    if requested not in allowed:
        raise ValueError(f"{fmt} cannot carry {requested} Hz; use one of {', '.join(map(str, allowed))}")
    return requested


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
        frame = pcm16_frame(samples, self._sample_rate, self._pts)
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
    """Feed PCM16 mono chunks at ``sample_rate``, get encoded bytes at :attr:`output_rate` out progressively.

    :meth:`header`, :meth:`feed` and :meth:`finish` each return the encoded bytes
    not returned before, so ``header() + feed(a) + feed(b) + finish()`` is the
    whole stream. :meth:`header` is optional: without it the first :meth:`feed`
    carries the header bytes. For wav, ``streaming_wav_header=False`` emits no
    header at all (raw PCM data), for callers that write their own.

    ``output_rate`` None means :func:`output_rate_for`'s default; a rate the format cannot
    carry is a ValueError. With a rate change, :meth:`finish` also returns the resampler's tail.
    """

    def __init__(self, fmt: str, sample_rate: int, *, output_rate: int | None = None,
                 streaming_wav_header: bool = True) -> None:
        self.fmt = _check_format(fmt)
        self.sample_rate = sample_rate
        self.output_rate = output_rate_for(fmt, sample_rate, output_rate)
        self._finished = False
        self._carry = b""  # odd trailing byte of the last chunk (all but the pass-through formats)
        self._sink = _StreamSink()
        self._av: _AVEncoder | None = None
        self._raw: RawEncoder | None = None
        self._resampler = Resampler(sample_rate, self.output_rate) if self.output_rate != sample_rate else None
        if fmt == "wav" and streaming_wav_header:
            self._sink.write(wav_header(self.output_rate))
        if fmt in _CODEC_SPECS:
            self._av = _AVEncoder(_CODEC_SPECS[fmt], self.output_rate, self._sink, streaming=True)
        elif fmt not in ("wav", "pcm") or self._resampler is not None:
            self._raw = RawEncoder("pcm" if fmt == "wav" else fmt, self.output_rate)

    @property
    def content_type(self) -> str:
        """HTTP Content-Type of the produced stream."""
        return CONTENT_TYPES.get(self.fmt) or _INTERNAL_CONTENT_TYPES[self.fmt]

    @property
    def passthrough(self) -> bool:
        """True when feeding is a plain copy (PCM16 at the engine's rate): cheap enough for the hub."""
        return self._av is None and self._raw is None

    def header(self) -> bytes:
        """Bytes that can be sent before any audio (wav header, container headers)."""
        return self._sink.take()

    def feed(self, pcm: bytes) -> bytes:
        """Encode one PCM16 chunk; return the encoded bytes available now (may be b"")."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        if self.passthrough:
            self._sink.write(bytes(pcm))
            return self._sink.take()
        data = self._carry + bytes(pcm)
        whole = len(data) - len(data) % _BYTES_PER_SAMPLE
        self._carry = data[whole:]
        samples = _samples(data[:whole])
        self._emit(self._resampler.push(samples) if self._resampler is not None else samples)
        return self._sink.take()

    def finish(self) -> bytes:
        """Flush the resampler, encoder and muxer; return the remaining bytes (trailer included)."""
        if self._finished:
            return b""
        self._finished = True
        if self._resampler is not None:
            self._emit(self._resampler.flush())
        if self._av is not None:
            self._av.close()
        return self._sink.take()

    def _emit(self, samples: np.ndarray) -> None:
        if self._av is not None:
            self._av.encode(samples)
        elif self._raw is not None:
            self._sink.write(self._raw.encode(samples))


def encode_whole(fmt: str, pcm: bytes, sample_rate: int, output_rate: int | None = None) -> bytes:
    """Whole file at ``output_rate`` (default: :func:`output_rate_for`'s); for wav the header carries the exact sizes.

    Codec formats are muxed into a seekable buffer, so mp3 gets its Xing/LAME
    header (gapless duration) and flac a STREAMINFO with total samples and MD5.
    """
    rate = output_rate_for(fmt, sample_rate, output_rate)
    pcm = bytes(pcm)
    if fmt == "pcm" and rate == sample_rate:
        return pcm
    pcm = pcm[: len(pcm) - len(pcm) % _BYTES_PER_SAMPLE]
    samples = resample_all(_samples(pcm), sample_rate, rate)
    if fmt == "wav":
        return wav_header(rate, data_bytes=samples.size * _BYTES_PER_SAMPLE) + samples.astype("<i2").tobytes()
    if fmt not in _CODEC_SPECS:
        return RawEncoder(fmt, rate).encode(samples)
    sink = _FileSink()
    encoder = _AVEncoder(_CODEC_SPECS[fmt], rate, sink, streaming=False)
    encoder.encode(samples)
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
