"""The model worker's choice of batch rows, on plain job records (no engine, no sockets)."""
from __future__ import annotations

from schedkit import BatchedEngine, bare_worker

from chatterbox_server.settings import Settings
from workers.engines.base import Engine, SynthesisSettings, VoiceRef
from workers.ipc.protocol import SpeechJob
from workers.model_worker import ActiveJob, ModelWorker


def _worker(max_batch: int, engine: Engine | None = None) -> ModelWorker:
    return bare_worker(max_batch, engine)


def _job(worker: ModelWorker, name: str, *, background: bool = False, credits: int = 3, pieces: int = 0,
         served: float = 0.0) -> ActiveJob:
    job = SpeechJob(name, ("one", "two"), SynthesisSettings(), VoiceRef(), seed=0, buffer_size=3,
                    background=background)
    active = ActiveJob(conn=name, job=job, credits=credits, pieces=pieces, last_served=served)
    worker.jobs[name] = active
    return active


def _names(batch: list[ActiveJob]) -> list[str]:
    return [active.job.request_id for active in batch]


def test_rows_go_to_jobs_without_audio_first_and_members_keep_theirs():
    worker = _worker(max_batch=2)
    _job(worker, "old", pieces=5, served=1.0)
    _job(worker, "new")
    _job(worker, "older", pieces=5, served=0.5)
    assert _names(worker._select_batch()) == ["new", "older"]
    _job(worker, "newest")
    assert _names(worker._select_batch()) == ["new", "older"]       # no one is thrown out mid-chunk


def test_a_job_out_of_credit_leaves_its_row_and_rejoins_when_credit_comes():
    worker = _worker(max_batch=2)
    a, b = _job(worker, "a"), _job(worker, "b")
    waiting = _job(worker, "c")
    assert _names(worker._select_batch()) == ["a", "b"]
    a.credits = 0
    assert _names(worker._select_batch()) == ["b", "c"]
    a.credits, waiting.next_index = 1, 2                 # c is done; a gets its row back
    assert _names(worker._select_batch()) == ["b", "a"]
    assert b in worker.batch


def test_background_jobs_never_take_a_row_an_interactive_job_could_use():
    worker = _worker(max_batch=2)
    _job(worker, "bulk", background=True)
    assert _names(worker._select_batch()) == ["bulk"]
    _job(worker, "live-1", pieces=1)
    _job(worker, "live-2", pieces=1)
    assert _names(worker._select_batch()) == ["live-1", "live-2"]    # bulk gives its row up
    worker.jobs["live-1"].next_index = 2
    assert _names(worker._select_batch()) == ["live-2", "bulk"]


def test_whole_chunk_engines_take_one_job_per_step_whatever_max_batch_says():
    worker = _worker(max_batch=8, engine=_OneAtATime())
    for name in "abc":
        _job(worker, name)
    assert _names(worker._select_batch()) == ["a"]


class _OneAtATime(BatchedEngine):
    step_capacity = 1


def test_gpu_speed_ups_are_off_and_batching_on_by_default():
    settings = Settings()
    assert (settings.max_batch, settings.stream_tokens, settings.dtype, settings.compile) == (8, 25, "float32", False)
