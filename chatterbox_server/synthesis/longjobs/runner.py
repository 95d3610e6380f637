"""The long-text job runner: a greenlet in every front worker that claims jobs from the database.

Why here and not in a process of its own: a front worker already has what a job needs (the pool
client, the voice library, the encoders, the gevent hub to wait on sockets), and the database
leases already make any number of runners safe, on one box or many. So every front worker of
every instance runs one claim loop; CHATTERBOX_LONGTEXT_MAX_RUNNING caps the jobs running at once
across all of them. A runner that dies (kill -9, a lost box) stops renewing its lease; the job
moves to another runner once the lease expires, at once if the dead owner was on this host, and
continues from its first chunk without a file. The chunks go to the model pool as background
jobs, which model workers run only when no interactive request is waiting.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable

import gevent
import gevent.event
import psutil
from sqlalchemy.exc import SQLAlchemyError

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.runtime.pool_client import PoolBusy, PoolClient, PoolError
from chatterbox_server.store import files as store_files
from chatterbox_server.store.jobs_db import JobStore, paused_values
from chatterbox_server.store.voice_library import Owns, VoiceLibrary, everyone
from chatterbox_server.synthesis.longjobs import files
from chatterbox_server.synthesis.longjobs.rules import COMPLETED, FAILED, PENDING, PROCESSING
from chatterbox_server.synthesis.longjobs.script import Script
from workers.engines.base import SynthesisSettings, VoiceRef
from workers.ipc.protocol import AudioChunk, SpeechJob

log = logging.getLogger("chatterbox.longjobs")
POLL_SECONDS = 1.0
SWEEP_SECONDS = 60.0
MAX_ATTEMPTS = 5            # model worker crashes or timeouts on one job before it fails
RETRY_PAUSE_SECONDS = 2.0
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
BUFFER_CHUNKS = 8           # the model worker may run this far ahead of a busy front worker


def owner_id() -> str:
    """host|pid|start time: unique to this process, and checkable for liveness on the same host."""
    started = psutil.Process().create_time()
    return f"{socket.gethostname()}|{os.getpid()}|{started:.2f}"


def owner_dead(owner: str) -> bool:
    """True only when the owner is surely dead: a process of this host that no longer runs."""
    try:
        host, pid, started = owner.split("|")
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(int(pid)).create_time() - float(started)) > 0.5
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, ValueError):
        return False


class _Lease:
    """A running job's lease as its watcher sees it: `lost` says why it stopped (the speech job in
    flight, `handle`, is cancelled then), None while it holds."""

    def __init__(self) -> None:
        self.handle = None          # the pool_client.JobHandle in flight, if any
        self.lost: str | None = None

    def lose(self, reason: str) -> None:
        self.lost = reason
        if self.handle is not None:
            self.handle.cancel(reason)


class Runner:
    def __init__(self, store: JobStore, pool: PoolClient, voices: VoiceLibrary, jobs_root: str,
                 max_running: int, retention_seconds: int,
                 access: Callable[[str | None], Owns] = lambda _: everyone) -> None:
        self.store = store
        self.pool = pool
        self.voices = voices
        self.access = access            # a job's owner -> the voices it may use (security.guards.owner_check_for)
        self.jobs_root = jobs_root
        self.max_running = max_running
        self.retention_seconds = retention_seconds
        self.owner = owner_id()
        self.wake = gevent.event.Event()
        self.running: dict[str, gevent.Greenlet] = {}
        self.loop: gevent.Greenlet | None = None
        self.next_sweep = 0.0
        self.database_down = False

    def start(self) -> None:
        self.loop = gevent.spawn(self._loop)

    def poke(self) -> None:
        """A job was created or resumed here: look now instead of at the next poll."""
        self.wake.set()

    def _loop(self) -> None:
        while True:
            try:
                self._sweep_if_due()
                if self._claim_one():
                    self.database_down = False
                    continue
                self.database_down = False
            except SQLAlchemyError as exc:      # down or hung: said once, tried again each poll
                if not self.database_down:
                    log.warning("long-text runner: the database is unavailable (%s); retrying",
                                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                self.database_down = True
            except Exception:  # noqa: BLE001 - a database hiccup must not end the loop
                log.exception("long-text runner: claim loop error; retrying")
            self.wake.wait(POLL_SECONDS)
            self.wake.clear()

    def _claim_one(self) -> bool:
        if self.pool.engine_info() is None:
            return False
        job = self.store.claim(self.owner, self.max_running, owner_dead)
        if job is None:
            return False
        log.info("long-text job %s: claimed (%d/%d chunks done)", job["id"], job["completed_chunks"],
                 job["total_chunks"])
        self.running[job["id"]] = gevent.spawn(self._run_guarded, job)
        return True

    def _run_guarded(self, job: dict) -> None:
        try:
            self.run(job)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            # no room for the next chunk: keep every chunk made so far, pause, and let an operator
            # (or the user, once space is free) resume; failing would throw the work away
            log.error("long-text job %s: the disk is full (%s); the job is paused", job["id"], exc)
            self.store.release(job["id"], self.owner, {
                **paused_values(), "error": "paused: the disk is full; resume it once there is room"})
        except SQLAlchemyError as exc:
            # the database is unreachable: leave the job as it is; its lease expires and a runner
            # (this one, once the database answers) continues it from its first missing chunk
            log.error("long-text job %s: database error (%s); it will be taken up again", job["id"], exc)
        except Exception as exc:  # noqa: BLE001 - recorded on the job, never lost silently
            log.exception("long-text job %s failed", job["id"])
            self.store.release(job["id"], self.owner, {"status": FAILED, "error": f"internal error: {exc}"})
        finally:
            self.running.pop(job["id"], None)
            self.wake.set()

    # -- one job ----------------------------------------------------------------------------------
    def run(self, job: dict) -> None:
        job_id = job["id"]
        params = json.loads(job["parameters"])
        model = params.get("model")         # a model no longer served: the default one speaks it
        info = self.pool.engine_info(model if model in self.pool.models else None)
        if info is None:                        # the model workers went away since the claim
            return self._requeue(job_id, failed=False)
        chunks = self.store.chunks(job_id)
        plan = Script.from_params(params, [c["text"] for c in chunks])
        owns = self.access(job.get("owner"))
        try:
            voices = [self.voices.resolve(name, info, owns=owns) for name in (plan.voices or (job["voice"],))]
        except ApiError as exc:
            self.store.release(job_id, self.owner, {"status": FAILED, "error": str(exc)})
            return
        off_hub(files.mark_owner, self.jobs_root, job_id, job.get("owner"))    # its audio counts in its key's quota
        # the lease is renewed through all the job's speech jobs (a script's are many and short) and
        # while its audio is joined (an hour of mp3 takes longer to encode than a lease lasts)
        lease = _Lease()
        watcher = gevent.spawn(self._watch, job_id, lease)
        try:
            self._run_spans(job, {**params, "model": info.group}, plan, voices, self._missing(job_id, chunks), lease,
                            info.sample_rate)
        finally:
            watcher.kill(block=False)

    def _run_spans(self, job: dict, params: dict, plan: Script, voices: list[VoiceRef], missing: list[int],
                   lease: _Lease, sample_rate: int) -> None:
        """Synthesize the missing chunks span by span (Script.span), then join the job's audio."""
        job_id, texts = job["id"], plan.chunks
        settings = SynthesisSettings(speed=params["speed"], exaggeration=params["exaggeration"],
                                     cfg_weight=params["cfg_weight"], temperature=params["temperature"],
                                     language=params.get("language"))
        speeds = plan.speeds(params["speed"])
        start = missing[0] if missing else len(texts)
        announced = -1              # chunk_done marks the next chunk started: a span that follows on needs no write
        while start < len(texts):
            if lease.lost is not None:
                log.info("long-text job %s: stopped (%s)", job_id, lease.lost)
                self._stopped(job_id)
                return
            begin, end = plan.span(start)
            speech = SpeechJob(request_id=f"long-{job_id}-{begin}", chunks=texts[begin:end], settings=settings,
                               voice=voices[plan.voice_index(begin)], seed=params["seed"] + begin,
                               buffer_size=BUFFER_CHUNKS, text_preview=texts[begin][:80], background=True,
                               chunk_speeds=speeds[begin:end], lead_pause=plan.lead if begin == 0 else 0.0,
                               pauses_after=plan.pauses[begin:end] if any(plan.pauses[begin:end]) else (),
                               trim_edges=plan.trim_edges, model=params["model"])
            if start != announced:
                self.store.chunk_started(job_id, start)
            outcome = self._synthesize(job_id, speech, begin, start, lease)
            if outcome == "stop":
                return
            if outcome == "retry":
                return self._requeue(job_id)
            if outcome == "busy":                   # the pool is full or not ready: no failure, no attempt used up
                return self._requeue(job_id, failed=False)
            announced, start = end, next((idx for idx in missing if idx >= end), len(texts))
        chunks = self.store.chunks(job_id)
        if self._missing(job_id, chunks):     # a file went missing meanwhile: go again
            return self._requeue(job_id, failed=False)
        paths = [files.recorded_path(self.jobs_root, job_id, c["audio_file"]) for c in chunks]
        self._finish(job_id, job["output_format"], paths, sample_rate)

    def _missing(self, job_id: str, chunks: list[dict]) -> list[int]:
        """The chunks without a file, in order."""
        missing = []
        for i, chunk in enumerate(chunks):
            path = files.recorded_path(self.jobs_root, job_id, chunk["audio_file"])
            if path is None or not os.path.exists(path):
                missing.append(i)
        return missing

    def _synthesize(self, job_id: str, speech: SpeechJob, begin: int, keep_from: int, lease: _Lease) -> str:
        """Submit `speech` (chunks `begin` on) and record each chunk from `keep_from` on as it is made
        (one before it is made again only to be thrown away: Script.span)."""
        try:
            handle = self.pool.submit(speech)
        except PoolBusy:
            return "busy"
        except PoolError as exc:
            if exc.code == "model_unavailable":     # no model worker ready (loading, restarting): nothing ran
                log.info("long-text job %s: waiting for a model worker (%s)", job_id, exc)
                return "busy"
            log.warning("long-text job %s: the pool refused a chunk (%s)", job_id, exc)
            return "retry"
        lease.handle = handle
        if lease.lost is not None:          # lost while this job was being submitted
            handle.cancel(lease.lost)
        try:
            # a chunk's audio may come in several messages (a streaming engine's pieces, a pause alone):
            # it is whole once a message of the next chunk comes, or the job ends
            pieces: list[AudioChunk] = []
            for message in handle.chunks():
                if pieces and message.index != pieces[0].index:
                    if not self._record(job_id, handle, begin + pieces[0].index, keep_from, pieces):
                        return "stop"
                    pieces = []
                pieces.append(message)
            if pieces and not self._record(job_id, handle, begin + pieces[0].index, keep_from, pieces):
                return "stop"
            return "done"
        except PoolError as exc:
            if handle.cancel_reason:
                log.info("long-text job %s: stopped (%s)", job_id, handle.cancel_reason)
                self._stopped(job_id)
                return "stop"
            if exc.status < 500:
                self.store.release(job_id, self.owner, {"status": FAILED, "error": str(exc)})
                return "stop"
            log.warning("long-text job %s: %s; it will be retried", job_id, exc)
            return "retry"
        finally:
            lease.handle = None
            handle.close()

    def _record(self, job_id: str, handle, idx: int, keep_from: int,  # noqa: ANN001 - a pool_client.JobHandle
                pieces: list[AudioChunk]) -> bool:
        """Write chunk `idx` and record it; False when the job is no longer ours (the handle is cancelled)."""
        if idx < keep_from:
            return True             # made again only so that the next chunk is made as before
        pcm = b"".join(piece.pcm for piece in pieces)
        path = files.chunk_path(self.jobs_root, job_id, idx)       # a name of this write's own
        off_hub(files.write_atomically, path, pcm)
        recorded, replaced = self.store.chunk_done(job_id, idx, os.path.basename(path), len(pcm) // 2,
                                                   int(sum(piece.synth_seconds for piece in pieces) * 1000),
                                                   self.owner)
        if not recorded:
            # another runner holds the job now (or it was paused, cancelled, deleted): this file is no chunk of it
            store_files.remove(path)
            log.info("long-text job %s: chunk %d not recorded, the job is no longer ours", job_id, idx)
            handle.cancel("the job's lease passed to another runner")
            self._forget_if_deleted(job_id)
            return False
        store_files.remove(files.recorded_path(self.jobs_root, job_id, replaced))
        return True

    def _forget_if_deleted(self, job_id: str) -> None:
        if self.store.get(job_id) is None:      # deleted: a chunk written meanwhile must not linger
            files.remove_job_files(self.jobs_root, job_id)

    def _stopped(self, job_id: str) -> None:
        """Paused, cancelled, deleted or taken over: forget the lease, keep the status."""
        self.store.drop_lease(job_id, self.owner)
        self._forget_if_deleted(job_id)

    def _watch(self, job_id: str, lease: _Lease) -> None:
        """Renew the lease; stop the job at once when it was paused, cancelled, deleted or taken over."""
        interval = min(1.0, self.store.lease_seconds / 3)
        while True:
            gevent.sleep(interval)
            try:
                status = self.store.heartbeat(job_id, self.owner)
            except Exception as exc:  # noqa: BLE001 - an unrenewable lease may pass to another runner
                log.error("long-text job %s: cannot renew its lease (%s); stopping it", job_id, exc)
                lease.lose("its lease could not be renewed")
                return
            if status != PROCESSING:
                lease.lose(f"job {status or 'taken over or deleted'}")
                return

    def _requeue(self, job_id: str, failed: bool = True) -> None:
        """Back to pending after a model worker died or timed out (`failed`), or was not ready."""
        job = self.store.get(job_id)
        attempts = (job["attempts"] if job else 0) + (1 if failed else 0)
        if attempts >= MAX_ATTEMPTS:
            self.store.release(job_id, self.owner, {"status": FAILED, "attempts": attempts,
                                                    "error": f"gave up after {MAX_ATTEMPTS} failed attempts"})
            return
        gevent.sleep(RETRY_PAUSE_SECONDS)
        self.store.release(job_id, self.owner, {"status": PENDING, "attempts": attempts})

    def _finish(self, job_id: str, fmt: str, paths: list[str], sample_rate: int) -> None:
        out = files.output_path(self.jobs_root, job_id, fmt)
        size, seconds = off_hub(files.assemble, fmt, paths, sample_rate, out)
        now = time.time()
        if self.store.release(job_id, self.owner, {
                "status": COMPLETED, "output_path": os.path.basename(out), "output_size_bytes": size,
                "output_duration_seconds": round(seconds, 3), "sample_rate": sample_rate,
                "processing_completed_at": now, "current_chunk": None, "error": None}):
            # a completed job cannot be retried (rules.RETRYABLE), so its chunks serve nothing now;
            # removed only after the completion is recorded, so a runner that lost the lease at the
            # last moment leaves them to the one that holds it
            freed = off_hub(files.remove_chunk_files, self.jobs_root, job_id)
            log.info("long-text job %s: completed (%.1f s of audio, %d bytes; %d bytes of chunk PCM freed)",
                     job_id, seconds, size, freed)

    # -- retention --------------------------------------------------------------------------------
    def _sweep_if_due(self) -> None:
        now = time.time()
        if now < self.next_sweep or not self.retention_seconds:
            return
        self.next_sweep = now + min(SWEEP_SECONDS, self.retention_seconds / 2)
        self.sweep(now)

    def sweep(self, now: float) -> int:
        expired = self.store.expired(now - self.retention_seconds)
        for job_id in expired:
            files.remove_job_files(self.jobs_root, job_id)
            self.store.delete(job_id)
        if expired:
            log.info("long-text retention: removed %d finished job(s)", len(expired))
        return len(expired)
