"""Audio after synthesis (chatterbox_server/audio/post.py), measured: LUFS, seconds of silence."""
from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from chatterbox_server.audio import post

RATE = 24000


def speechlike(seconds: float, amplitude: float, seed: int = 0) -> np.ndarray:
    """Band-limited noise with a syllable-rate envelope: loudness behaves like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    noise = np.convolve(rng.standard_normal(t.size), np.ones(8) / 8, mode="same")
    return (amplitude * noise * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), np.float32)


@pytest.mark.parametrize("target", [-24.0, -16.0])
def test_ebu_normalization_reaches_the_target_loudness(target):
    audio = speechlike(6.0, 0.05)
    meter = pyloudnorm.Meter(RATE)
    out = post.normalize_loudness(audio, RATE, "ebu", target, -2.0, 7.0)
    assert abs(meter.integrated_loudness(out) - target) < 1.0
    assert abs(out.size - audio.size) <= RATE // 100
    assert 20 * np.log10(np.abs(out).max()) <= -2.0 + 0.5     # true-peak target (sample peak below it)


def test_peak_method_puts_the_highest_sample_at_normalize_tp():
    audio = speechlike(4.0, 0.02)
    out = post.normalize_loudness(audio, RATE, "peak", -24.0, -3.0, 7.0)
    assert abs(20 * np.log10(np.abs(out).max()) - -3.0) < 0.01
    assert np.allclose(out / np.abs(out).max(), audio / np.abs(audio).max(), atol=1e-6)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError):
        post.normalize_loudness(speechlike(1.0, 0.1), RATE, "rms", -24.0, -2.0, 7.0)


def test_trim_cuts_leading_and_trailing_silence_longer_than_the_threshold():
    audio = np.concatenate([silence(0.8), speechlike(1.0, 0.3), silence(0.5)])
    out = post.trim_silence(audio, RATE, 200)
    assert abs(out.leading_ms - 800) <= 10 and abs(out.trailing_ms - 500) <= 10
    assert abs(out.audio.size / RATE - 1.0) <= 0.02


def test_trim_keeps_silence_shorter_than_the_threshold():
    audio = np.concatenate([silence(0.1), speechlike(1.0, 0.3), silence(0.1)])
    out = post.trim_silence(audio, RATE, 200)
    assert out.leading_ms == out.trailing_ms == 0 and out.audio.size == audio.size


def test_auto_editor_removes_inner_silence_keeping_the_margin():
    audio = np.concatenate([silence(1.0), speechlike(1.0, 0.3), silence(2.0), speechlike(1.0, 0.3), silence(1.0)])
    out = post.remove_silences(audio, RATE, threshold=0.06, margin=0.2)
    # 2 s of speech, plus 0.2 s margin on both sides of each part, minus the two 5 ms crossfades
    assert abs(out.size / RATE - 2.8) < 0.05
    wider = post.remove_silences(audio, RATE, threshold=0.06, margin=0.5)
    assert wider.size > out.size


def test_auto_editor_on_pure_silence_leaves_nothing():
    assert post.remove_silences(silence(1.0), RATE, 0.06, 0.2).size == 0


def test_pcm16_round_trip():
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0], np.float32)
    assert np.allclose(post.pcm16_to_float(post.float_to_pcm16(audio)), audio, atol=1e-4)
