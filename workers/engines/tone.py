"""A deterministic test engine: every word becomes a short tone, instantly, with no model.

It exists so tests can drive the whole server quickly and inject faults. Markers in the text:
``[[sleep:S]]`` takes S seconds to synthesize the chunk, ``[[fail]]`` raises an engine error,
``[[error]]`` raises an unexpected exception, ``[[crash]]`` kills the model-worker process.
"""
from __future__ import annotations

import hashlib
import os
import re
import time

import numpy as np

from workers.engines.base import (
    VC_INPUT_RATE,
    Engine,
    EngineError,
    EngineInfo,
    SynthesisSettings,
    Synthesized,
    VoiceRef,
)
from workers.engines.tags import TURBO_TAGS

SAMPLE_RATE = 24000
WORD_SECONDS = 0.15
_SLEEP = re.compile(r"\[\[sleep:([0-9.]+)\]\]")


# what the tone engine imitates of each Chatterbox model, so that routing by model is testable in seconds
MULTILINGUAL_LANGUAGES = ("ar", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "it", "ja", "ko", "ms",
                          "nl", "no", "pl", "pt", "ru", "sv", "sw", "tr", "zh")


def _per_model(variable: str, model: str) -> str | None:
    """`CHATTERBOX_TONE_*` test knobs: one value for every model, or `standard=2,turbo=0.5`."""
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return None
    if "=" not in raw:
        return raw
    pairs = dict(item.split("=", 1) for item in raw.split(",") if "=" in item)
    return pairs.get(model)


class ToneEngine(Engine):
    """Test knobs for loading, each for every model or per model (`turbo=2,standard=0`):
    CHATTERBOX_TONE_WEIGHT_MB (memory its "weights" really hold, default 8), CHATTERBOX_TONE_LOAD_SECONDS
    (how long a load takes) and CHATTERBOX_TONE_FAIL_LOAD (a load fails with this message)."""

    def __init__(self, model: str = "standard") -> None:
        self.model = model
        self.weights: np.ndarray | None = None

    def describe(self) -> EngineInfo:
        suffix = "" if self.model == "standard" else f"-{self.model}"
        return EngineInfo(engine="tone", model=f"tone{suffix}", device="cpu", sample_rate=SAMPLE_RATE,
                          model_names=(f"tone{suffix}",), default_voice="default", voices=("default",),
                          supports_cloning=True, supports_exaggeration=self.model != "turbo",
                          supports_voice_conversion=self.model != "turbo",
                          languages=MULTILINGUAL_LANGUAGES if self.model == "multilingual" else (),
                          native_speed=(0.25, 4.0), tags=TURBO_TAGS if self.model == "turbo" else ())

    def load(self) -> EngineInfo:
        failure = _per_model("CHATTERBOX_TONE_FAIL_LOAD", self.model)
        seconds = float(_per_model("CHATTERBOX_TONE_LOAD_SECONDS", self.model) or 0)
        if seconds:
            time.sleep(seconds)
        if failure:
            raise RuntimeError(failure)
        megabytes = float(_per_model("CHATTERBOX_TONE_WEIGHT_MB", self.model) or 8)
        self.weights = np.ones(int(megabytes * 2**20), np.uint8)     # touched: resident, like real weights
        return self.describe()

    def unload(self) -> None:
        self.weights = None

    def weight_bytes(self) -> int:
        return 0 if self.weights is None else int(self.weights.nbytes)

    def expected_bytes(self) -> int:
        return int(float(_per_model("CHATTERBOX_TONE_WEIGHT_MB", self.model) or 8) * 2**20)

    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        self._inject_faults(text)
        if voice.audio_path is not None and not os.path.isfile(voice.audio_path):
            raise EngineError(f"reference audio for voice {voice.name!r} cannot be read")
        words = _SLEEP.sub(" ", text).split()
        rng = np.random.default_rng(seed)
        seconds = WORD_SECONDS / settings.speed
        tones = [_tone(word, voice.name, seconds, rng) for word in words]
        audio = np.concatenate(tones) if tones else np.zeros(0, np.float32)
        timings = None
        if settings.timestamps:     # each word is its own tone: the timings are exact
            edges = np.cumsum([0, *(tone.size for tone in tones)]) / SAMPLE_RATE
            timings = tuple((word, float(edges[i]), float(edges[i + 1])) for i, word in enumerate(words))
        return Synthesized(audio, input_tokens=len(words), output_tokens=len(words), words=timings)

    def convert_voice(self, audio: np.ndarray, voice: VoiceRef, seed: int, *, watermark: bool = True) -> np.ndarray:
        """Resample to 24 kHz and scale by a voice-dependent gain: seams between windows stay visible."""
        if voice.audio_path is not None and not os.path.isfile(voice.audio_path):
            raise EngineError(f"reference audio for voice {voice.name!r} cannot be read")
        positions = np.arange(int(audio.size * SAMPLE_RATE / VC_INPUT_RATE)) * VC_INPUT_RATE / SAMPLE_RATE
        gain = 0.5 + hashlib.sha256(voice.name.encode()).digest()[0] / 510.0
        return (np.interp(positions, np.arange(audio.size), audio) * gain).astype(np.float32)

    def warmup(self, info: EngineInfo) -> None:
        if os.environ.get("CHATTERBOX_TONE_WARMUP_SECONDS"):
            time.sleep(float(os.environ["CHATTERBOX_TONE_WARMUP_SECONDS"]))

    @staticmethod
    def _inject_faults(text: str) -> None:
        for seconds in _SLEEP.findall(text):
            time.sleep(float(seconds))
        if "[[crash]]" in text:
            os._exit(70)
        if "[[fail]]" in text:
            raise EngineError("the tone engine was asked to fail")
        if "[[error]]" in text:
            raise RuntimeError("the tone engine broke unexpectedly")


def _tone(word: str, voice: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    digest = hashlib.sha256(f"{voice}:{word}".encode()).digest()
    frequency = 200.0 + digest[0] * 3.0
    t = np.arange(int(SAMPLE_RATE * seconds), dtype=np.float32) / SAMPLE_RATE
    noise = rng.normal(0.0, 0.01, t.size).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)
