"""A long job's audio against a second runner that fights over its lease, and a retry's edge cases
(a null seed, an unsupported language, reused chunks), on a real server with the tone engine."""
from __future__ import annotations

import os
import re
import threading
import time

import pytest
import requests
from serverkit import start_server
from sqlalchemy import update
from test_long_text import LONG, completed, create, done_chunks, job, story, tone, wait_for

from chatterbox_server.store import db
from chatterbox_server.store.jobs_db import JobStore
from chatterbox_server.store.tables import long_jobs
from chatterbox_server.synthesis.longjobs.rules import PENDING, PROCESSING

pytestmark = [pytest.mark.server, pytest.mark.slow]
GARBAGE = b"\x7f\x7f" * 4000


class Intruder(threading.Thread):
    """A second runner on the same job: it takes the lease over now and then (and gives it back),
    and meanwhile writes chunk files of its own into the job's folder, under the names a runner
    would use, and tries to record them while it does not hold the lease."""

    def __init__(self, data_dir: str, job_id: str, total: int) -> None:
        super().__init__(daemon=True)
        self.engine = db.make_engine(db.database_url("", data_dir))
        self.store = JobStore(self.engine, lease_seconds=3)
        self.folder = os.path.join(data_dir, "longtext", job_id)
        self.job_id, self.total = job_id, total
        self.stop = threading.Event()
        self.steals = 0
        self.last_steal = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            os.makedirs(self.folder, exist_ok=True)
            for idx in range(self.total):
                for name in (f"chunk-{idx:05d}.pcm", f"chunk-{idx:05d}.pcm.tmp"):
                    with open(os.path.join(self.folder, name), "wb") as f:
                        f.write(GARBAGE)
                try:
                    self.store.chunk_done(self.job_id, idx, f"chunk-{idx:05d}.pcm", len(GARBAGE) // 2, 1,
                                          owner="intruder")
                except Exception:  # noqa: BLE001 - a refusal of any kind is the point
                    pass
            if self.steals >= 3 or time.monotonic() - self.last_steal < 2.0:     # let the job progress too
                time.sleep(0.1)
                continue
            with self.engine.begin() as conn:       # take the lease as a claim would, hold it, give it back
                stolen = conn.execute(update(long_jobs).where(long_jobs.c.id == self.job_id,
                                                              long_jobs.c.status == PROCESSING)
                                      .values(lease_owner="intruder", lease_expires=time.time() + 3)).rowcount
            if stolen:
                self.steals += 1
                self.last_steal = time.monotonic()
                time.sleep(0.4)
                with self.engine.begin() as conn:
                    conn.execute(update(long_jobs).where(long_jobs.c.id == self.job_id,
                                                         long_jobs.c.lease_owner == "intruder")
                                 .values(lease_owner=None, lease_expires=None, status=PENDING))



def test_a_jobs_audio_stays_intact_while_a_second_runner_fights_over_its_lease(tmp_path):
    text = story(12, 0.3)
    server = tone(tmp_path)
    intruder = None
    try:
        reference = completed(server, create(server, text))
        job_id = create(server, text)
        wait_for(server, job_id, lambda s: s["status"] == "processing")
        intruder = Intruder(str(tmp_path / "data"), job_id, 12)
        intruder.start()
        wait_for(server, job_id, lambda s: s["status"] in ("completed", "failed"), timeout=120)
        intruder.stop.set()
        intruder.join(timeout=10)
        assert intruder.steals >= 2, "the intruder never took the lease"
        assert completed(server, job_id) == reference
        details = requests.get(server.url(f"{LONG}/{job_id}/details"), timeout=10).json()
        # every recorded chunk was a runner's own file (the intruder's names have no writer's tag); the
        # audio above shows they were whole, and the files are gone now that the job is completed
        for chunk in details["chunks"]:
            assert re.fullmatch(r"chunk-\d{5}-[0-9a-f]{12}\.pcm", chunk["audio_file"]), chunk
            assert not os.path.exists(os.path.join(intruder.folder, chunk["audio_file"]))
    finally:
        if intruder is not None:
            intruder.stop.set()
            intruder.engine.dispose()
        server.stop()


def test_retry_with_a_null_seed_gets_a_new_seed_and_an_unknown_language_is_a_400(tmp_path):
    server = tone(tmp_path)
    try:
        job_id = create(server, story(2, 0.5))
        assert requests.delete(server.url(f"{LONG}/{job_id}"), timeout=10).status_code == 200
        bad = requests.post(server.url(f"{LONG}/{job_id}/retry"),
                            json={"new_parameters": {"language": "xx-nowhere"}}, timeout=10)
        assert bad.status_code == 400, bad.text
        assert "language" in bad.json()["error"]["message"] and "xx-nowhere" in bad.json()["error"]["message"]
        bad_seed = requests.post(server.url(f"{LONG}/{job_id}/retry"),
                                 json={"new_parameters": {"seed": "soon"}}, timeout=10)
        assert bad_seed.status_code == 400 and "seed" in bad_seed.json()["error"]["message"], bad_seed.text
        response = requests.post(server.url(f"{LONG}/{job_id}/retry"), json={"new_parameters": {"seed": None}},
                                 timeout=10)
        assert response.status_code == 200, response.text
        retried = response.json()["job_id"]
        assert len(completed(server, retried)) > 44
        assert isinstance(job(server, retried)["metadata"]["parameters"]["seed"], int)
    finally:
        server.stop()


def test_a_retry_reuses_the_chunks_made_and_ends_with_the_same_audio(tmp_path):
    text = story(8, 0.3)
    server = tone(tmp_path)
    try:
        reference = completed(server, create(server, text))
        job_id = create(server, text)
        wait_for(server, job_id, lambda s: done_chunks(s) >= 3)
        assert requests.delete(server.url(f"{LONG}/{job_id}"), timeout=10).status_code == 200
        made = done_chunks(job(server, job_id))
        response = requests.post(server.url(f"{LONG}/{job_id}/retry"), json={}, timeout=10)
        assert response.status_code == 200, response.text
        retried = response.json()["job_id"]
        assert done_chunks(job(server, retried)) >= made      # recorded with the job, before any claim
        assert completed(server, retried) == reference
    finally:
        server.stop()


def test_long_job_progress_streams_are_capped_per_worker_and_free_their_slot(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="1", longtext_max_sse="1")
    try:
        job_id = create(server, story(6, 0.5))
        url = server.url(f"{LONG}/{job_id}/sse")
        with requests.get(url, stream=True, timeout=30) as first:
            assert first.status_code == 200
            next(first.iter_content(chunk_size=None))
            second = requests.get(url, stream=True, timeout=10)
            assert second.status_code == 429, second.text
            assert "CHATTERBOX_LONGTEXT_MAX_SSE" in second.json()["error"]["message"]
        deadline = time.monotonic() + 10
        while (third := requests.get(url, stream=True, timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.5)
        third.close()
    finally:
        server.stop()
