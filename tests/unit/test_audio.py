"""Tests for workers.audio: speed split, time-stretching, seam fades, PCM16 conversion."""
from __future__ import annotations

import numpy as np
import pytest

from workers.audio import SEAM_FADE_SECONDS, fade_edges, split_speed, time_stretch, to_pcm16

RATE = 24000


def sine(seconds: float, frequency: float = 220.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(RATE * seconds), dtype=np.float32) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.mark.parametrize("speed", [0.25, 1.0, 1.7, 4.0])
def test_split_speed_without_native_range_stretches_everything(speed):
    assert split_speed(speed, None) == (1.0, speed)


@pytest.mark.parametrize("speed, native, expected", [
    (1.0, (0.5, 2.0), (1.0, 1.0)),
    (1.5, (0.5, 2.0), (1.5, 1.0)),
    (2.0, (0.5, 2.0), (2.0, 1.0)),
    (4.0, (0.5, 2.0), (2.0, 2.0)),
    (0.25, (0.5, 2.0), (0.5, 0.5)),
    (3.0, (0.25, 4.0), (3.0, 1.0)),
])
def test_split_speed_with_native_range(speed, native, expected):
    engine, stretch = split_speed(speed, native)
    assert engine == pytest.approx(expected[0])
    assert stretch == pytest.approx(expected[1])
    assert engine * stretch == pytest.approx(speed)
    assert native[0] <= engine <= native[1]


@pytest.mark.parametrize("factor", [0.5, 1.5, 2.0])
def test_time_stretch_changes_length_by_the_factor(factor):
    audio = sine(1.0)
    out = time_stretch(audio, RATE, factor)
    assert out.ndim == 1
    assert out.dtype == np.float32
    assert out.size == pytest.approx(audio.size / factor, rel=0.02)
    assert np.isfinite(out).all()
    assert 0.2 < np.abs(out).max() < 1.0


def test_time_stretch_factor_one_and_empty_audio_are_untouched():
    audio = sine(0.1)
    assert time_stretch(audio, RATE, 1.0) is audio
    assert time_stretch(audio, RATE, 1.0005) is audio
    empty = np.zeros(0, np.float32)
    assert time_stretch(empty, RATE, 2.0).size == 0


def test_fade_edges_zeroes_the_ends_and_keeps_the_middle():
    audio = np.full(RATE // 2, 0.8, dtype=np.float32)
    out = fade_edges(audio, RATE)
    n = int(RATE * SEAM_FADE_SECONDS)
    assert out.shape == audio.shape
    assert abs(out[0]) < 1e-6 and abs(out[-1]) < 1e-6
    assert np.all(np.diff(out[:n]) >= -1e-7), "fade-in is monotonic"
    np.testing.assert_array_equal(out[n:-n], audio[n:-n])
    assert np.all(np.abs(out[:n]) <= 0.8 + 1e-6) and np.all(np.abs(out[-n:]) <= 0.8 + 1e-6)
    np.testing.assert_array_equal(audio, 0.8)       # the input is not modified in place


def test_fade_edges_short_audio():
    assert fade_edges(np.zeros(0, np.float32), RATE).size == 0
    one = np.array([0.5], np.float32)
    np.testing.assert_array_equal(fade_edges(one, RATE), one)
    short = np.full(10, 0.5, np.float32)            # shorter than two fades: fades of half the length
    out = fade_edges(short, RATE)
    assert out.shape == short.shape
    assert abs(out[0]) < 1e-6 and abs(out[-1]) < 1e-6


def test_to_pcm16_scales_and_is_little_endian():
    pcm = to_pcm16(np.array([0.0, 1.0, -1.0, 0.5], np.float32))
    values = np.frombuffer(pcm, "<i2")
    assert list(values) == [0, 32767, -32767, 16384]
    assert len(pcm) == 8


def test_to_pcm16_clips_instead_of_wrapping():
    values = np.frombuffer(to_pcm16(np.array([1.5, -3.0, 100.0], np.float32)), "<i2")
    assert list(values) == [32767, -32767, 32767]


def test_to_pcm16_handles_nan_and_inf():
    values = np.frombuffer(to_pcm16(np.array([np.nan, np.inf, -np.inf, 0.25], np.float32)), "<i2")
    assert list(values) == [0, 32767, -32767, round(0.25 * 32767)]


def test_to_pcm16_empty():
    assert to_pcm16(np.zeros(0, np.float32)) == b""
