"""Joining clips (chatterbox_server/audio/concat.py) and the concat request schemas."""
from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
from marshmallow import ValidationError

from chatterbox_server.api.extended.concat_schema import ConcatSchema, MixedConcatSchema
from chatterbox_server.audio.concat import Clip, JoinOptions, Silence, join, silence_ms

RATE = 16000


def tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


@pytest.mark.parametrize("item, ms", [("(500ms)", 500.0), ("(1.5s)", 1500.0), ("(2s)", 2000.0), ("a.wav", None),
                                      ("(5)", None), ("(-1s)", None)])
def test_silence_notation(item, ms):
    assert silence_ms(item) == ms


def test_manual_silence_lengths_add_up():
    out, info = join([Clip(tone(1, 0.3), "a"), Silence(500), Clip(tone(0.5, 0.3), "b")], RATE,
                     JoinOptions(normalize_levels=False))
    assert out.size == int(RATE * 2.0) and info["total_duration_seconds"] == 2.0
    assert not np.any(out[RATE:RATE + RATE // 2])


def test_pauses_are_drawn_within_the_variation_and_reproducible():
    clips = [Clip(tone(0.5, 0.3), str(i)) for i in range(4)]
    options = JoinOptions(normalize_levels=False, pause_duration_ms=400, pause_variation_ms=100, seed=7)
    out, info = join(clips, RATE, options)
    assert len(info["pauses_ms"]) == 3 and all(300 <= p <= 500 for p in info["pauses_ms"])
    assert join(clips, RATE, options)[1]["pauses_ms"] == info["pauses_ms"]
    assert abs(out.size - RATE * (2.0 + sum(info["pauses_ms"]) / 1000)) <= 5     # rounding of 3 pauses


def test_crossfade_overlaps_adjacent_clips():
    out, _ = join([Clip(tone(1, 0.3), "a"), Clip(tone(1, 0.3), "b")], RATE,
                  JoinOptions(normalize_levels=False, crossfade_ms=250))
    assert out.size == int(RATE * 1.75)


def test_levels_are_matched():
    out, _ = join([Clip(tone(2, 0.5), "loud"), Clip(tone(2, 0.05), "quiet")], RATE, JoinOptions())
    meter = pyloudnorm.Meter(RATE)
    first, second = meter.integrated_loudness(out[:2 * RATE]), meter.integrated_loudness(out[2 * RATE:])
    assert abs(first - second) < 0.5


def test_trim_then_join():
    clip = np.concatenate([np.zeros(RATE // 2, np.float32), tone(1, 0.3), np.zeros(RATE // 2, np.float32)])
    out, info = join([Clip(clip, "a"), Clip(clip, "b")], RATE, JoinOptions(normalize_levels=False, trim=True))
    assert abs(out.size / RATE - 2.0) < 0.03 and info["trimmed"][0]["leading_ms"] == 500


@pytest.mark.parametrize("body, field", [
    ({"files": ["a.wav"]}, "files"), ({"files": ["(1s)", "(2s)"]}, "files"), ({"files": ["a.wav", "(20s)"]}, "files"),
    ({"files": ["a.wav", "b.wav"], "pause_duration_ms": 300, "pause_variation_ms": 300}, "pause_variation_ms"),
    ({"files": ["a.wav", "b.wav"], "export_formats": ["opus"]}, "export_formats"),
    ({"files": ["a.wav", "b.wav"], "crossfade_ms": 6000}, "crossfade_ms"),
    ({"files": ["a.wav", "b.wav"], "output_filename": "../x"}, "output_filename"),
    ({"files": ["a.wav", "b.wav"], "extra": 1}, "extra"),
])
def test_concat_schema_refuses(body, field):
    with pytest.raises(ValidationError) as info:
        ConcatSchema().load(body)
    assert field in info.value.messages


def test_concat_schema_defaults():
    req = ConcatSchema().load({"files": ["a.wav", "(500ms)"]})
    assert req["export_formats"] == ["wav"] and req["normalize_levels"] and req["pause_variation_ms"] == 200


@pytest.mark.parametrize("segments", [
    [{"type": "silence", "source": "(1s)"}],
    [{"type": "upload", "index": 1}],
    [{"type": "server_file"}],
    [{"type": "server_file", "source": "a.wav", "index": 0}],
    [{"type": "silence", "source": "1s"}],
    [{"type": "tts"}],
    [{"type": "video", "source": "x"}],
])
def test_mixed_schema_refuses(segments):
    with pytest.raises(ValidationError):
        MixedConcatSchema().load({"segments": segments})


def test_mixed_schema_accepts_every_kind():
    MixedConcatSchema().load({"segments": [{"type": "server_file", "source": "a.wav"}, {"type": "upload", "index": 0},
                                           {"type": "silence", "source": "(500ms)"},
                                           {"type": "tts", "tts": {"text": "Hello."}}]})
