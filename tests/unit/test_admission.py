"""Admission by estimated seconds of queued synthesis: the pure estimate and rules, and the model
worker's view of its own jobs (plain records: no engine, no sockets)."""
from __future__ import annotations

import pytest
from schedkit import bare_worker

from chatterbox_server.runtime.admission import FULL_RETRY_SECONDS, Limits, WorkerLoad, admissible, refusal
from chatterbox_server.settings import Settings, SettingsError
from workers.engines.base import EngineInfo, Stream, SynthesisSettings, VoiceRef
from workers.ipc.protocol import ConvertJob, SpeechJob
from workers.model_worker import ActiveJob, ModelWorker
from workers.scheduler.estimate import CostMeter, queued_seconds, retry_after


# -- the cost of work -----------------------------------------------------------------------------
def test_the_cost_meter_averages_seconds_per_unit_with_more_weight_on_recent_chunks():
    meter = CostMeter(smoothing=0.5)
    assert meter.seconds("speech", 100) == 0.0                 # nothing measured yet: no estimate
    meter.observe("speech", 100, 2.0)                          # 0.02 s a character
    assert meter.seconds("speech", 50) == pytest.approx(1.0)
    meter.observe("speech", 100, 4.0)                          # slower now (a fuller batch): 0.04
    assert meter.seconds("speech", 100) == pytest.approx(3.0)
    meter.observe("speech", 0, 9.0)                            # nothing to learn from an empty chunk
    meter.observe("convert", 10, 1.0)                          # another kind keeps its own cost
    assert meter.seconds("speech", 100) == pytest.approx(3.0)
    assert meter.seconds("convert", 20) == pytest.approx(2.0)


# -- the wait of a newcomer -----------------------------------------------------------------------
def test_an_idle_worker_or_a_free_row_means_no_wait():
    assert queued_seconds(1, [], []) == 0.0
    assert queued_seconds(4, [30.0, 20.0, 10.0], []) == 0.0     # a fourth row is free


def test_one_row_serves_the_current_chunk_then_every_first_chunk_ahead_in_turn():
    assert queued_seconds(1, [3.0], [2.0, 4.0]) == pytest.approx(9.0)
    assert queued_seconds(1, [], [2.0, 4.0]) == pytest.approx(6.0)


def test_rows_free_up_as_chunks_end_and_waiting_jobs_take_the_earliest():
    assert queued_seconds(2, [10.0, 10.0], []) == pytest.approx(10.0)
    # row b frees at 1 and takes the waiting 2 s chunk: both rows are then busy until 3, then 10
    assert queued_seconds(2, [10.0, 1.0], [2.0]) == pytest.approx(3.0)
    assert queued_seconds(2, [10.0, 1.0], [2.0, 5.0]) == pytest.approx(8.0)
    # batching: eight rows drain eight first chunks at once
    assert queued_seconds(8, [], [4.0] * 8) == pytest.approx(4.0)
    assert queued_seconds(8, [], [4.0] * 9) == pytest.approx(4.0)
    assert queued_seconds(8, [], [4.0] * 16) == pytest.approx(8.0)


def test_overrun_chunks_count_as_ending_now():
    assert queued_seconds(1, [-2.0], [1.5]) == pytest.approx(1.5)


def test_retry_after_is_the_whole_seconds_until_the_queue_drops_to_the_limit():
    assert retry_after(42.2, 30.0) == 13
    assert retry_after(30.4, 30.0) == 1
    assert retry_after(30.0001, 30.0) == 1
    assert retry_after(100.0, 0.0) == 100


# -- the front worker's rules ---------------------------------------------------------------------
def test_jobs_go_to_the_least_loaded_worker_that_is_not_full():
    limits = Limits(max_jobs=4, max_queued_seconds=30.0)
    loads = [WorkerLoad(0, 2, 5.0), WorkerLoad(1, 1, 40.0), WorkerLoad(2, 2, 1.0), WorkerLoad(3, 4, 0.0)]
    assert admissible(loads, limits) == [2, 0]                 # 1 waits too long, 3 holds its 4 jobs
    assert admissible(loads, limits, check_wait=False) == [1, 2, 0]     # background: the job cap only
    assert admissible(loads, Limits(max_jobs=4, max_queued_seconds=0.0)) == [1, 2, 0]    # 0: no wait limit


def test_a_refusal_names_the_cause_and_the_soonest_worker_sets_retry_after():
    limits = Limits(max_jobs=4, max_queued_seconds=30.0)
    by_wait = refusal([WorkerLoad(0, 3, 52.5), WorkerLoad(1, 2, 41.2)], limits)
    assert by_wait.retry_after == 12
    assert "wait about 41 s" in by_wait.message and "CHATTERBOX_MAX_QUEUED_SECONDS" in by_wait.message
    assert by_wait.message.endswith("Please try again in 12s.")   # the phrase OpenAI clients parse
    by_jobs = refusal([WorkerLoad(0, 4, 0.0)], limits)
    assert by_jobs.retry_after == FULL_RETRY_SECONDS and "CHATTERBOX_MAX_QUEUED_JOBS" in by_jobs.message
    mixed = refusal([WorkerLoad(0, 4, 0.0), WorkerLoad(1, 1, 31.0)], limits)
    assert mixed.retry_after == 1 and "wait about 31 s" in mixed.message


def test_the_wait_limit_never_exceeds_the_queue_timeout():
    assert Limits.of(64, 60.0, 300.0).max_queued_seconds == 60.0
    assert Limits.of(64, 60.0, 2.5).max_queued_seconds == 2.5      # it would time out waiting anyway
    assert Limits.of(64, 0.0, 2.5).max_queued_seconds == 0.0        # no limit stays no limit


def test_the_setting_is_declared_with_a_default_below_the_queue_timeout():
    settings = Settings.from_env({})
    assert 0 < settings.max_queued_seconds < settings.queue_timeout
    assert Settings.from_env({"CHATTERBOX_MAX_QUEUED_SECONDS": "7.5"}).max_queued_seconds == 7.5
    with pytest.raises(SettingsError, match="CHATTERBOX_MAX_QUEUED_SECONDS"):
        Settings.from_env({"CHATTERBOX_MAX_QUEUED_SECONDS": "-1"})


# -- the model worker's own jobs ------------------------------------------------------------------
def _worker(max_batch: int, per_char: float = 0.01) -> ModelWorker:
    worker = bare_worker(max_batch)
    worker.cost = CostMeter(per_unit={"speech": per_char, "convert": 0.5})
    return worker


def _job(worker: ModelWorker, name: str, chunks: tuple[str, ...], *, pieces: int = 0, credits: int = 3,
         background: bool = False, next_index: int = 0) -> ActiveJob:
    job = SpeechJob(name, chunks, SynthesisSettings(), VoiceRef(), seed=0, buffer_size=3, background=background)
    active = ActiveJob(conn=name, job=job, credits=credits, pieces=pieces, next_index=next_index,
                       last_served=float(pieces))
    worker.jobs[name] = active
    return active


def _hold_row(worker: ModelWorker, active: ActiveJob, row_seconds: float) -> None:
    worker.batch.append(active)
    active.stream, active.row_seconds = Stream(), row_seconds


def test_a_long_stream_already_playing_is_not_ahead_of_a_newcomer():
    worker = _worker(max_batch=1)
    long_text = tuple("x" * 300 for _ in range(300))             # 90,000 characters
    playing = _job(worker, "playing", long_text, pieces=40, next_index=40)
    assert worker.queued_seconds() == 0.0                       # its next chunk waits behind a newcomer
    _hold_row(worker, playing, row_seconds=1.0)
    assert worker.queued_seconds() == pytest.approx(2.0)        # only the rest of its current chunk (3 s)


def test_jobs_without_audio_queue_with_their_first_chunk_in_arrival_order():
    worker = _worker(max_batch=1)
    _job(worker, "a", ("x" * 100, "y" * 5000))
    _job(worker, "b", ("x" * 200, "y" * 5000))
    assert worker.queued_seconds() == pytest.approx(3.0)        # 1 s + 2 s of first chunks, nothing more


def test_parked_finished_and_background_jobs_are_no_queued_work():
    worker = _worker(max_batch=1)
    _job(worker, "parked", ("x" * 100,) * 50, credits=0)         # its client is not reading
    _job(worker, "done", ("x" * 100,), next_index=1)
    bulk = _job(worker, "bulk", ("x" * 500,) * 50, background=True)
    _hold_row(worker, bulk, row_seconds=0.0)                    # gives its row up to a newcomer
    assert worker.queued_seconds() == 0.0


def test_batch_rows_serve_several_waiting_jobs_at_once():
    worker = _worker(max_batch=4)
    for name in "abcdefghi":
        _job(worker, name, ("x" * 100, "y" * 100))
    assert worker.queued_seconds() == pytest.approx(2.0)        # four first chunks at once, four more, then i
    for name in "abcd":
        _hold_row(worker, worker.jobs[name], row_seconds=0.5)   # half done: the next four start at 0.5
    assert worker.queued_seconds() == pytest.approx(1.5)


def test_voice_conversion_windows_are_costed_by_input_seconds():
    worker = _worker(max_batch=1)
    job = ConvertJob("vc", "/nonexistent.wav", windows=((0, 32000), (31000, 64000)), overlap=1000,
                     voice=VoiceRef(), seed=0, buffer_size=3)
    worker.jobs["vc"] = ActiveJob(conn="vc", job=job, credits=3)
    assert worker.queued_seconds() == pytest.approx(1.0)        # 2 s of input at 0.5 s each


# -- long-text jobs -------------------------------------------------------------------------------
@pytest.mark.parametrize("refusal", ["full", "no worker ready"])
def test_a_full_or_restarting_pool_never_uses_up_a_long_text_jobs_attempts(tmp_path, monkeypatch, refusal):
    """A 429 (full) or a 503 before the job starts (no model worker ready: loading, or restarting
    after a crash, which takes longer than five retries on a GPU) is "come back later", not a
    failure: MAX_ATTEMPTS of them must not fail an accepted job."""
    import json

    from chatterbox_server.runtime.pool_client import PoolBusy, PoolError
    from chatterbox_server.store import db
    from chatterbox_server.store.jobs_db import JobStore
    from chatterbox_server.synthesis.longjobs import runner as runner_module
    from chatterbox_server.synthesis.longjobs.rules import PENDING
    from workers.engines.base import EngineInfo

    class FullPool:
        models = ("standard",)

        def engine_info(self, model=None) -> EngineInfo:
            return EngineInfo("tone", "tone", "cpu", 24000, ("tone",))

        def submit(self, job):  # noqa: ANN001, ANN201 - the PoolClient call the runner makes
            if refusal == "full":
                raise PoolBusy("every model worker already holds 64 jobs", retry_after=5)
            raise PoolError("no model worker is ready yet; try again shortly")

    class Voices:
        def resolve(self, name, info, owns=None):  # noqa: ANN001, ANN201
            return VoiceRef()

    monkeypatch.setattr(runner_module, "RETRY_PAUSE_SECONDS", 0)
    engine = db.make_engine(db.database_url("", str(tmp_path)))
    db.migrate(engine, str(tmp_path))
    store = JobStore(engine, lease_seconds=60)
    params = {"seed": 1, "speed": 1.0, "exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8}
    store.create({"id": "book", "text": "x" * 10, "text_length": 10, "text_hash": "h", "voice": None,
                  "parameters": json.dumps(params), "output_format": "wav"}, ["one.", "two."])
    runner = runner_module.Runner(store, FullPool(), Voices(), str(tmp_path / "longtext"), max_running=1,
                                  retention_seconds=0)
    for _ in range(runner_module.MAX_ATTEMPTS + 1):
        runner.run(store.claim(runner.owner, 1, lambda owner: False))
        job = store.get("book")
        assert (job["status"], job["attempts"]) == (PENDING, 0)
    engine.dispose()
