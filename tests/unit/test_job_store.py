"""The job store on SQLite and on a real PostgreSQL: leases, the running cap, no double claims,
state transitions, retention and the bounded request history."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest
from pgkit import postgres  # noqa: F401 - the session fixture

from chatterbox_server.store import db
from chatterbox_server.store.history_db import HistoryStore
from chatterbox_server.store.jobs_db import JobStore, paused_values
from chatterbox_server.synthesis.longjobs import files
from chatterbox_server.synthesis.longjobs.rules import CANCELLED, COMPLETED, PAUSABLE, PAUSED, PENDING, PROCESSING


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = db.database_url("", str(tmp_path))
    else:
        url = db.database_url(request.getfixturevalue("postgres").new_database(), str(tmp_path))
    engine = db.make_engine(url)
    db.migrate(engine, str(tmp_path))
    yield engine
    engine.dispose()


def never_dead(owner: str) -> bool:
    return False


def add_job(store: JobStore, job_id: str, chunks: int = 3) -> None:
    store.create({"id": job_id, "text": "x" * 10, "text_length": 10, "text_hash": "h", "voice": None,
                  "parameters": json.dumps({"seed": 1}), "output_format": "wav"}, [f"c{i}" for i in range(chunks)])


def test_migrations_are_idempotent_and_concurrent(engine, tmp_path):
    threads = [threading.Thread(target=db.migrate, args=(engine, str(tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = JobStore(engine, 5)
    add_job(store, "a")
    assert store.get("a")["status"] == PENDING


def test_a_dead_runners_job_moves_on_when_its_lease_expires(engine):
    store = JobStore(engine, lease_seconds=1)
    add_job(store, "a")
    first = store.claim("runner-1", max_running=1, owner_dead=never_dead)
    assert first["id"] == "a" and first["lease_owner"] == "runner-1"
    assert store.claim("runner-2", 1, never_dead) is None           # the cap, and the lease, hold
    assert store.heartbeat("a", "runner-1") == PROCESSING
    time.sleep(1.2)                                                 # runner-1 stops renewing: it died
    second = store.claim("runner-2", 1, never_dead)
    assert second["id"] == "a" and second["lease_owner"] == "runner-2"
    assert store.heartbeat("a", "runner-1") is None                 # the old runner learns it lost the job
    assert not store.release("a", "runner-1", {"status": COMPLETED})
    assert store.get("a")["status"] == PROCESSING


def test_a_dead_owner_on_this_host_loses_the_job_at_once(engine):
    store = JobStore(engine, lease_seconds=60)
    add_job(store, "a")
    store.claim("dead-runner", 1, never_dead)
    claimed = store.claim("runner-2", 1, lambda owner: owner == "dead-runner")
    assert claimed["id"] == "a" and claimed["lease_owner"] == "runner-2"


def test_concurrent_claims_never_hand_out_one_job_twice(engine):
    store = JobStore(engine, lease_seconds=60)
    for i in range(6):
        add_job(store, f"job-{i}")
    claims: list[str] = []
    barrier = threading.Barrier(6)

    def claim(n: int) -> None:
        barrier.wait()
        row = store.claim(f"runner-{n}", max_running=3, owner_dead=never_dead)
        if row:
            claims.append(row["id"])

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claims) == 3 and len(set(claims)) == 3               # the cap, and never one job twice
    assert store.status_counts() == {PROCESSING: 3, PENDING: 3}


def test_pause_resume_and_cancel_follow_the_rules(engine):
    store = JobStore(engine, lease_seconds=60)
    add_job(store, "a")
    store.claim("r", 1, never_dead)
    assert store.transition("a", PAUSABLE, paused_values())
    assert store.heartbeat("a", "r") == PAUSED                      # the runner sees the pause and stops
    store.drop_lease("a", "r")
    assert not store.transition("a", PAUSABLE, paused_values())     # already paused
    assert store.transition("a", (PAUSED,), {"status": PENDING})
    assert store.transition("a", (PENDING, PROCESSING, PAUSED), {"status": CANCELLED})
    assert not store.transition("a", (PAUSED,), {"status": PENDING})


def test_chunk_progress_counts_each_chunk_once(engine):
    store = JobStore(engine, lease_seconds=60)
    add_job(store, "a", chunks=3)
    store.claim("r", 1, never_dead)
    assert store.chunk_done("a", 0, "chunk-00000-x.pcm", 100, 5, owner="r") == (True, None)
    assert store.chunk_done("a", 0, "chunk-00000-y.pcm", 100, 5, owner="r") == (True, "chunk-00000-x.pcm")
    row = store.get("a")
    assert row["completed_chunks"] == 1
    assert store.chunks("a")[0]["audio_file"] == "chunk-00000-y.pcm"


def test_only_the_lease_holder_records_a_chunk(engine):
    """Runner 1 stalls past its lease, runner 2 takes the job over: runner 1's late chunk is refused,
    so the chunk recorded is always the file of the runner that held the lease when it wrote."""
    store = JobStore(engine, lease_seconds=1)
    add_job(store, "a", chunks=3)
    store.claim("runner-1", 1, never_dead)
    assert store.chunk_done("a", 0, "chunk-00000-r1.pcm", 100, 5, owner="runner-1")[0]
    time.sleep(1.2)
    assert store.claim("runner-2", 1, never_dead)["lease_owner"] == "runner-2"
    assert store.chunk_done("a", 1, "chunk-00001-r2.pcm", 100, 5, owner="runner-2")[0]
    assert store.chunk_done("a", 1, "chunk-00001-r1.pcm", 100, 5, owner="runner-1") == (False, None)
    assert store.chunk_done("a", 2, "chunk-00002-r1.pcm", 100, 5, owner="runner-1") == (False, None)
    assert store.heartbeat("a", "runner-1") is None
    chunks = store.chunks("a")
    assert [c["audio_file"] for c in chunks] == ["chunk-00000-r1.pcm", "chunk-00001-r2.pcm", None]
    assert store.get("a")["completed_chunks"] == 2
    store.transition("a", (PROCESSING,), paused_values())
    assert store.chunk_done("a", 2, "chunk-00002-r2.pcm", 100, 5, owner="runner-2") == (False, None)


def test_a_retrys_reused_chunks_are_there_before_it_can_be_claimed(engine):
    store = JobStore(engine, lease_seconds=60)
    store.create({"id": "b", "text": "x", "text_length": 1, "text_hash": "h", "voice": None,
                  "parameters": json.dumps({"seed": 1}), "output_format": "wav"}, ["c0", "c1", "c2"],
                 done={0: {"audio_file": "chunk-00000-a.pcm", "samples": 10, "synth_ms": 3}})
    row = store.get("b")
    assert row["completed_chunks"] == 1 and row["status"] == PENDING
    assert [c["audio_file"] for c in store.chunks("b")] == ["chunk-00000-a.pcm", None, None]


def test_retention_sweep_removes_finished_jobs_and_their_files(engine, tmp_path):
    from chatterbox_server.synthesis.longjobs.runner import Runner
    store = JobStore(engine, lease_seconds=60)
    root = str(tmp_path / "longtext")
    for job_id, status in (("old-done", COMPLETED), ("old-cancelled", CANCELLED), ("old-paused", PAUSED),
                           ("new-done", COMPLETED)):
        add_job(store, job_id)
        store.update_meta(job_id, {"status": status})
        files.write_atomically(files.chunk_path(root, job_id, 0), b"\0\0")
    store.update_meta("new-done", {"updated_at": time.time() + 100})  # finished later than the others
    runner = Runner(store, pool=None, voices=None, jobs_root=root, max_running=1, retention_seconds=100)
    assert runner.sweep(now=time.time() + 50) == 0
    assert runner.sweep(now=time.time() + 150) == 2
    assert store.get("old-paused") is not None and store.get("new-done") is not None
    assert store.get("old-done") is None and store.get("old-cancelled") is None
    assert not os.path.exists(files.job_dir(root, "old-done"))
    assert os.path.exists(files.job_dir(root, "old-paused"))


def test_request_history_is_bounded_but_statistics_count_everything(engine):
    history = HistoryStore(engine, max_records=3)
    for i in range(5):
        history.request_started()
        history.record({"request_id": f"r{i}", "endpoint": "/v1/audio/speech", "status": "completed" if i else "error",
                        "start_time": 10.0, "end_time": 12.0, "text_length": 10, "text_preview": "x",
                        "voice_source": "default", "parameters": {}, "total_chunks": 1, "audio_seconds": 1.5,
                        "error_message": None})
    assert [row["request_id"] for row in history.history(10)] == ["r4", "r3", "r2"]
    totals = history.totals()
    assert totals["total_requests"] == 5 and totals["completed_requests"] == 4 and totals["error_requests"] == 1
    assert totals["sum_audio_seconds"] == 7.5
    assert history.reset_memory_counter() == 5 and history.memory_counter() == 0


def test_readers_do_not_wait_for_a_writer(engine):
    from sqlalchemy import select

    from chatterbox_server.store.tables import counters
    writer = engine.connect()
    transaction = writer.begin()
    writer.execute(counters.insert().values(name="pending", value=1.0))
    started = time.monotonic()
    with db.reading(engine) as reader:
        assert reader.execute(select(counters).where(counters.c.name == "pending")).all() == []
    assert time.monotonic() - started < 1.0
    transaction.commit()
    writer.close()


# -- workspaces -----------------------------------------------------------------------------------
def test_a_scope_sees_only_its_owners_jobs(engine):
    store = JobStore(engine, 5)
    for job_id, owner in (("a1", "alice"), ("a2", "alice"), ("b1", "bob"), ("old", None)):
        store.create({"id": job_id, "text": f"{owner}'s secret text", "text_length": 10, "text_hash": "h",
                      "voice": None, "parameters": "{}", "output_format": "wav", "owner": owner}, ["c0"])
    assert store.get("b1", scope="alice") is None and store.get("a1", scope="alice")["owner"] == "alice"
    assert store.get("b1")["owner"] == "bob"                                  # no scope: every workspace
    assert {row["id"] for row in store.list(scope="alice", limit=10)} == {"a1", "a2"}
    assert {row["id"] for row in store.list(search="secret", scope="bob", limit=10)} == {"b1"}
    assert {row["id"] for row in store.list(limit=10)} == {"a1", "a2", "b1", "old"}
    assert store.status_counts("bob") == {PENDING: 1} and store.status_counts() == {PENDING: 4}
    assert len(store.all_rows(scope="alice")) == 2
    assert store.count_active("alice") == 2 and store.count_active("carol") == 0 and store.count_active() == 4


def test_a_scope_reads_and_clears_only_its_owners_history(engine):
    history = HistoryStore(engine, max_records=10)
    for i, owner in enumerate(("alice", "bob", "alice", None)):
        history.record({"request_id": f"r{i}", "endpoint": "/v1/audio/speech", "status": "completed",
                        "start_time": 10.0, "end_time": 12.0, "text_length": 10, "text_preview": f"{owner} text",
                        "voice_source": "default", "parameters": {}, "total_chunks": 1, "audio_seconds": 1.0,
                        "error_message": None, "owner": owner})
    assert [row["request_id"] for row in history.history(10, scope="alice")] == ["r2", "r0"]
    assert [row["request_id"] for row in history.history(10)] == ["r3", "r2", "r1", "r0"]
    assert history.clear(scope="bob") == 1
    assert [row["request_id"] for row in history.history(10)] == ["r3", "r2", "r0"]
