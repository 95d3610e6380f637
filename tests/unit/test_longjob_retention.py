"""A long job's disk: a completed job keeps its final audio only, not the chunk PCM it was made
of (a completed job cannot be retried, so nothing can use the chunks again); a failed or cancelled
job keeps its chunks, which a retry reuses."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from chatterbox_server.store import db, quota
from chatterbox_server.store.jobs_db import JobStore
from chatterbox_server.synthesis.longjobs import files
from chatterbox_server.synthesis.longjobs import runner as runner_module
from chatterbox_server.synthesis.longjobs.rules import CANCELLED, COMPLETED
from workers.engines.base import EngineInfo, VoiceRef

RATE = 24000
PARAMS = {"seed": 1, "speed": 1.0, "exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8}


@dataclass
class Chunk:
    index: int
    pcm: bytes
    synth_seconds: float = 0.01


class Handle:
    def __init__(self, count: int) -> None:
        self.count = count
        self.cancel_reason = None

    def chunks(self):  # noqa: ANN201 - the JobHandle iteration the runner makes
        for i in range(self.count):
            yield Chunk(i, bytes([i + 1]) * 4800)          # 0.1 s of PCM16 each

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason

    def close(self) -> None:
        pass


class Pool:
    models = ("standard",)

    def engine_info(self, model=None) -> EngineInfo:
        return EngineInfo("tone", "tone", "cpu", RATE, ("tone",))

    def submit(self, job):  # noqa: ANN001, ANN201
        return Handle(len(job.chunks))


class Voices:
    def resolve(self, name, info, owns=None):  # noqa: ANN001, ANN201
        return VoiceRef()


@pytest.fixture
def store(tmp_path):
    engine = db.make_engine(db.database_url("", str(tmp_path)))
    db.migrate(engine, str(tmp_path))
    yield JobStore(engine, lease_seconds=60)
    engine.dispose()


def add(store: JobStore, job_id: str, chunks: int = 3, owner: str | None = None) -> None:
    store.create({"id": job_id, "text": "x" * 10, "text_length": 10, "text_hash": "h", "voice": None,
                  "parameters": json.dumps(PARAMS), "output_format": "wav", "owner": owner},
                 [f"c{i}." for i in range(chunks)])


def pcm_files(root: str, job_id: str) -> list[str]:
    folder = files.job_dir(root, job_id)
    return sorted(name for name in os.listdir(folder) if name.endswith(".pcm")) if os.path.isdir(folder) else []


def test_a_completed_job_keeps_its_final_audio_and_drops_its_chunk_pcm(store, tmp_path):
    root = str(tmp_path / "longtext")
    add(store, "book")
    runner = runner_module.Runner(store, Pool(), Voices(), root, max_running=1, retention_seconds=0)
    runner.run(store.claim(runner.owner, 1, lambda owner: False))
    job = store.get("book")
    assert job["status"] == COMPLETED and job["completed_chunks"] == 3
    output = files.output_path(root, "book", "wav")
    assert os.path.getsize(output) == 44 + 3 * 4800 == job["output_size_bytes"]
    with open(output, "rb") as f:
        assert f.read()[44:] == b"".join(bytes([i + 1]) * 4800 for i in range(3))   # whole, in order
    assert pcm_files(root, "book") == []                  # no chunk PCM outlives the final audio
    assert os.listdir(files.job_dir(root, "book")) == ["output.wav"]   # nor any temporary file


def test_a_job_that_did_not_complete_keeps_its_chunks_for_a_retry(store, tmp_path):
    """Cancelled after two chunks: the PCM stays, since a retry reuses it."""
    root = str(tmp_path / "longtext")
    add(store, "book")
    runner = runner_module.Runner(store, Pool(), Voices(), root, max_running=1, retention_seconds=0)
    job = store.claim(runner.owner, 1, lambda owner: False)
    for idx in range(2):
        path = files.chunk_path(root, "book", idx)
        files.write_atomically(path, b"\1\1")
        assert store.chunk_done("book", idx, os.path.basename(path), 1, 1, runner.owner)[0]
    store.transition("book", (job["status"],), {"status": CANCELLED})
    assert len(pcm_files(root, "book")) == 2


def test_a_lost_lease_at_the_end_leaves_the_chunks_to_the_new_holder(store, tmp_path):
    """The runner that cannot record the completion (another holds the job now) must not take the
    chunks from under the runner that does."""
    root = str(tmp_path / "longtext")
    add(store, "book", chunks=1)
    runner = runner_module.Runner(store, Pool(), Voices(), root, max_running=1, retention_seconds=0)
    store.claim(runner.owner, 1, lambda owner: False)
    path = files.chunk_path(root, "book", 0)
    files.write_atomically(path, b"\1\1")
    assert store.chunk_done("book", 0, os.path.basename(path), 1, 1, runner.owner)[0]
    store.update_meta("book", {"lease_owner": "someone-else"})
    runner._finish("book", "wav", [path], RATE)
    assert store.get("book")["status"] != COMPLETED
    assert pcm_files(root, "book") == [os.path.basename(path)]


def test_a_keys_job_is_counted_in_its_disk_quota_final_file_only_once_completed(store, tmp_path):
    root = str(tmp_path / "longtext")
    add(store, "book", owner="alice")
    runner = runner_module.Runner(store, Pool(), Voices(), root, max_running=1, retention_seconds=0)
    runner.run(store.claim(runner.owner, 1, lambda owner: False))
    marker = os.path.getsize(os.path.join(files.job_dir(root, "book"), quota.LONGTEXT_OWNER_FILE))
    assert quota.longtext_bytes(root, "alice") == 44 + 3 * 4800 + marker        # the final file, no chunk
    assert quota.longtext_bytes(root, "bob") == 0


def test_a_retrys_reused_chunks_are_its_owners_before_it_first_runs(store, tmp_path, monkeypatch):
    """A retry hard-links the cancelled job's chunks into its own folder, marked as the owner's at
    once: a retry paused before it ever ran still counts them once the first job is gone."""
    from types import SimpleNamespace

    from chatterbox_server.api.openai import long_text

    root = str(tmp_path / "longtext")
    add(store, "first", owner="alice")
    runner = runner_module.Runner(store, Pool(), Voices(), root, max_running=1, retention_seconds=0)
    job = store.claim(runner.owner, 1, lambda owner: False)
    path = files.chunk_path(root, "first", 0)
    files.write_atomically(path, b"\1" * 4800)
    assert store.chunk_done("first", 0, os.path.basename(path), 2400, 1, runner.owner)[0]
    store.transition("first", (job["status"],), {"status": CANCELLED})
    monkeypatch.setattr(long_text, "services", lambda: SimpleNamespace(jobs_root=root, jobs=store))
    done = long_text._reuse_chunks("first", "retry", "alice")
    assert list(done) == [0] and len(pcm_files(root, "retry")) == 1
    files.remove_job_files(root, "first")                   # the first job's retention ended
    marker = os.path.getsize(os.path.join(files.job_dir(root, "retry"), quota.LONGTEXT_OWNER_FILE))
    assert quota.longtext_bytes(root, "alice") == 4800 + marker
