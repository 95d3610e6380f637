"""A job's files: one PCM16 file per chunk, written the moment it is made, and the joined result.

Chunks are joined exactly as a stream joins them (the model worker already fades every chunk's
edges), so the final file is the stream's audio; codec formats go through the same encoder
settings as `encode_whole`, into a seekable file so mp3 and flac get their exact-length headers.
Memory stays at one chunk whatever the length of the job. No Flask, no gevent.
"""
from __future__ import annotations

import os
import shutil

from chatterbox_server.encoders import _CODEC_SPECS, _AVEncoder, _samples, wav_header

BYTES_PER_SAMPLE = 2
COPY_BLOCK = 1 << 20


def job_dir(root: str, job_id: str) -> str:
    return os.path.join(root, job_id)


def chunk_path(root: str, job_id: str, idx: int) -> str:
    return os.path.join(root, job_id, f"chunk-{idx:05d}.pcm")


def output_path(root: str, job_id: str, fmt: str) -> str:
    return os.path.join(root, job_id, f"output.{fmt}")


def write_atomically(path: str, data: bytes) -> None:
    """The file is either absent or whole, even after kill -9 or a power cut."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def assemble(fmt: str, chunk_files: list[str], sample_rate: int, out: str) -> tuple[int, float]:
    """Join the chunk files into `out` in `fmt`; returns (bytes written, seconds of audio)."""
    total = sum(os.path.getsize(path) for path in chunk_files)
    total -= total % BYTES_PER_SAMPLE
    temporary = f"{out}.tmp"
    with open(temporary, "wb") as sink:
        if fmt in ("wav", "pcm"):
            if fmt == "wav":
                sink.write(wav_header(sample_rate, data_bytes=total))
            for path in chunk_files:
                with open(path, "rb") as source:
                    shutil.copyfileobj(source, sink, COPY_BLOCK)
        else:
            _encode(fmt, chunk_files, sample_rate, sink)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temporary, out)
    return os.path.getsize(out), total / BYTES_PER_SAMPLE / sample_rate


def _encode(fmt: str, chunk_files: list[str], sample_rate: int, sink: object) -> None:
    encoder = _AVEncoder(_CODEC_SPECS[fmt], sample_rate, _KeepOpen(sink), streaming=False)
    carry = b""
    try:
        for path in chunk_files:
            with open(path, "rb") as source:
                data = carry + source.read()
            whole = len(data) - len(data) % BYTES_PER_SAMPLE
            carry = data[whole:]
            encoder.encode(_samples(data[:whole]))
    finally:
        encoder.close()


def remove_job_files(root: str, job_id: str) -> None:
    shutil.rmtree(job_dir(root, job_id), ignore_errors=True)


class _KeepOpen:
    """The file as PyAV's custom IO sees it: seekable, and not closed when the container closes."""

    def __init__(self, f) -> None:  # noqa: ANN001 - a binary file
        self._f = f

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        pass
