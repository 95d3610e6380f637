"""A job's files: one PCM16 file per chunk, written the moment it is made, and the joined result.

Chunks are joined exactly as a stream joins them (the model worker already fades every chunk's
edges), so the final file is the stream's audio; codec formats go through the same encoder
settings as `encode_whole`, into a seekable file so mp3 and flac get their exact-length headers.
Memory stays at one chunk whatever the length of the job. No Flask, no gevent.

Every chunk file a runner writes has a name of its own (`chunk-00003-<tag>.pcm`) and the job's
chunk row names the file that counts, so two runners fighting over one job never write into each
other's file, and the joined audio is made of whole chunks each from one runner.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid

from chatterbox_server.audio.encoders import _CODEC_SPECS, _AVEncoder, _samples, wav_header
from chatterbox_server.store import files as store_files
from chatterbox_server.store.quota import LONGTEXT_OWNER_FILE

BYTES_PER_SAMPLE = 2
COPY_BLOCK = 1 << 20


def job_dir(root: str, job_id: str) -> str:
    return os.path.join(root, job_id)


def chunk_path(root: str, job_id: str, idx: int, tag: str | None = None) -> str:
    """Chunk `idx`'s file; `tag` (default: a fresh random one) makes the name this writer's own."""
    return os.path.join(root, job_id, f"chunk-{idx:05d}-{tag or uuid.uuid4().hex[:12]}.pcm")


def recorded_path(root: str, job_id: str, audio_file: str | None) -> str | None:
    """The file a chunk row names (None for a chunk not made yet); names never leave the job's folder."""
    if not audio_file or os.path.basename(audio_file) != audio_file:
        return None
    return os.path.join(root, job_id, audio_file)


def mark_owner(root: str, job_id: str, owner: str | None) -> None:
    """Record the job's workspace in its folder, so the per-key disk quota counts its audio
    (store/quota.longtext_bytes); a folder already marked keeps its first owner."""
    path = os.path.join(job_dir(root, job_id), LONGTEXT_OWNER_FILE)
    if owner is None or os.path.exists(path):
        return
    write_atomically(path, json.dumps({"owner": owner}).encode())


def link_or_copy(source: str, destination: str) -> None:
    """A retry reuses a chunk's audio: a hard link costs no disk and no copy; a copy where links fail."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        write_atomically(destination, open(source, "rb").read())


def output_path(root: str, job_id: str, fmt: str) -> str:
    return os.path.join(root, job_id, f"output.{fmt}")


def write_atomically(path: str, data: bytes) -> None:
    """The file is either absent or whole, even after kill -9 or a power cut."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))   # one per writer
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        store_files.remove(temporary)        # a full disk leaves no half file behind
        raise


def assemble(fmt: str, chunk_files: list[str], sample_rate: int, out: str) -> tuple[int, float]:
    """Join the chunk files into `out` in `fmt`; returns (bytes written, seconds of audio)."""
    total = sum(os.path.getsize(path) for path in chunk_files)
    total -= total % BYTES_PER_SAMPLE
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(out))
    try:
        with os.fdopen(fd, "wb") as sink:
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
    except BaseException:
        store_files.remove(temporary)
        raise
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


def remove_chunk_files(root: str, job_id: str) -> int:
    """Delete the job's chunk PCM (every `chunk-*.pcm`, recorded or not), keeping its joined audio;
    returns the bytes freed. Only once the job is completed: nothing can use its chunks again."""
    freed = 0
    try:
        entries = list(os.scandir(job_dir(root, job_id)))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith("chunk-") and entry.name.endswith(".pcm"):
            with contextlib.suppress(FileNotFoundError):
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                freed += size
    return freed


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
