"""The voice library under DATA_DIR/voices, and the rules that turn a request's `voice` into a VoiceRef.

Uploaded audio is untrusted: its size is bounded, its format is sniffed from the content (never
from the client's file name), it is decoded by FFmpeg (PyAV) into 24 kHz mono PCM16 and stored as
WAV under a name we check, so no client string ever becomes a path. Writes are atomic.
No Flask or gevent here.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import tempfile
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from chatterbox_server.errors import ApiError
from chatterbox_server.housekeeping.janitor import upload_prefix
from chatterbox_server.schemas import OPENAI_VOICES
from chatterbox_server.security.untrusted_audio import UntrustedAudioError, decode_pcm16
from workers.engines.base import EngineInfo, VoiceRef

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")     # always fullmatch: `$` allows "\n"
STORED_RATE = 24000
MIN_SECONDS, MAX_SECONDS = 1.0, 120.0
MIN_SOURCE_RATE = 8000
MAGIC = ((b"RIFF", "wav"), (b"ID3", "mp3"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"\x1a\x45\xdf\xa3", "webm"))


@dataclass(frozen=True)
class StoredVoice:
    name: str
    path: str
    duration_seconds: float
    source_format: str
    created: float

    def describe(self) -> dict:
        return {"name": self.name, "duration_seconds": round(self.duration_seconds, 3),
                "source_format": self.source_format, "created": self.created}


class VoiceLibrary:
    def __init__(self, directory: str, max_upload_bytes: int, aliases: dict[str, str] | None = None,
                 default_voice: str = "") -> None:
        self.directory = directory
        self.max_upload_bytes = max_upload_bytes
        self.aliases = aliases or {}
        self.default_voice = default_voice
        os.makedirs(directory, exist_ok=True)

    # -- reading --------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(name[:-5] for name in os.listdir(self.directory)
                      if name.endswith(".json") and NAME_PATTERN.fullmatch(name[:-5]))

    def get(self, name: str) -> StoredVoice | None:
        if not NAME_PATTERN.fullmatch(name):
            return None
        meta_path = os.path.join(self.directory, f"{name}.json")
        audio_path = os.path.join(self.directory, f"{name}.wav")
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        if not os.path.isfile(audio_path):
            return None
        return StoredVoice(name, audio_path, meta["duration_seconds"], meta["source_format"], meta["created"])

    def list(self) -> list[StoredVoice]:
        return [voice for voice in map(self.get, self.names()) if voice is not None]

    # -- writing --------------------------------------------------------------------------------------
    def add(self, name: str, data: bytes, replace: bool = False) -> StoredVoice:
        check_name(name)
        if self.get(name) is not None and not replace:
            raise ApiError(409, f"voice {name!r} exists; delete it first", param="name", code="voice_exists")
        pcm, source_format, seconds = decode_reference(data, self.max_upload_bytes)
        meta = {"duration_seconds": seconds, "source_format": source_format, "created": time.time()}
        with self._locked():        # the audio and its metadata are one upload's, whoever races us
            if self.get(name) is not None and not replace:
                raise ApiError(409, f"voice {name!r} exists; delete it first", param="name", code="voice_exists")
            _atomic_write(os.path.join(self.directory, f"{name}.wav"), pcm_to_wav(pcm, STORED_RATE))
            _atomic_write(os.path.join(self.directory, f"{name}.json"), json.dumps(meta).encode())
            return self.get(name)

    def delete(self, name: str) -> bool:
        with self._locked():
            if self.get(name) is None:
                return False
            for suffix in (".json", ".wav"):
                try:
                    os.unlink(os.path.join(self.directory, name + suffix))
                except FileNotFoundError:
                    pass
            return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The library's write lock, shared by every thread and process (flock on a lock file beside the
        directory, so the library itself holds voices only)."""
        parent, folder = os.path.split(os.path.abspath(self.directory))
        fd = os.open(os.path.join(parent, f".{folder}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- resolving a request's voice ------------------------------------------------------------------
    def available(self, info: EngineInfo) -> list[str]:
        names = {"default", *info.voices, *OPENAI_VOICES, *self.aliases}
        if info.supports_cloning:
            names.update(self.names())
        return sorted(names)

    def resolve(self, requested: str | None, info: EngineInfo, param: str = "voice") -> VoiceRef:
        name = self.aliases.get(requested or "", requested) or self.default_voice or "default"
        if name in ("default", *OPENAI_VOICES, *info.voices):
            return self._built_in_or_default(info)
        stored = self.get(name)
        if stored is None:
            raise ApiError(400, f"unknown voice {requested!r}; available voices: "
                                f"{', '.join(self.available(info))}", param=param, code="voice_not_found")
        if not info.supports_cloning:
            raise ApiError(400, f"voice {name!r} is a cloned voice: the {info.engine} engine has only its "
                                f"built-in voice; cloning needs the chatterbox engine", param=param,
                           code="voice_not_supported")
        return VoiceRef(stored.name, stored.path)

    def _built_in_or_default(self, info: EngineInfo) -> VoiceRef:
        stored = self.get(self.default_voice) if self.default_voice and info.supports_cloning else None
        if stored is not None:
            return VoiceRef(stored.name, stored.path)
        return VoiceRef(info.default_voice)


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ApiError(400, "voice names are 1-64 letters, digits, '_' or '-', starting with a letter or "
                            "digit", param="name", code="invalid_voice_name")
    if name in ("default", *OPENAI_VOICES):
        raise ApiError(400, f"{name!r} is a reserved voice name", param="name", code="invalid_voice_name")


def sniff_format(data: bytes) -> str | None:
    for magic, fmt in MAGIC:
        if data.startswith(magic):
            return fmt
    if data[4:8] == b"ftyp":
        return "mp4"
    if len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0:
        return "mp3" if (data[1] & 0x06) != 0 else "aac"
    return None


def decode_reference(data: bytes, max_bytes: int) -> tuple[np.ndarray, str, float]:
    """Untrusted voice upload -> (PCM16 mono at 24 kHz, sniffed format, seconds). Raises ApiError 4xx."""
    return decode_upload(data, max_bytes=max_bytes, rate=STORED_RATE, seconds=(MIN_SECONDS, MAX_SECONDS),
                         param="voice_file")


def decode_upload(data: bytes, *, max_bytes: int, rate: int, seconds: tuple[float, float],
                  param: str) -> tuple[np.ndarray, str, float]:
    """Untrusted audio -> (PCM16 mono at `rate`, sniffed format, duration), bounded in size and length."""
    if len(data) > max_bytes:
        raise ApiError(413, f"{param} is {len(data)} bytes; the limit is {max_bytes}", param=param,
                       code="file_too_large")
    fmt = sniff_format(data)
    if fmt is None:
        raise ApiError(400, f"{param} is not audio this server reads (wav, mp3, flac, ogg, webm, m4a, aac)",
                       param=param, code="unsupported_audio")
    samples, _ = _decode(data, fmt, rate, seconds[1], param)
    duration = samples.size / rate
    if not seconds[0] <= duration <= seconds[1]:
        raise ApiError(400, f"{param} lasts {duration:.1f} s; send {seconds[0]:.0f} to {seconds[1]:.0f} s of "
                            "clear speech", param=param, code="unsupported_audio")
    return samples, fmt, duration


def _decode(data: bytes, fmt: str, rate: int, max_seconds: float, param: str) -> tuple[np.ndarray, int]:
    try:
        return decode_pcm16(data, fmt, rate, max_seconds, MIN_SOURCE_RATE)
    except UntrustedAudioError as exc:
        raise ApiError(400, f"{param} could not be decoded as audio: {exc}", param=param,
                       code="unsupported_audio") from None


def pcm_to_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def write_temporary_voice(directory: str, data: bytes, max_bytes: int) -> str:
    """A one-off voice_file, decoded and checked like a library voice; the caller deletes it."""
    samples, _, _ = decode_reference(data, max_bytes)
    return write_temporary_wav(directory, samples, STORED_RATE)


def write_temporary_wav(directory: str, samples: np.ndarray, rate: int) -> str:
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=upload_prefix(), suffix=".wav", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(pcm_to_wav(samples, rate))
    return path


def _atomic_write(path: str, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
