"""Audio after synthesis for the Extended API: loudness normalization, silence removal, trimming.

Float32 mono numpy in, float32 mono out; no Flask or gevent. Loudness uses FFmpeg's own filters
through PyAV (`loudnorm` is EBU R128 with integrated-loudness, true-peak and loudness-range
targets), the filter the peer runs via the ffmpeg command line.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.filter import Graph

NORMALIZE_METHODS = ("ebu", "peak")
SILENCE_DBFS = -40.0             # trim: quieter than this counts as silence (the peer's value)
FRAME_SECONDS = 0.01             # silence detection works on 10 ms frames
SEAM_SECONDS = 0.005             # auto-editor cuts are joined with a 5 ms crossfade
_FRAME_BATCH = 4096


def run_filters(audio: np.ndarray, rate: int, filters: list[tuple[str, str]]) -> np.ndarray:
    """Pass mono float32 audio through an FFmpeg filter chain; the output keeps the input's rate."""
    graph = Graph()
    chain = [graph.add_abuffer(format="flt", sample_rate=rate, layout="mono")]
    chain += [graph.add(name, args) for name, args in filters]
    chain.append(graph.add("aformat", f"sample_fmts=flt:sample_rates={rate}:channel_layouts=mono"))
    chain.append(graph.add("abuffersink"))
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        upstream.link_to(downstream)
    graph.configure()
    out: list[np.ndarray] = []
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    for start in range(0, samples.size, _FRAME_BATCH):
        frame = av.AudioFrame.from_ndarray(samples[start:start + _FRAME_BATCH].reshape(1, -1), format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        graph.push(frame)
        _drain(graph, out)
    graph.push(None)
    _drain(graph, out)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _drain(graph: Graph, out: list[np.ndarray]) -> None:
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def normalize_loudness(audio: np.ndarray, rate: int, method: str, level: float, true_peak: float,
                       loudness_range: float) -> np.ndarray:
    """`ebu`: EBU R128 to `level` LUFS, true peak at most `true_peak` dBTP, range target `loudness_range` LU.
    `peak`: one gain that puts the highest sample at `true_peak` dBFS (the peer runs FFmpeg's
    dynaudnorm here, which leaves clips shorter than its 15 s window nearly unchanged)."""
    if audio.size == 0:
        return audio
    if method == "ebu":
        filters = [("loudnorm", f"I={level}:TP={true_peak}:LRA={loudness_range}"), ("aresample", str(rate))]
        return run_filters(audio, rate, filters)
    if method == "peak":
        peak = float(np.abs(audio).max())
        return audio if peak == 0 else (audio * (10 ** (true_peak / 20) / peak)).astype(np.float32)
    raise ValueError(f"unknown normalize_method {method!r}")


def _frame_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Peak level of each 10 ms frame in dBFS, and the frame length in samples."""
    size = max(int(rate * FRAME_SECONDS), 1)
    count = -(-audio.size // size)
    padded = np.zeros(count * size, np.float32)
    padded[:audio.size] = np.abs(audio)
    peaks = padded.reshape(count, size).max(axis=1)
    return 20 * np.log10(np.maximum(peaks, 1e-9)), size


@dataclass(frozen=True)
class Trimmed:
    audio: np.ndarray
    leading_ms: float
    trailing_ms: float


def trim_silence(audio: np.ndarray, rate: int, threshold_ms: int, silence_dbfs: float = SILENCE_DBFS) -> Trimmed:
    """`trim`: leading and trailing silence is cut when it lasts at least `threshold_ms`."""
    if audio.size == 0:
        return Trimmed(audio, 0.0, 0.0)
    levels, size = _frame_levels(audio, rate)
    loud = np.flatnonzero(levels > silence_dbfs)
    if loud.size == 0:
        return Trimmed(audio, 0.0, 0.0)
    start = loud[0] * size
    end = min((loud[-1] + 1) * size, audio.size)
    if start * 1000 / rate < threshold_ms:
        start = 0
    if (audio.size - end) * 1000 / rate < threshold_ms:
        end = audio.size
    return Trimmed(audio[start:end], start * 1000 / rate, (audio.size - end) * 1000 / rate)


def remove_silences(audio: np.ndarray, rate: int, threshold: float, margin: float) -> np.ndarray:
    """`use_auto_editor`: keep what is louder than `threshold` (a fraction of full scale, as
    auto-editor's `audio:threshold`) plus `margin` seconds around it; cut the rest, joining the
    kept parts with a short crossfade."""
    if audio.size == 0:
        return audio
    size = max(int(rate * FRAME_SECONDS), 1)
    count = -(-audio.size // size)
    padded = np.zeros(count * size, np.float32)
    padded[:audio.size] = np.abs(audio)
    loud = padded.reshape(count, size).max(axis=1) > threshold
    if not loud.any():
        return audio[:0]
    reach = int(round(margin / FRAME_SECONDS))
    keep = np.convolve(loud.astype(np.int32), np.ones(2 * reach + 1, np.int32), mode="same") > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    spans = zip(edges[::2], edges[1::2], strict=True)
    pieces = [audio[start * size:min(end * size, audio.size)] for start, end in spans]
    return join_with_crossfade(pieces, int(rate * SEAM_SECONDS))


def join_with_crossfade(pieces: list[np.ndarray], overlap: int) -> np.ndarray:
    """Concatenate, overlapping consecutive pieces by `overlap` samples with an equal-power crossfade."""
    pieces = [p.astype(np.float32, copy=False) for p in pieces if p.size]
    if not pieces:
        return np.zeros(0, np.float32)
    out = pieces[0]
    for piece in pieces[1:]:
        n = min(overlap, out.size, piece.size)
        if n < 2:
            out = np.concatenate([out, piece])
            continue
        ramp = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
        mixed = out[-n:] * np.cos(ramp) + piece[:n] * np.sin(ramp)
        out = np.concatenate([out[:-n], mixed, piece[n:]])
    return out


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
