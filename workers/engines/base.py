"""The engine interface: what a model worker needs from a speech engine.

An engine loads once in its model-worker process and then synthesizes one text chunk at a time
into float32 mono audio. Chatterbox, hibari and the test engine all implement it. This module
imports only numpy, so the front workers can share the dataclasses without loading a model runtime.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

VC_INPUT_RATE = 16000      # ChatterboxVC (S3Gen) takes 16 kHz input


@dataclass(frozen=True)
class EngineInfo:
    """What a loaded engine can do; published on /health and used to validate requests."""
    engine: str                        # "chatterbox", "hibari", "tone"
    model: str                         # the live model, e.g. "chatterbox-standard", "hibari"
    device: str                        # "cpu", "cuda:0"
    sample_rate: int
    model_names: tuple[str, ...]       # names a request's `model` field may use for this engine
    default_voice: str = "default"
    voices: tuple[str, ...] = ()       # built-in voices (besides the voice library)
    supports_cloning: bool = False     # reference audio (voice library, voice_file) usable
    supports_exaggeration: bool = False  # exaggeration and cfg_weight take effect
    supports_voice_conversion: bool = False
    languages: tuple[str, ...] = ()    # accepted `language` values; empty: English only
    native_speed: tuple[float, float] | None = None  # speed range the engine does itself


@dataclass(frozen=True)
class SynthesisSettings:
    """Per-request synthesis parameters, already validated by the front worker."""
    speed: float = 1.0
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    temperature: float = 0.8
    language: str | None = None


@dataclass(frozen=True)
class VoiceRef:
    """The voice to speak with: a name, and reference audio when the voice is cloned."""
    name: str = "default"
    audio_path: str | None = None      # a file the model worker may read; None: the built-in voice


@dataclass
class Synthesized:
    audio: np.ndarray                  # float32, mono, in [-1, 1], at EngineInfo.sample_rate
    input_tokens: int                  # text tokens the engine consumed (its own tokenizer)
    output_tokens: int                 # units it generated (speech tokens, acoustic frames)
    extra: dict = field(default_factory=dict)


class EngineError(Exception):
    """This request cannot be synthesized (bad voice file, unsupported setting); the engine is fine."""


class Engine(ABC):
    """One engine instance, owned by one model-worker process."""

    @abstractmethod
    def load(self) -> EngineInfo:
        """Load weights; may take minutes on first start. Raises if the engine cannot run here."""

    @abstractmethod
    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        """Speak one text chunk. The same text, settings, voice and seed give the same audio."""

    def warmup(self, info: EngineInfo) -> None:
        """One real generation before the worker reports ready (compiles kernels, fills caches)."""
        self.synthesize("Warming up.", SynthesisSettings(), VoiceRef(info.default_voice), seed=0)

    def convert_voice(self, audio: np.ndarray, voice: VoiceRef, seed: int) -> np.ndarray:
        """Re-speak `audio` (float32 mono at VC_INPUT_RATE) in `voice`; returns audio at the engine's rate."""
        raise EngineError("voice conversion needs the chatterbox engine")

    def memory_stats(self) -> dict | None:
        """Accelerator memory in bytes (allocated, reserved, peak), for /memory; None on CPU engines."""
        return None

    def release_memory(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Give cached accelerator memory back between jobs."""
