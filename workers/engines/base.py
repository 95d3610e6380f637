"""The engine interface: what a model worker needs from a speech engine.

An engine loads once in its model-worker process. The model worker opens a *stream* per text
chunk (or voice-conversion window) and advances all of its runnable streams together with
``Engine.step``: the engine decides what one batched step is. Chatterbox decodes one speech token
for every stream per step and vocodes token windows as they fall due; the whole-chunk engines
(hibari, tone) synthesize one stream's chunk per step. Audio comes back as ``Piece``s of float32
mono audio. This module imports only numpy, so the front workers can share the dataclasses
without loading a model runtime.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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
    tags: tuple[str, ...] = ()         # bracket tags it speaks, named without brackets ("laugh", "clear throat")
    fallback_reason: str | None = None # CHATTERBOX_ENGINE=auto: why Chatterbox could not run here
    language_extras_missing: dict[str, str] = field(default_factory=dict)  # language -> what it goes without
    group: str = ""                    # the served model (CHATTERBOX_MODELS entry) whose worker this is


@dataclass(frozen=True)
class SynthesisSettings:
    """Per-request synthesis parameters, already validated by the front worker."""
    speed: float = 1.0
    exaggeration: float = 0.5
    cfg_weight: float = 0.5
    temperature: float = 0.8
    language: str | None = None
    watermark: bool = True             # Chatterbox's Perth watermark; off only when the operator allows it
    timestamps: bool = False           # word timings wanted (set by the model worker from SpeechJob.timestamps)


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
    # (word, start s, end s) from the start of `audio`, when settings.timestamps asked and the engine
    # knows its alignment; None: the model worker estimates them (workers/timings.py)
    words: tuple[tuple[str, float, float], ...] | None = None


@dataclass
class Piece:
    """Audio a stream produced in one step: the next stretch of its chunk, in order."""
    audio: np.ndarray                  # float32 mono at EngineInfo.sample_rate; may be empty
    input_tokens: int = 0              # counted once per stream (on its first piece)
    output_tokens: int = 0             # units generated since the previous piece
    last: bool = False                 # the stream's chunk is complete
    words: tuple[tuple[str, float, float], ...] | None = None  # the chunk's engine timings, on its last piece


class Stream:
    """One text chunk (or conversion window) in the making; engines subclass it with their state.

    `piece` turns a stream into audio progress; `closed` streams are never stepped again."""

    def __init__(self) -> None:
        self.done = False
        self.closed = False

    def close(self) -> None:
        """Release what the stream holds (cache rows, buffers); safe to call twice."""
        self.closed = True


class WholeChunkStream(Stream):
    """A stream for engines without step-level state: one step synthesizes the whole chunk."""

    def __init__(self, render: Callable[[], Synthesized]):
        super().__init__()
        self._render = render

    def advance(self) -> Piece:
        result = self._render()
        self.done = True
        return Piece(result.audio, result.input_tokens, result.output_tokens, last=True, words=result.words)


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

    def describe(self) -> EngineInfo:
        """What `load` will report, without loading any weights: a model that is not loaded yet still
        has its features (languages, tags, exaggeration) known, so requests to it are checked at once.
        Every engine a model worker serves has it; test doubles driven without a worker may not."""
        raise NotImplementedError(f"{type(self).__name__} cannot describe itself before it is loaded")

    def unload(self) -> None:  # noqa: B027 - engines with weights override it
        """Free the weights' memory (idle unload, the memory budget). `load` brings them back: from a
        copy in host memory where the engine kept one (weights that lived on a GPU), else from disk."""

    def weight_bytes(self) -> int:
        """Bytes the loaded model holds on its device (what CHATTERBOX_GPU_MEMORY_BUDGET counts); 0 unloaded."""
        return 0

    def expected_bytes(self) -> int:
        """What `weight_bytes` will be once loaded, for the memory budget before the first load; 0: unknown."""
        return 0

    # -- streams: what the model worker drives ---------------------------------------------------
    #: streams one step may advance together (whole-chunk engines: one, so turns stay per chunk)
    step_capacity: int = 1

    def open_stream(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int, *,
                    incremental: bool = True) -> Stream:
        """Start speaking one text chunk. `incremental=False` asks for the chunk in one piece (the
        model worker time-stretches whole chunks). Raises EngineError for a bad request."""
        return WholeChunkStream(lambda: self.synthesize(text, settings, voice, seed))

    def open_conversion(self, audio: np.ndarray, voice: VoiceRef, seed: int, *, watermark: bool = True) -> Stream:
        """Start re-speaking one window of recorded audio (float32 mono at VC_INPUT_RATE)."""
        def render() -> Synthesized:
            converted = self.convert_voice(audio, voice, seed, watermark=watermark)
            return Synthesized(converted, input_tokens=0, output_tokens=0)
        return WholeChunkStream(render)

    def step(self, streams: Sequence[Stream]) -> list[Piece | BaseException]:
        """Advance every stream once, in one batched step where the engine can. Each entry is the
        stream's piece, or the exception that ended that stream alone (EngineError: a bad request;
        anything else: a failure of that request). Streams left out of a step keep their state."""
        results: list[Piece | BaseException] = []
        for stream in streams:
            try:
                results.append(stream.advance())
            except Exception as exc:  # noqa: BLE001 - one stream's failure is reported, not raised
                results.append(exc)
        return results

    def warmup(self, info: EngineInfo) -> None:
        """One real generation before the worker reports ready (compiles kernels, fills caches)."""
        self.synthesize("Warming up.", SynthesisSettings(), VoiceRef(info.default_voice), seed=0)

    def convert_voice(self, audio: np.ndarray, voice: VoiceRef, seed: int, *, watermark: bool = True) -> np.ndarray:
        """Re-speak `audio` (float32 mono at VC_INPUT_RATE) in `voice`; returns audio at the engine's rate.
        `watermark=False` (allowed by the operator) skips an engine's watermark, if it has one."""
        raise EngineError("voice conversion needs the chatterbox engine")

    def memory_stats(self) -> dict | None:
        """Accelerator memory in bytes (allocated, reserved, peak), for /memory; None on CPU engines."""
        return None

    def cache_stats(self) -> dict | None:
        """What the engine keeps per voice (entries, capacity, bytes, hits, misses), for /memory."""
        return None

    def release_memory(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Give cached accelerator memory back between jobs."""
