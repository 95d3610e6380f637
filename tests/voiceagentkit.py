"""Shared pieces of tests/clients: the voice agents' own clients (pipecat, LiveKit Agents, the vendor
SDKs) pointed at our streaming-input WebSocket routes, and checks on the PCM they hand back.

The wire facts these tests rely on (URLs each client builds, the messages it sends and the keys it
reads) were read from the clients' source; see the comments in each test module.
"""
from __future__ import annotations

import math
import os
import struct
from array import array

import numpy as np
from serverkit import Server

from chatterbox_server.audio.encoders import pcm_to_wav

API_KEY = "voice-agent-test-key"        # every client insists on some key; the server may ignore it
# The voice every client asks for. Vendor voice ids mean nothing here: the server maps the name it
# gets to one of its voices (override if the routes want a specific one).
VOICE = os.environ.get("CHATTERBOX_CLIENTS_VOICE", "alloy")
SAMPLE_RATE = 24000                     # what every client asks for below (pcm_24000, linear16 24 kHz)

# Two turns with no word in common, so that a transcript tells which turn a piece of audio belongs to.
TURN_ONE = ("Elephants wander slowly across the dusty plains. They travel together in large families. "
            "The oldest female leads them to water every morning.")
TURN_TWO = "My bicycle has a bright green bell."
TURN_ONE_WORDS = {"elephants", "wander", "dusty", "plains", "families", "oldest", "female", "water"}


def ws_base(server: Server) -> str:
    """ws://host:port of the server's main listener (the vendor routes live beside /v1/audio/speech)."""
    return server.base.replace("http://", "ws://", 1)


def pcm16(data: bytes) -> array:
    samples = array("h")
    samples.frombytes(data[: len(data) // 2 * 2])
    return samples


def rms(samples: array) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def assert_speech(pcm: bytes, sample_rate: int = SAMPLE_RATE, *, min_seconds: float = 0.3,
                  max_seconds: float = 60.0, what: str = "audio") -> float:
    """PCM s16le mono at `sample_rate` that holds a plausible stretch of sound; returns its seconds."""
    assert len(pcm) % 2 == 0, f"{what}: odd byte count {len(pcm)}: not 16-bit PCM"
    samples = pcm16(pcm)
    seconds = len(samples) / sample_rate
    assert min_seconds <= seconds <= max_seconds, f"{what}: {seconds:.2f} s at {sample_rate} Hz"
    level = rms(samples)
    assert level > 100, f"{what}: silent (RMS {level:.1f} of 32768)"
    assert max(samples) != min(samples), f"{what}: a constant signal"
    # speech (or any real signal) at the claimed rate: not mostly clipped noise
    clipped = sum(1 for s in samples if s in (32767, -32768)) / len(samples)
    assert clipped < 0.05, f"{what}: {clipped:.0%} of the samples clipped"
    return seconds


def assert_float_speech(pcm: bytes, sample_rate: int, *, min_seconds: float = 0.3, what: str = "audio") -> float:
    """The same check for pcm_f32le (Cartesia's float encoding)."""
    assert len(pcm) % 4 == 0, f"{what}: {len(pcm)} bytes is not whole float32 samples"
    samples = struct.unpack(f"<{len(pcm) // 4}f", pcm)
    seconds = len(samples) / sample_rate
    assert seconds >= min_seconds, f"{what}: {seconds:.2f} s"
    assert all(-1.5 <= s <= 1.5 for s in samples), f"{what}: float samples outside [-1, 1]"
    level = math.sqrt(sum(s * s for s in samples) / len(samples))
    assert level > 0.003, f"{what}: silent (RMS {level:.4f})"
    return seconds


def wav(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    return pcm_to_wav(np.frombuffer(pcm, dtype="<i2"), sample_rate)


def heard(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> str | None:
    """What Whisper hears in the PCM, or None where the bundled model is not installed."""
    from asr import asr_available, transcribe

    if not asr_available():
        return None
    return transcribe(wav(pcm, sample_rate))


def assert_intelligible(pcm: bytes, text: str, sample_rate: int = SAMPLE_RATE, max_wer: float = 0.5) -> None:
    from asr import word_error_rate

    hypothesis = heard(pcm, sample_rate)
    if hypothesis is not None:
        assert word_error_rate(text, hypothesis) <= max_wer, hypothesis


def assert_not_turn_one(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> None:
    """The new turn's audio holds none of the interrupted turn's words (a leak of old audio)."""
    hypothesis = heard(pcm, sample_rate)
    if hypothesis is not None:
        words = {w.strip(".,!?").lower() for w in hypothesis.split()}
        assert not words & TURN_ONE_WORDS, f"old turn's words in the new turn: {hypothesis!r}"


def tokens(text: str) -> list[str]:
    """Text the way an LLM streams it: word pieces, each carrying its leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]
