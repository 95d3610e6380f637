"""Joining clips for /api/v1/concat and /concat/mixed (the Extended family's ConcatRequest), as pure numpy.

A plan is a list of clips (audio) and silences (milliseconds). Clips may be trimmed and brought to
one loudness; adjacent clips get the automatic pause (base +- variation, drawn from a seeded
generator so a request is reproducible) when no manual silence stands between them, or a
crossfade when the pause is zero.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import pyloudnorm

from chatterbox_server.audio.post import trim_silence

SILENCE = re.compile(r"^\((\d+(?:\.\d+)?)(ms|s)\)$")
SILENCE_RANGE_MS = (50.0, 10_000.0)
MIN_LOUDNESS_SECONDS = 0.4          # pyloudnorm's gating needs at least one 400 ms block


def silence_ms(item: str) -> float | None:
    """Milliseconds of a "(500ms)" / "(1.5s)" notation; None when `item` is not one."""
    match = SILENCE.match(item.strip())
    if not match:
        return None
    value = float(match.group(1))
    return value * 1000 if match.group(2) == "s" else value


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray          # float32 mono at the plan's rate
    name: str


@dataclass(frozen=True)
class Silence:
    ms: float


@dataclass(frozen=True)
class JoinOptions:
    normalize_levels: bool = True
    crossfade_ms: int = 0
    pause_duration_ms: int = 0
    pause_variation_ms: int = 200
    trim: bool = False
    trim_threshold_ms: int = 200
    seed: int = 0


def loudness(audio: np.ndarray, rate: int) -> float | None:
    if audio.size < MIN_LOUDNESS_SECONDS * rate or not np.any(audio):
        return None
    value = pyloudnorm.Meter(rate).integrated_loudness(audio.astype(np.float64))
    return value if np.isfinite(value) else None


def match_levels(clips: list[np.ndarray], rate: int) -> list[np.ndarray]:
    """Every clip to the median integrated loudness of the clips (the quietest never clips: peaks capped at 0 dBFS)."""
    levels = [loudness(c, rate) for c in clips]
    known = [level for level in levels if level is not None]
    if len(known) < 2:
        return clips
    target = float(np.median(known))
    out = []
    for clip, level in zip(clips, levels, strict=True):
        if level is None:
            out.append(clip)
            continue
        gained = clip * 10 ** ((target - level) / 20)
        peak = float(np.abs(gained).max())
        out.append((gained / peak if peak > 1.0 else gained).astype(np.float32))
    return out


def join(items: list[Clip | Silence], rate: int, options: JoinOptions) -> tuple[np.ndarray, dict]:
    """The joined audio and what was done (pauses drawn, trimming per clip)."""
    clips = [item for item in items if isinstance(item, Clip)]
    audio = [c.audio for c in clips]
    trimmed = []
    if options.trim:
        results = [trim_silence(a, rate, options.trim_threshold_ms) for a in audio]
        audio = [r.audio for r in results]
        trimmed = [{"name": c.name, "leading_ms": r.leading_ms, "trailing_ms": r.trailing_ms}
                   for c, r in zip(clips, results, strict=True)]
    if options.normalize_levels:
        audio = match_levels(audio, rate)
    rng = random.Random(options.seed)
    pieces: list[np.ndarray] = []
    pauses: list[float] = []
    previous_was_clip = False
    index = 0
    for item in items:
        if isinstance(item, Silence):
            pieces.append(np.zeros(int(rate * item.ms / 1000), np.float32))
            previous_was_clip = False
            continue
        clip = audio[index]
        index += 1
        if previous_was_clip and options.pause_duration_ms > 0:
            pause = max(0.0, options.pause_duration_ms + rng.uniform(-1, 1) * options.pause_variation_ms)
            pauses.append(round(pause, 1))
            pieces.append(np.zeros(int(rate * pause / 1000), np.float32))
        elif previous_was_clip and options.crossfade_ms > 0 and pieces:
            pieces[-1], clip = _crossfade(pieces[-1], clip, int(rate * options.crossfade_ms / 1000))
        pieces.append(clip)
        previous_was_clip = True
    out = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return out.astype(np.float32), {"pauses_ms": pauses, "trimmed": trimmed,
                                     "total_duration_seconds": round(out.size / rate, 3)}


def _crossfade(before: np.ndarray, after: np.ndarray, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """`before` loses its last `overlap` samples, which are mixed into the start of `after`."""
    n = min(overlap, before.size, after.size)
    if n < 2:
        return before, after
    ramp = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
    mixed = before[-n:] * np.cos(ramp) + after[:n] * np.sin(ramp)
    return before[:-n], np.concatenate([mixed, after[n:]]).astype(np.float32)
