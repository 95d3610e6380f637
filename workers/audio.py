"""Audio post-processing in the model worker: speed, seams, PCM16 conversion."""
from __future__ import annotations

import wave

import numpy as np

SEAM_FADE_SECONDS = 0.004   # long enough to remove a click, short enough to be inaudible
EDGE_SILENCE = 10 ** (-45 / 20)     # below this an engine's lead-in and tail are silence (hibari's: ~0.2-0.4 s)
EDGE_MARGIN_SECONDS = 0.015         # kept of that silence, so a word's onset and decay are never cut


def split_speed(speed: float, native: tuple[float, float] | None) -> tuple[float, float]:
    """(speed the engine applies itself, remaining factor to apply by time-stretching)."""
    if native is None:
        return 1.0, speed
    engine_speed = min(max(speed, native[0]), native[1])
    return engine_speed, speed / engine_speed


def time_stretch(audio: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Change tempo by `factor` (2.0 = twice as fast) keeping the pitch (Rubber Band via pedalboard)."""
    if abs(factor - 1.0) < 1e-3 or audio.size == 0:
        return audio
    from pedalboard import time_stretch as rubberband_stretch
    stretched = rubberband_stretch(audio.reshape(1, -1).astype(np.float32), float(sample_rate), float(factor))
    return stretched.reshape(-1)


def fade_edges(audio: np.ndarray, sample_rate: int, seconds: float = SEAM_FADE_SECONDS, *,
               start: bool = True, end: bool = True) -> np.ndarray:
    """Short raised-cosine fade in and out so consecutive chunks join without a click."""
    n = min(int(sample_rate * seconds), audio.size // 2)
    if n < 2:
        return audio
    out = audio.astype(np.float32, copy=True)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32)))
    if start:
        out[:n] *= ramp
    if end:
        out[-n:] *= ramp[::-1]
    return out


def to_pcm16(audio: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> PCM16 little-endian bytes (clipped, never wrapped around)."""
    clipped = np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def plan_windows(samples: int, window: int, overlap: int) -> tuple[tuple[int, int], ...]:
    """Cover [0, samples) with windows of at most `window` samples, each overlapping the previous one."""
    if samples <= window:
        return ((0, samples),) if samples else ()
    step = window - overlap
    starts = range(0, samples - overlap, step)
    return tuple((start, min(start + window, samples)) for start in starts)


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Blend the end of one window into the start of the next. The weights sum to one (equal gain):
    both windows speak the same content in the same voice, so they are correlated and an
    equal-power fade would swell the overlap by up to 3 dB."""
    n = min(tail.size, head.size)
    if n == 0:
        return head[:0]
    rising = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32)))
    return (tail[:n] * (1.0 - rising) + head[:n] * rising).astype(np.float32)


def read_wav_mono(path: str) -> np.ndarray:
    """A PCM16 mono WAV (as the front worker writes them) as float32 in [-1, 1]."""
    with wave.open(path, "rb") as source:
        if source.getnchannels() != 1 or source.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        frames = source.readframes(source.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def finish_piece(audio: np.ndarray, sample_rate: int, stretch: float, *, first: bool, last: bool) -> np.ndarray:
    """A speech piece as sent: time-stretched, faded at its chunk's outer edges only (the engine joins
    the pieces of one chunk itself)."""
    return fade_edges(time_stretch(audio, sample_rate, stretch), sample_rate, start=first, end=last)


def join_window(tail: np.ndarray | None, audio: np.ndarray, overlap: int, sample_rate: int, *, first: bool,
                last: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """Voice conversion: crossfade the previous window's held-back `tail` into `audio` and hold back this
    window's overlap (`overlap` samples) for the next -> (new tail, audio to send)."""
    if tail is not None:
        audio = np.concatenate([crossfade(tail, audio[:overlap]), audio[overlap:]])
    tail, audio = (None, audio) if last else (audio[-overlap:], audio[:-overlap])
    return tail, fade_edges(audio, sample_rate, start=first, end=last)


def trim_quiet_edges(audio: np.ndarray, sample_rate: int, *, start: bool, end: bool) -> tuple[np.ndarray, int]:
    """The engine's own silence cut from the asked edges (where a pause or a dialogue's gap takes its
    place, so the silence heard is the one asked for), faded again at a cut edge; and how many samples
    the start lost. A piece with nothing above EDGE_SILENCE is left as it is."""
    if not (start or end) or audio.size == 0:
        return audio, 0
    loud = np.flatnonzero(np.abs(audio) > EDGE_SILENCE)
    if loud.size == 0:
        return audio, 0
    margin = round(EDGE_MARGIN_SECONDS * sample_rate)
    first = max(0, int(loud[0]) - margin) if start else 0
    last = min(audio.size, int(loud[-1]) + 1 + margin) if end else audio.size
    if first == 0 and last == audio.size:
        return audio, 0
    return fade_edges(audio[first:last], sample_rate, start=first > 0, end=last < audio.size), first
