"""The messages between front workers and the speech-recognition process (asr_worker.py), over one
Unix socket in the pool's run directory with ``multiprocessing.connection`` framing. Standard library only,
so the front side never imports the recognizer's dependencies."""
from __future__ import annotations

import os
from dataclasses import dataclass


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "asr.sock")


@dataclass(frozen=True)
class Transcribe:
    model: str                 # a Whisper size name: tiny, base, small, medium, large
    pcm: bytes                 # PCM16 little-endian mono
    sample_rate: int
    language: str | None = None
    wait: float | None = None  # seconds it may wait for a free slot; None: as long as it takes


@dataclass(frozen=True)
class Probe:
    """Load `model` if needed and say whether it can run (a Transcript with no text, or TranscribeFailed)."""
    model: str


@dataclass(frozen=True)
class Status:
    """What can run, without loading anything: answered at once, even during a transcription."""
    model: str = "medium"      # the name whose local availability is checked


@dataclass(frozen=True)
class AsrStatus:
    loaded: tuple[str, ...]            # models in memory (hub names or local directories)
    failed: tuple[tuple[str, str], ...]  # (model, why) of recent load failures
    local: str | None                  # where `Status.model` would load from without a download, if anywhere
    offline: bool                      # HF_HUB_OFFLINE: a model not on disk cannot be fetched
    concurrency: int = 1               # transcriptions that may run at once
    running: int = 0                   # transcriptions running now


@dataclass(frozen=True)
class Transcript:
    text: str
    model: str                 # what actually ran: a hub name or a local directory


@dataclass(frozen=True)
class TranscribeFailed:
    message: str
    status: int = 503
    busy: bool = False         # no slot freed within the request's wait: nothing failed, the check was skipped
