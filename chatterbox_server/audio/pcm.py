"""Container-less PCM: the stateful resampler and the raw encodings (PCM16, float32, G.711).

Everything goes through FFmpeg by way of PyAV: libswresample for rate changes, ``pcm_mulaw`` and
``pcm_alaw`` for G.711 (the stdlib's audioop is gone in Python 3.13). No Flask, no gevent.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

# G.711 formats and their FFmpeg codecs: no container, one byte a sample.
G711_CODECS: dict[str, str] = {"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


def pcm16_frame(samples: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
    """One mono s16 frame of ``samples`` starting at sample ``pts``."""
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    frame.time_base = Fraction(1, sample_rate)
    frame.pts = pts
    return frame


NO_SAMPLES = np.zeros(0, dtype=np.int16)


class Resampler:
    """Stateful PCM16 mono rate conversion (libswresample): chunks in, the same audio as one piece out.

    The filter keeps its history across :meth:`push` calls, so splitting the input anywhere
    changes nothing in the output; :meth:`flush` returns the samples still held back.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._in_rate = in_rate
        self._pts = 0
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def push(self, samples: np.ndarray) -> np.ndarray:
        if samples.size == 0:
            return NO_SAMPLES
        frame = pcm16_frame(samples, self._in_rate, self._pts)
        self._pts += samples.size
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        pieces = [frame.to_ndarray().reshape(-1) for frame in frames]
        return np.concatenate(pieces).astype(np.int16, copy=False) if pieces else NO_SAMPLES


def resample_all(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """A whole clip at ``out_rate`` (the clip itself when the rates agree)."""
    if in_rate == out_rate:
        return samples
    resampler = Resampler(in_rate, out_rate)
    head = resampler.push(samples)
    return np.concatenate((head, resampler.flush()))


class RawEncoder:
    """The container-less formats: PCM16, float32 and G.711 (FFmpeg's stateless pcm_mulaw/pcm_alaw)."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.fmt = fmt
        self._sample_rate = sample_rate
        self._pts = 0
        self._codec: av.AudioCodecContext | None = None
        if fmt in G711_CODECS:
            codec = av.CodecContext.create(G711_CODECS[fmt], "w")
            assert isinstance(codec, av.AudioCodecContext)
            codec.sample_rate = sample_rate
            codec.format = "s16"
            codec.layout = "mono"
            self._codec = codec

    def encode(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        if self.fmt == "pcm_f32le":
            return (samples / 32768.0).astype("<f4").tobytes()
        if self._codec is None:
            return samples.astype("<i2", copy=False).tobytes()
        frame = pcm16_frame(samples, self._sample_rate, self._pts)
        self._pts += samples.size
        return b"".join(bytes(packet) for packet in self._codec.encode(frame))
