"""Long-text jobs on real servers: kill -9 and resume byte for byte, pause across a restart,
cancel mid-chunk, a stream beside a job, two instances on one database (SQLite, PostgreSQL),
and the retention sweep. The tone engine is deterministic and its [[sleep:S]] marker makes
every chunk take a known time."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import requests
from pgkit import postgres  # noqa: F401 - the session fixture
from serverkit import Server, start_server
from sqlalchemy import select

from chatterbox_server.store import db
from chatterbox_server.store.tables import long_jobs

pytestmark = [pytest.mark.server, pytest.mark.slow]
LONG = "/v1/audio/speech/long"


def story(chunks: int, sleep: float) -> str:
    """One chunk per sentence (chunk size 50): `chunks` sentences that each take `sleep` s to speak."""
    return " ".join(f"Part {i} of the tale goes on [[sleep:{sleep}]]." for i in range(chunks))


def create(server: Server, text: str, **fields) -> str:
    body = {"input": text, "seed": 11, "response_format": "wav", "streaming_chunk_size": 50, **fields}
    response = requests.post(server.url(LONG), json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def job(server: Server, job_id: str) -> dict:
    response = requests.get(server.url(f"{LONG}/{job_id}"), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server: Server, job_id: str, predicate, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job(server, job_id)
        if predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never got there: {state['status']} {state['progress']['overall_progress']}"
                         f"\n{server.log()[-3000:]}")


def done_chunks(state: dict) -> int:
    return state["metadata"]["completed_chunks"]


def completed(server: Server, job_id: str, timeout: float = 60) -> bytes:
    state = wait_for(server, job_id, lambda s: s["status"] in ("completed", "failed", "cancelled"), timeout)
    assert state["status"] == "completed", state["metadata"]["error"]
    response = requests.get(server.url(f"{LONG}/{job_id}/download"), timeout=30)
    assert response.status_code == 200
    return response.content


def recorded_chunks(server: Server, job_id: str) -> set[str]:
    """The chunk files the job's rows name (each written under a name of its own)."""
    response = requests.get(server.url(f"{LONG}/{job_id}/details"), timeout=10)
    assert response.status_code == 200, response.text
    return {chunk["audio_file"] for chunk in response.json()["chunks"] if chunk["audio_file"]}


def kill_9(server: Server) -> None:
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def tone(tmp_path, **settings) -> Server:
    return start_server(tmp_path, engine="tone", front_workers="2", graceful_timeout="3",
                        longtext_lease_seconds="3", **settings)


def test_kill_9_mid_job_resumes_at_the_first_missing_chunk_with_identical_audio(tmp_path):
    text = story(16, 0.25)
    server = tone(tmp_path)
    try:
        reference = completed(server, create(server, text))
        job_id = create(server, text)
        before = done_chunks(wait_for(server, job_id, lambda s: done_chunks(s) >= 4))
        recorded_before = recorded_chunks(server, job_id)
    finally:
        kill_9(server)
    killed_at = time.time()
    chunk_files = tmp_path / "data" / "longtext" / job_id
    made_before = {p.name: p.stat().st_mtime for p in chunk_files.glob("chunk-*.pcm")}
    assert len(made_before) >= before
    server = tone(tmp_path)
    try:
        # and the model worker dies too, mid-job: the runner retries from the first missing chunk
        wait_for(server, job_id, lambda s: done_chunks(s) > len(made_before))
        (model_worker,) = [p for p in psutil.Process(server.process.pid).children(recursive=True)
                           if "chatterbox-model-worker" in " ".join(p.cmdline())]
        model_worker.kill()
        assert completed(server, job_id) == reference
        assert "it will be retried" in server.log()
        # resumed: the chunks recorded before were not redone (a redone chunk is a file of a new name)
        assert len(recorded_before) >= 4 and recorded_before <= recorded_chunks(server, job_id)
        assert all(mtime < killed_at for mtime in made_before.values())
        assert not list(chunk_files.glob("chunk-*.pcm"))     # completed: only its final file stays
    finally:
        server.stop()


def test_pause_survives_a_restart_and_resume_finishes_the_same_file(tmp_path):
    text = story(8, 0.25)
    server = tone(tmp_path)
    try:
        job_id = create(server, text, response_format="mp3")
        wait_for(server, job_id, lambda s: done_chunks(s) >= 2)
        response = requests.put(server.url(f"{LONG}/{job_id}/pause"), timeout=10)
        assert response.status_code == 200, response.text
        assert requests.put(server.url(f"{LONG}/{job_id}/pause"), timeout=10).status_code == 409
        time.sleep(1.5)                                  # the chunk in flight, if any, lands or is dropped
        paused = job(server, job_id)
        assert paused["status"] == "paused" and paused["can_resume"]
    finally:
        server.stop()
    server = tone(tmp_path)
    try:
        time.sleep(2)
        state = job(server, job_id)
        assert state["status"] == "paused" and done_chunks(state) == done_chunks(paused)
        assert requests.put(server.url(f"{LONG}/{job_id}/resume"), timeout=10).status_code == 200
        resumed = completed(server, job_id)
        assert resumed == completed(server, create(server, text, response_format="mp3"))
    finally:
        server.stop()


def test_cancel_mid_chunk_stops_at_once_and_the_sweep_removes_the_job(tmp_path):
    server = tone(tmp_path, longtext_retention_seconds="4")
    try:
        job_id = create(server, story(3, 3.0))
        wait_for(server, job_id, lambda s: s["status"] == "processing")
        time.sleep(0.5)                                  # inside chunk 0's 3 s
        started = time.monotonic()
        response = requests.delete(server.url(f"{LONG}/{job_id}"), timeout=10)
        assert response.status_code == 200 and time.monotonic() - started < 1.0
        assert job(server, job_id)["status"] == "cancelled"
        # the model worker is free again after the chunk it was in: an interactive request is served
        speech = requests.post(server.url("/v1/audio/speech"), json={"input": "Right after."}, timeout=10)
        assert speech.status_code == 200 and time.monotonic() - started < 4.0
        time.sleep(1.0)
        state = job(server, job_id)
        assert state["status"] == "cancelled" and done_chunks(state) == 0
        assert not list((tmp_path / "data" / "longtext" / job_id).glob("chunk-*.pcm"))
        assert requests.put(server.url(f"{LONG}/{job_id}/resume"), timeout=10).status_code == 409
        deadline = time.monotonic() + 10
        while requests.get(server.url(f"{LONG}/{job_id}"), timeout=10).status_code != 404:
            assert time.monotonic() < deadline, "the retention sweep did not remove the cancelled job"
            time.sleep(0.25)
        assert not (tmp_path / "data" / "longtext" / job_id).exists()
    finally:
        server.stop()


def first_byte_seconds(server: Server) -> float:
    started = time.monotonic()
    with requests.post(server.url("/v1/audio/speech/stream"), json={"input": "A quick question, please."},
                       stream=True, timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_content(chunk_size=1))
        return time.monotonic() - started


def test_a_running_job_delays_a_streams_first_audio_by_at_most_one_chunk(tmp_path):
    chunk_seconds = 0.6
    server = tone(tmp_path)
    try:
        idle = min(first_byte_seconds(server) for _ in range(2))
        job_id = create(server, story(12, chunk_seconds))
        wait_for(server, job_id, lambda s: done_chunks(s) >= 1)
        busy = max(first_byte_seconds(server) for _ in range(3))
        assert busy <= idle + chunk_seconds + 0.3, (idle, busy)
        assert job(server, job_id)["status"] == "processing"
        requests.delete(server.url(f"{LONG}/{job_id}"), timeout=10)
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_instances_share_the_jobs_never_run_one_twice_and_take_over_a_dead_ones(tmp_path, backend, request):
    shared = tmp_path / "shared"
    url = request.getfixturevalue("postgres").new_database() if backend == "postgresql" else ""
    settings = {"data_dir": str(shared), "database_url": url, "longtext_max_running": "1"}
    engine = db.make_engine(db.database_url(url, str(shared)))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    servers = [tone(tmp_path / "a", **settings), tone(tmp_path / "b", **settings)]
    try:
        jobs = [create(servers[0], story(6, 0.3)), create(servers[1], story(6, 0.3))]
        owner = watch_leases(engine, jobs, lambda rows: any(r.lease_owner for r in rows))
        pid = int(owner.split("|")[1])
        holder = next(s for s in servers if pid in {c.pid for c in psutil.Process(s.process.pid).children()})
        survivor = servers[1 - servers.index(holder)]
        kill_9(holder)
        # the survivor takes the dead instance's job over and runs both, one at a time
        watch_leases(engine, jobs, lambda rows: all(r.status == "completed" for r in rows), timeout=60)
        for job_id in jobs:
            assert len(completed(survivor, job_id)) > 44
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()
        engine.dispose()


def watch_leases(engine, jobs: list[str], until, timeout: float = 30):
    """Poll the jobs' rows; at no moment may two hold a live lease (max_running=1). Returns an owner."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(select(long_jobs.c.status, long_jobs.c.lease_owner, long_jobs.c.lease_expires)
                                .where(long_jobs.c.id.in_(jobs))).all()
        live = [r for r in rows if r.status == "processing" and (r.lease_expires or 0) > time.time()]
        assert len(live) <= 1, rows
        if until(rows):
            return next((r.lease_owner for r in rows if r.lease_owner), None)
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout} s: {rows}")
