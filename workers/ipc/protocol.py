"""The job protocol between front workers and model workers.

Each request gets its own connection to one model worker (a Unix socket, framed and pickled by
``multiprocessing.connection``). Closing the connection cancels the job; the model worker dying
shows up as end-of-file on it. The messages are plain dataclasses so both sides share one
definition; this module imports only the standard library and the engine dataclasses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from workers.engines.base import SynthesisSettings, VoiceRef


# -- front worker -> model worker -------------------------------------------------------------
@dataclass(frozen=True)
class SpeechJob:
    request_id: str
    chunks: tuple[str, ...]            # text chunks, synthesized and answered in this order
    settings: SynthesisSettings
    voice: VoiceRef
    seed: int                          # chunk i uses seed + i: reproducible whatever the interleaving
    buffer_size: int                   # audio messages the worker may send ahead of the client's consumption
    text_preview: str = ""
    background: bool = False           # background work: runs only when no interactive job can use the slot
    timestamps: bool = False           # send each text chunk's word timings (AudioChunk.words)
    # Per text chunk; an empty tuple keeps the job-wide behaviour. The silences are exact zero samples
    # (round(seconds * sample rate)) that the model worker adds around the speech, after its fades, and
    # they count in the job's audio: lead_pause opens chunk 0's first message (that chunk's words move
    # by it), pauses_after[i] closes chunk i's last message.
    chunk_speeds: tuple[float, ...] = ()   # chunk i's speed; empty: settings.speed for every chunk
    lead_pause: float = 0.0                # seconds of silence before the first chunk's speech
    pauses_after: tuple[float, ...] = ()   # seconds of silence after chunk i; empty: none
    # The engine's own lead-in and tail silence is cut where a pause stands (so the silence heard is
    # the pause asked for) and, with trim_edges, at the job's two ends (a dialogue's turns, whose gap
    # the front worker adds): workers/audio.py trim_quiet_edges.
    trim_edges: bool = False
    model: str = ""                    # the served model it is for (CHATTERBOX_MODELS); empty: the default

    def __post_init__(self) -> None:
        for name in ("chunk_speeds", "pauses_after"):
            values = getattr(self, name)
            if values and len(values) != len(self.chunks):
                raise ValueError(f"{name} has {len(values)} values for {len(self.chunks)} chunks")
        if not all(math.isfinite(speed) and speed > 0 for speed in self.chunk_speeds):
            raise ValueError(f"chunk_speeds must be positive and finite: {self.chunk_speeds}")
        if not all(math.isfinite(pause) and pause >= 0 for pause in (self.lead_pause, *self.pauses_after)):
            raise ValueError("lead_pause and pauses_after must be finite and >= 0")

    @property
    def units(self) -> int:
        return len(self.chunks)

    def chunk_speed(self, index: int) -> float:
        return self.chunk_speeds[index] if self.chunk_speeds else self.settings.speed

    def pause_after(self, index: int) -> float:
        return self.pauses_after[index] if self.pauses_after else 0.0

    def trims(self, index: int) -> tuple[bool, bool]:
        """Whether chunk `index` loses the engine's silence at its (start, end)."""
        start = (self.trim_edges or self.lead_pause > 0) if index == 0 else self.pause_after(index - 1) > 0
        end = self.pause_after(index) > 0 or (self.trim_edges and index == len(self.chunks) - 1)
        return start, end


@dataclass(frozen=True)
class ConvertJob:
    """Voice conversion of a recording, window by window (consecutive windows overlap)."""
    request_id: str
    audio_path: str                    # mono WAV at VC_INPUT_RATE, written by the front worker
    windows: tuple[tuple[int, int], ...]  # [start, end) sample ranges of the input
    overlap: int                       # input samples shared by consecutive windows
    voice: VoiceRef
    seed: int
    buffer_size: int
    text_preview: str = ""
    watermark: bool = True             # Chatterbox's Perth watermark; off only when the operator allows it
    model: str = ""                    # the served model it is for; empty: the default

    @property
    def units(self) -> int:
        return len(self.windows)


@dataclass(frozen=True)
class Credit:
    """The client consumed `chunks` more audio messages: the worker may send that many more."""
    chunks: int = 1


@dataclass(frozen=True)
class MemoryAction:
    """Sent alone on a fresh connection: collect garbage and give cached accelerator memory back."""
    reset_peak: bool = False           # also reset the accelerator's peak-memory statistics


@dataclass(frozen=True)
class ModelAction:
    """Sent alone on a fresh connection: `load` or `unload` the worker's model (POST /v1/models/{id}/...).
    Answered with a ModelReport."""
    action: str


# -- model worker -> front worker -------------------------------------------------------------
@dataclass(frozen=True)
class ModelReport:
    state: str                         # loaded, loading, unloaded, in_use (an unload refused), failed
    message: str = ""
    active_jobs: int = 0


@dataclass(frozen=True)
class ModelLoading:
    """The job waits for its model to load (`done=False`, right after Accepted) or can now start (`done=True`)."""
    model: str
    done: bool = False


@dataclass(frozen=True)
class Accepted:
    worker_slot: int
    jobs_ahead: int                    # jobs the worker holds besides this one


@dataclass(frozen=True)
class AudioChunk:
    """The next stretch of audio. A text chunk may arrive in several messages (Chatterbox vocodes
    token windows), in order; each message costs one credit."""
    index: int                         # which text chunk this audio speaks
    pcm: bytes                         # PCM16 little-endian mono at the engine's sample rate
    input_tokens: int
    output_tokens: int
    synth_seconds: float
    # timestamps jobs, on the last message of each text chunk: (word, start s, end s) from the first
    # sample of that text chunk's audio (its first message), after the worker's time-stretch
    words: tuple[tuple[str, float, float], ...] | None = None


@dataclass(frozen=True)
class JobDone:
    input_tokens: int
    output_tokens: int
    audio_seconds: float
    synth_seconds: float


@dataclass(frozen=True)
class JobFailed:
    message: str
    kind: str = "request"              # "request": this job is bad; "engine": the worker is unwell;
                                       # "model": its model could not be loaded (or has no room)
    status: int = 500                  # HTTP status to use if nothing has been sent yet


@dataclass(frozen=True)
class MemoryReport:
    """What a MemoryAction did in one model worker."""
    slot: int
    pid: int
    collected_objects: int
    cuda_cache_cleared: bool
    peak_stats_reset: bool
    rss_before: int
    rss_after: int
    accelerator_before: dict | None
    accelerator_after: dict | None


@dataclass
class JobStats:
    """What the model worker accumulates for one job."""
    input_tokens: int = 0
    output_tokens: int = 0
    samples: int = 0
    synth_seconds: float = 0.0


def chunk_seed(job_seed: int, index: int) -> int:
    return (job_seed + index) % (2**32)
