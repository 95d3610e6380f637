"""The model-worker process: owns one engine and serves synthesis jobs over Unix sockets.

One thread runs everything. Between two engine steps it accepts connections, reads job, credit
and cancel messages, then picks the batch for the next step (workers/scheduler/batch.py): each job
has one open stream (its current text chunk) and up to ``CHATTERBOX_MAX_BATCH`` jobs are advanced
together by one ``Engine.step`` (an engine may take fewer per step: hibari and tone take one, a
whole chunk). Every audio message costs the job one credit: a job whose client is
``buffer_size`` messages behind is parked: it leaves the batch with its stream kept, is not
counted as active on the board, rejoins when credit comes, and is cancelled (JobFailed, 408) once
it has been parked for ``CHATTERBOX_PARKED_TIMEOUT``. Messages go out through a non-blocking
outbox per connection (workers/ipc/outbox.py), so a front worker that stops reading never stops the
loop; one that takes no byte for ``CHATTERBOX_PARKED_TIMEOUT`` loses its connection. A closed
connection cancels its job at the next step at the latest; the supervisor's lifeline closing
makes the worker exit. Jobs failing again and again with engine errors (a sticky CUDA error) make
it exit with EXIT_ENGINE_BROKEN, for the supervisor to start a fresh engine.
A job with ``timestamps`` gets each text chunk's word timings on that chunk's last audio message:
the engine's own when it has them, else an estimate from the audio (workers/timings.py).
A speech job may give each text chunk its own speed (``chunk_speeds``) and ask for silences: the
worker adds them as exact zero samples after its fades, ``lead_pause`` in front of chunk 0's first
message and ``pauses_after[i]`` at the end of chunk i's last one (a message of silence alone when the
engine's last piece of that chunk has no audio: still one credit), so they count in the job's audio.
After every step (and every admitted job) the worker publishes on the board how long a new
job would wait for a row, from the step time its chunks took (workers/scheduler/estimate.py); front
workers admit jobs on it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

import numpy as np

from chatterbox_server.settings import Settings
from workers.audio import finish_piece, join_window, read_wav_mono, split_speed, to_pcm16, trim_quiet_edges
from workers.engines import ServedEngine
from workers.engines.base import VC_INPUT_RATE, Engine, EngineError, EngineInfo, Piece
from workers.ipc.board import Board, WorkerState
from workers.ipc.outbox import Outbox, PeerGone
from workers.ipc.protocol import (
    Accepted,
    AudioChunk,
    ConvertJob,
    Credit,
    JobDone,
    JobFailed,
    MemoryAction,
    MemoryReport,
    ModelAction,
    ModelLoading,
    ModelReport,
    SpeechJob,
    chunk_seed,
)
from workers.liveness import FailureStreak
from workers.scheduler import parking
from workers.scheduler.batch import ActiveJob, newcomer_wait, select_batch
from workers.scheduler.estimate import CostMeter
from workers.timings import ChunkWords, Word, shift_words

log = logging.getLogger("chatterbox.model_worker")
PROCESS_TITLE = "chatterbox-model-worker"
EXIT_LOAD_FAILED = 3
EXIT_ENGINE_BROKEN = 4      # CHATTERBOX_MAX_ENGINE_FAILURES jobs in a row failed with engine errors
LOADING_POLL_SECONDS = 0.05  # how often the loop looks whether the loader thread is done


def socket_path(run_dir: str, slot: int) -> str:
    return os.path.join(run_dir, f"model-worker-{slot}.sock")


class ModelWorker:
    def __init__(self, slot: int, settings: Settings, run_dir: str, device: str, lifeline: Connection):
        self.slot = slot
        self.settings = settings
        self.run_dir = run_dir
        self.device = device
        self.lifeline = lifeline
        self.board = Board.open(os.path.join(run_dir, "board"))
        self.engine: Engine | None = None
        self.info: EngineInfo | None = None
        self.listener: socket.socket | None = None
        self.jobs: dict[Connection, ActiveJob] = {}   # in arrival order
        self.idle_conns: set[Connection] = set()     # connected, job message not read yet
        self.outboxes: dict[Connection, Outbox] = {}  # every open connection's messages not yet written
        self.closing: set[Connection] = set()         # last message queued: closed once it is written
        self.batch: list[ActiveJob] = []              # jobs holding a row of the engine's batch
        self.parked_published = 0
        self.published_caches: dict | None = None
        self.done = 0
        self.failed = 0
        self.cost = CostMeter()
        self.stopping = False
        self.lifeline_closed = False
        self.engine_failures = FailureStreak(settings.max_engine_failures)
        self.step_failure: str | None = None    # an engine error in the current step
        self.step_made_audio = False
        self.broken: str | None = None          # why the engine is given up on
        self.exit_code = 0
        # several models on one server: this worker serves one of them, loaded on demand
        self.group = settings.slot_models[slot][0] if slot < len(settings.slot_models) else settings.model
        self.served: ServedEngine | None = None
        self.described: EngineInfo | None = None  # the model's features before its weights are loaded
        self.loader: threading.Thread | None = None
        self.load_result: tuple[Engine, EngineInfo, float] | BaseException | None = None
        self.load_wanted = False                # asked the supervisor for room in the memory budget
        self.warm_after_load = False
        self.loads = 0                          # loads in this process (the first one warms up)
        self.load_seconds = 0.0
        self.last_used = time.monotonic()

    # -- life cycle ---------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self.served = ServedEngine(self.settings, self.group, self.device)
            self.engine = self.served.engine
            self.described = self.served.describe()
        except Exception as exc:  # noqa: BLE001 - report any failure on the board, then exit
            log.error("slot %d: engine cannot be set up: %s", self.slot, exc, exc_info=True)
            self.board.set_state(self.slot, WorkerState.FAILED, f"engine failed to load: {exc}")
            return EXIT_LOAD_FAILED
        self.listener = self._listen()
        self._publish_info()
        self.board.set_state(self.slot, WorkerState.UNLOADED)
        log.info("slot %d: serving model %s (%s), not loaded yet (pid %d)", self.slot, self.group,
                 self.described.model, os.getpid())
        self.serve()
        if self.broken:
            # the board says so before the exit: front workers stop sending jobs here at once
            self.board.set_state(self.slot, WorkerState.FAILED, self.broken)
            log.error("slot %d: %s; exiting for a fresh engine", self.slot, self.broken)
            return self.exit_code or EXIT_ENGINE_BROKEN
        return 0

    @property
    def loaded(self) -> bool:
        return self.info is not None

    # -- loading and unloading the model ----------------------------------------------------------
    def want_load(self) -> None:
        """Load the model as soon as the memory budget has room (the supervisor decides); at once
        without a supervisor."""
        if self.loaded or self.loader is not None or self.load_wanted:
            return
        self.board.set_state(self.slot, WorkerState.LOADING)
        if self.lifeline is None:
            self.start_load()
            return
        self.load_wanted = True
        estimate = max(self.engine.expected_bytes(), 0) if self.engine is not None else 0
        self._tell_supervisor(("want-load", estimate))

    def start_load(self) -> None:
        self.load_wanted = False
        if self.loaded:         # granted twice: the supervisor learns again what it holds
            self._tell_supervisor(("loaded", self.engine.weight_bytes()))
            return
        if self.loader is not None:
            return
        self.board.set_state(self.slot, WorkerState.LOADING)
        warm = self.loads == 0 and not self.jobs        # a waiting request would wait for the warm-up too
        log.info("slot %d: loading model %s on %s%s", self.slot, self.group, self.device,
                 " (and warming up)" if warm else "")
        self.warm_after_load = warm
        self.loader = threading.Thread(target=self._load_in_thread, name="model-loader", daemon=True)
        self.loader.start()

    def _load_in_thread(self) -> None:
        started = time.monotonic()
        try:
            info = self.served.load()
            self.load_result = (self.served.engine, info, time.monotonic() - started)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            self.load_result = exc

    def _finish_load(self) -> None:
        if self.loader is None or self.loader.is_alive():
            return
        self.loader.join()
        self.loader, result, self.load_result = None, self.load_result, None
        if isinstance(result, BaseException) or result is None:
            self._load_failed(result)
            return
        self.engine, info, self.load_seconds = result
        if self.warm_after_load and not self.jobs:
            # on the loop's thread, which steps the engine: compiled graphs and CUDA state belong to it
            try:
                self.engine.warmup(info)
            except Exception as exc:  # noqa: BLE001 - a warm-up that fails is a load that failed
                self._load_failed(exc)
                return
        self.info = info
        self.loads += 1
        self.last_used = time.monotonic()
        self.cost = CostMeter()
        self._publish_info()
        self.board.set_state(self.slot, WorkerState.READY)
        log.info("slot %d: %s model %s loaded on %s in %.1f s", self.slot, info.engine, info.model, info.device,
                 self.load_seconds)
        self._tell_supervisor(("loaded", self.engine.weight_bytes()))
        for conn in list(self.jobs):
            self._send(conn, ModelLoading(self.group, done=True))

    def _load_failed(self, exc: BaseException | None) -> None:
        reason = f"{exc}"       # the supervisor's exit reason says "could not load its engine" before it
        log.error("slot %d: model %s could not be loaded", self.slot, self.group, exc_info=exc)
        for conn in list(self.jobs):
            self._fail(conn, JobFailed(f"model {self.group} could not be loaded: {exc}", kind="model", status=503))
        for conn in list(self.idle_conns):
            self._close(conn)
        self._tell_supervisor(("load-failed", reason[:500]))
        # a fresh process for the next try: a failed CUDA initialisation can leave this one unusable
        self.broken, self.exit_code = reason, EXIT_LOAD_FAILED

    def refuse_load(self, message: str) -> None:
        """The memory budget can never hold this model: its waiting jobs fail, the worker stays unloaded."""
        self.load_wanted = False
        for conn in list(self.jobs):
            self._fail(conn, JobFailed(message, kind="model", status=503))
        self.board.set_state(self.slot, WorkerState.UNLOADED, message)

    def unload(self, reason: str) -> bool:
        """Free the model's memory; False (and nothing done) while a job is here."""
        if self.jobs or self.idle_conns or self.loader is not None:
            return False
        if not self.loaded:
            return True
        self.engine.unload()
        self.info = None
        self.batch = []
        import gc
        gc.collect()
        self._publish_info()
        self.board.set_state(self.slot, WorkerState.UNLOADED)
        log.info("slot %d: model %s unloaded (%s)", self.slot, self.group, reason)
        self._tell_supervisor(("unloaded", reason))
        return True

    def _unload_if_idle(self) -> None:
        limit = self.settings.idle_unload_seconds
        if limit > 0 and self.loaded and not self.jobs and time.monotonic() - self.last_used >= limit:
            self.unload(f"idle for {limit:g} s")

    def _tell_supervisor(self, message: tuple) -> None:
        if self.lifeline is None:
            return
        try:
            self.lifeline.send(message)
        except OSError:
            self.lifeline_closed = True

    def _publish_info(self) -> None:
        info: dict = {**dataclasses.asdict(self.info or self.described), "loaded": self.loaded,
                      "group": self.group}
        if self.engine is not None and self.loaded:
            info["memory"] = self.engine.memory_stats()
            info["weight_bytes"] = self.engine.weight_bytes()
            info["caches"] = self.published_caches = self.engine.cache_stats()
        else:
            info["memory"], info["weight_bytes"], info["caches"] = None, 0, None
            self.published_caches = None
        info["loads"], info["load_seconds"] = self.loads, round(self.load_seconds, 3)
        info["outbox"] = {"parked_jobs": self.parked_published}
        info["admission"] = {"rows": self.capacity, "per_unit": self.cost.per_unit}
        self.board.publish_info(self.slot, info)

    def _listen(self) -> socket.socket:
        path = socket_path(self.run_dir, self.slot)
        if os.path.exists(path):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(256)
        return listener

    def stop(self, *_: object) -> None:
        self.stopping = True

    # -- the loop -----------------------------------------------------------------------------------
    def serve(self) -> None:
        while not (self.stopping and not self.jobs and not self.closing) and not self.broken:
            busy = self.loaded and any(job.runnable for job in self.jobs.values())
            wait = 0 if busy else self._idle_wait()
            self._poll(timeout=min(wait, LOADING_POLL_SECONDS) if self.loader is not None else wait)
            if self.lifeline_closed:
                break
            self._finish_load()
            if self.broken:
                break
            self._unload_if_idle()
            batch = self._select_batch()
            if batch and self.idle_conns and all(job.background for job in batch):
                # a client that has just connected is about to send its job: read it before a background step
                self._poll(timeout=0.05)
                batch = self._select_batch()
            if batch:
                self._step(batch)
            self._expire()
            self._publish_load()

    def _poll(self, timeout: float) -> None:
        """Wait for messages, new connections and sockets that can take more of an outbox. A new
        connection is read again at once, without waiting for a step: jobs still in the listen
        backlog would be invisible to the queue estimate."""
        accepted = True
        while accepted:
            accepted = False
            with selectors.PollSelector() as selector:
                selector.register(self.lifeline, selectors.EVENT_READ)
                if not self.stopping:
                    selector.register(self.listener, selectors.EVENT_READ)
                for conn, outbox in self.outboxes.items():
                    events = 0 if conn in self.closing else selectors.EVENT_READ
                    if not outbox.empty:
                        events |= selectors.EVENT_WRITE
                    if events:
                        selector.register(conn, events)
                ready = selector.select(timeout)
            for key, events in ready:
                if key.fileobj is self.listener:
                    self._accept()
                    accepted = True
                elif key.fileobj is self.lifeline:
                    self._read_lifeline()
                else:
                    self._serve_connection(key.fileobj, events)
            timeout = 0

    def _serve_connection(self, conn: Connection, events: int) -> None:
        if events & selectors.EVENT_WRITE and not self._flush(conn):
            return      # dropped: nothing left to read either
        if events & selectors.EVENT_READ and conn in self.outboxes and conn not in self.closing:
            self._read_message(conn)

    def _idle_wait(self) -> float:
        """How long an idle loop may sleep: at most a second, and not past the next park deadline."""
        deadlines = [job.parked_since + self.settings.parked_timeout for job in self.jobs.values()
                     if job.parked_since is not None]
        return max(0.0, min([1.0, *(deadline - time.monotonic() for deadline in deadlines)]))

    def _expire(self) -> None:
        """Cancel jobs parked too long (or beyond the cap) and drop peers that took nothing for as long;
        `parked_published` keeps how many stay parked."""
        limit = self.settings.parked_timeout
        for conn in [conn for conn, outbox in self.outboxes.items() if outbox.stalled_for() > limit]:
            self._drop(conn, f"the front worker took no data for {limit:g} s")
        cancel, parked = parking.review(list(self.jobs.values()), time.monotonic(), limit,
                                        cap=self.settings.max_queued_jobs)
        for active, reason in cancel:
            self._cancel_parked(active, reason)
        if parked != self.parked_published:
            self.parked_published = parked
            self._publish_info()

    def _read_lifeline(self) -> None:
        try:
            message = self.lifeline.recv()
        except (EOFError, OSError):
            log.warning("slot %d: the supervisor is gone; exiting", self.slot)
            self.lifeline_closed = True
            return
        if message == "stop":
            self.stopping = True
        elif message == ("load",):
            self.start_load()
        elif message == ("preload",):
            self.want_load()
        elif isinstance(message, tuple) and message[0] == "refuse":
            self.refuse_load(message[1])
        elif isinstance(message, tuple) and message[0] == "unload" and not self.unload(message[1]):
            self._tell_supervisor(("unload-refused",))

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        self.connected(Connection(sock.detach()))

    def connected(self, conn: Connection) -> None:
        """A new connection from a front worker: its job message comes next."""
        self.idle_conns.add(conn)
        self.outboxes[conn] = Outbox(conn.fileno())

    def _read_message(self, conn: Connection) -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            self._drop(conn, "the front worker closed the connection")
            return
        except Exception as exc:  # noqa: BLE001 - an unreadable message ends that connection only
            self._drop(conn, f"unreadable message: {exc}")
            return
        if isinstance(message, (SpeechJob, ConvertJob)) and conn in self.idle_conns:
            self._admit(conn, message)
        elif isinstance(message, MemoryAction) and conn in self.idle_conns:
            self._memory_action(conn, message)
        elif isinstance(message, ModelAction) and conn in self.idle_conns:
            self._model_action(conn, message)
        elif isinstance(message, Credit) and conn in self.jobs:
            self.jobs[conn].credits += message.chunks
        else:
            self._fail(conn, JobFailed(f"unexpected message {type(message).__name__}", status=500))

    def _memory_action(self, conn: Connection, action: MemoryAction) -> None:
        """gc + the engine's cache release (CUDA empty_cache), between two chunks; answers what it did."""
        import gc

        import psutil
        process = psutil.Process()
        rss_before, accelerator_before = process.memory_info().rss, self.engine.memory_stats()
        collected = gc.collect()
        self.engine.release_memory()
        torch = sys.modules.get("torch")
        on_cuda = bool(torch is not None and accelerator_before is not None and torch.cuda.is_available())
        if on_cuda and action.reset_peak:
            torch.cuda.reset_peak_memory_stats()
        self._send(conn, MemoryReport(self.slot, os.getpid(), collected, on_cuda, on_cuda and action.reset_peak,
                                      rss_before, process.memory_info().rss, accelerator_before,
                                      self.engine.memory_stats()))
        self._retire(conn)

    def _model_action(self, conn: Connection, action: ModelAction) -> None:
        """POST /v1/models/{id}/load or /unload, for this worker's share of the model."""
        self.idle_conns.discard(conn)
        if action.action == "load":
            self.want_load()
            report = ModelReport("loaded" if self.loaded else "loading")
        elif action.action == "unload":
            in_use = len(self.jobs) + len(self.idle_conns)
            if self.loader is not None or self.load_wanted:
                report = ModelReport("loading", "the model is loading; unload it once it is loaded")
            elif self.unload("unloaded by hand"):
                report = ModelReport("unloaded")
            else:
                report = ModelReport("in_use", f"{in_use} request(s) in progress", active_jobs=in_use)
        else:
            report = ModelReport("failed", f"unknown action {action.action!r}")
        self._send(conn, report)
        self._retire(conn)

    def _admit(self, conn: Connection, job: SpeechJob | ConvertJob) -> None:
        self.idle_conns.discard(conn)
        active = ActiveJob(conn, job, credits=job.buffer_size)
        self.jobs[conn] = active
        self.last_used = time.monotonic()
        self._publish_load()       # at once, not after the next step: front workers admit on it
        if not self._send(conn, Accepted(self.slot, jobs_ahead=len(self.jobs) - 1)):
            return
        if not self.loaded:
            if not self._send(conn, ModelLoading(self.group)):
                return
            self.want_load()
            return
        if not job.units:
            self._finish(active)

    @property
    def capacity(self) -> int:
        return max(1, min(self.settings.max_batch, self.engine.step_capacity))

    def _select_batch(self) -> list[ActiveJob]:
        if not self.loaded:
            return []
        self.batch = select_batch(self.batch, self.jobs.values(), self.capacity)
        return self.batch

    # -- admission --------------------------------------------------------------------------------
    def queued_seconds(self) -> float:
        """A new interactive job's wait for a row (workers/scheduler/estimate.py)."""
        return newcomer_wait(self.jobs.values(), self.batch, self.capacity, self.cost)

    def _publish_load(self) -> None:
        active = len(self.jobs) - self.parked_published + len(self.idle_conns)
        self.board.update_load(self.slot, active, self.done, self.failed)
        self.board.set_queued_seconds(self.slot, self.queued_seconds())

    # -- synthesis ----------------------------------------------------------------------------------
    def _step(self, batch: list[ActiveJob]) -> None:
        self.step_failure, self.step_made_audio = None, False
        try:
            self._advance(batch)
        finally:
            self._count_engine_health()

    def _advance(self, batch: list[ActiveJob]) -> None:
        started = time.perf_counter()
        opened = [active for active in batch if self._open_stream(active)]
        if not opened:
            return
        stepped = time.perf_counter()
        results = self.engine.step([active.stream for active in opened])
        finished = time.perf_counter()
        share = (finished - stepped) / len(opened)
        for active in opened:
            active.row_seconds += finished - started     # each row waited for the stream openings too
        for active, result in zip(opened, results, strict=True):
            if active.conn not in self.jobs:
                continue    # dropped while sending to an earlier job of this step
            if isinstance(result, BaseException):
                self._stream_failed(active, result)
            else:
                self._deliver(active, result, share)

    def _open_stream(self, active: ActiveJob) -> bool:
        if active.stream is not None:
            return True
        job, index = active.job, active.next_index
        try:
            if isinstance(job, ConvertJob):
                if active.source is None:
                    active.source = read_wav_mono(job.audio_path)
                start, end = job.windows[index]
                active.stream = self.engine.open_conversion(active.source[start:end], job.voice,
                                                            chunk_seed(job.seed, index), watermark=job.watermark)
            else:
                engine_speed, active.stretch = split_speed(job.chunk_speed(index), self.info.native_speed)
                settings = dataclasses.replace(job.settings, speed=engine_speed, timestamps=job.timestamps)
                active.words = ChunkWords(job.chunks[index], self.info.sample_rate) if job.timestamps else None
                active.stream = self.engine.open_stream(job.chunks[index], settings, job.voice,
                                                        chunk_seed(job.seed, index),
                                                        incremental=abs(active.stretch - 1.0) < 1e-3)
        except Exception as exc:  # noqa: BLE001 - reported to that job alone
            self._stream_failed(active, exc)
            return False
        active.pieces_in_chunk = 0
        active.trimmed = 0
        return True

    def _stream_failed(self, active: ActiveJob, exc: BaseException) -> None:
        if isinstance(exc, EngineError):
            self._fail(active.conn, JobFailed(str(exc), kind="request", status=400))
            return
        log.error("slot %d: request %s failed on chunk %d:\n%s", self.slot, active.job.request_id,
                  active.next_index, "".join(traceback.format_exception(exc)))
        message = f"synthesis failed: {type(exc).__name__}: {exc}"
        self._fail(active.conn, JobFailed(message, kind="engine", status=500))
        self.step_failure = message[:200]

    def _count_engine_health(self) -> None:
        """One streak entry per step, not per job: every row of one failed batch (a transient
        out-of-memory) counts once, while a sticky error fails step after step."""
        if self.step_made_audio:
            if self.engine_failures.succeeded():
                self.board.set_engine_failures(self.slot, 0)
        elif self.step_failure is not None:
            if self.engine_failures.failed(self.step_failure):
                self.broken = self.engine_failures.describe()
            self.board.set_engine_failures(self.slot, self.engine_failures.count)

    def _deliver(self, active: ActiveJob, piece: Piece, seconds: float) -> None:
        stats = active.stats
        stats.input_tokens += piece.input_tokens
        stats.output_tokens += piece.output_tokens
        stats.synth_seconds += seconds
        active.last_served = time.monotonic()
        self.step_made_audio = True
        audio = self._finish_audio(active, piece)
        words = self._chunk_words(active, piece, audio)
        audio, words = self._trim(active, piece, audio, words)
        lead, trail = self._pauses(active, piece)
        if audio.size or (piece.last and (active.pieces_in_chunk == 0 or words is not None or trail)):
            if lead or trail:
                audio = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(trail, np.float32)])
            if words is not None and active.next_index == 0:
                words = self._after_lead(active.job, words)
            pcm = to_pcm16(audio)
            stats.samples += len(pcm) // 2
            active.credits -= 1
            active.pieces += 1
            active.pieces_in_chunk += 1
            if not self._send(active.conn, AudioChunk(active.next_index, pcm, piece.input_tokens,
                                                      piece.output_tokens, seconds, words)):
                return
        if not piece.last:
            return
        active.stream.close()
        active.stream = None
        self.cost.observe(*active.work(), active.row_seconds)
        active.row_seconds = 0.0
        active.next_index += 1
        if active in self.batch:
            self.batch.remove(active)    # the next chunk competes for a row again
        if active.next_index == active.job.units:
            self._finish(active)

    def _trim(self, active: ActiveJob, piece: Piece, audio: np.ndarray,
              words: tuple[Word, ...] | None) -> tuple[np.ndarray, tuple[Word, ...] | None]:
        """The engine's silence cut where the job asks (SpeechJob.trims); the chunk's words (timed on the
        audio before the cut) moved back by what its start lost."""
        job = active.job
        if not isinstance(job, SpeechJob):
            return audio, words
        start, end = job.trims(active.next_index)
        audio, cut = trim_quiet_edges(audio, self.info.sample_rate, start=start and active.pieces_in_chunk == 0,
                                      end=end and piece.last)
        active.trimmed += cut
        if words is not None and active.trimmed:
            words = shift_words(words, -active.trimmed / self.info.sample_rate, floor=0.0)
        return audio, words

    def _pauses(self, active: ActiveJob, piece: Piece) -> tuple[int, int]:
        """Samples of silence around this piece's audio, if it is sent: the job's lead pause before the
        first message of chunk 0 (none is sent until the engine has audio or the chunk ends, so the lead
        waits for that message), the chunk's pause after it on its last."""
        job = active.job
        if not isinstance(job, SpeechJob):
            return 0, 0
        rate = self.info.sample_rate
        lead = round(job.lead_pause * rate) if active.next_index == 0 and active.pieces_in_chunk == 0 else 0
        trail = round(job.pause_after(active.next_index) * rate) if piece.last else 0
        return lead, trail

    def _after_lead(self, job: SpeechJob | ConvertJob, words: tuple[Word, ...]) -> tuple[Word, ...]:
        """Chunk 0's words, from the first sample of its first message: the lead pause comes first."""
        lead = round(job.lead_pause * self.info.sample_rate) if isinstance(job, SpeechJob) else 0
        return shift_words(words, lead / self.info.sample_rate) if lead else words

    @staticmethod
    def _chunk_words(active: ActiveJob, piece: Piece, audio: np.ndarray) -> tuple[tuple[str, float, float], ...] | None:
        """A timestamps job's word timings, once its chunk's last piece is in (workers/timings.py)."""
        if active.words is None:
            return None
        active.words.add(piece.audio, audio)
        if not piece.last:
            return None
        words, active.words = active.words.finish(piece.words), None
        return words

    def _finish_audio(self, active: ActiveJob, piece: Piece) -> np.ndarray:
        rate = self.info.sample_rate
        if isinstance(active.job, ConvertJob):
            job, index = active.job, active.next_index
            active.tail, audio = join_window(active.tail, piece.audio, round(job.overlap * rate / VC_INPUT_RATE),
                                             rate, first=index == 0, last=index == job.units - 1)
            return audio
        return finish_piece(piece.audio, rate, active.stretch, first=active.pieces_in_chunk == 0, last=piece.last)

    # -- endings ------------------------------------------------------------------------------------
    def _finish(self, active: ActiveJob) -> None:
        if cache_sizes(self.engine.cache_stats()) != cache_sizes(self.published_caches):
            self._publish_info()        # a voice came into or left a per-voice cache: /memory shows it
        stats = active.stats
        self._send(active.conn, JobDone(stats.input_tokens, stats.output_tokens,
                                        stats.samples / self.info.sample_rate, stats.synth_seconds))
        self.done += 1
        self._retire(active.conn)

    def _fail(self, conn: Connection, failure: JobFailed) -> None:
        self.failed += 1
        self._send(conn, failure)
        self._retire(conn)

    def _cancel_parked(self, active: ActiveJob, reason: str) -> None:
        """Its client reads nothing: free the job's row, state and slot (the client's doing, not a failure)."""
        log.info("slot %d: request %s cancelled after %d/%d chunks: %s", self.slot, active.job.request_id,
                 active.next_index, active.job.units, reason)
        failure = JobFailed(f"{reason}; the request was cancelled", kind="client", status=408)
        if self._send(active.conn, failure):
            self._retire(active.conn)

    def _drop(self, conn: Connection, reason: str) -> None:
        active = self.jobs.get(conn)
        if active is not None and active.next_index < active.job.units:
            log.info("slot %d: request %s cancelled after %d/%d chunks (%s)", self.slot,
                     active.job.request_id, active.next_index, active.job.units, reason)
        self._close(conn)

    def _send(self, conn: Connection, message: object) -> bool:
        """Queue the message and write what the socket takes now; False if the connection was dropped."""
        outbox = self.outboxes.get(conn)
        if outbox is None:
            return False
        outbox.put(message)
        return self._flush(conn)

    def _flush(self, conn: Connection) -> bool:
        """Write what the socket takes; closes a finished connection once empty. False if it is gone."""
        outbox = self.outboxes.get(conn)
        if outbox is None:
            return False        # closed while handling an earlier event of the same poll
        try:
            empty = outbox.flush()
        except PeerGone:
            self._drop(conn, "the front worker went away")
            return False
        if empty and conn in self.closing:
            self._close(conn)
        return True

    def _retire(self, conn: Connection) -> None:
        """The connection's last message is queued: free its job now, close it once the message is out."""
        outbox = self.outboxes.get(conn)
        if outbox is None:
            return              # already dropped
        if outbox.empty:
            self._close(conn)
            return
        self._forget_job(conn)
        self.closing.add(conn)

    def _close(self, conn: Connection) -> None:
        self._forget_job(conn)
        self.closing.discard(conn)
        outbox = self.outboxes.pop(conn, None)
        if outbox is not None:
            outbox.close()
        conn.close()
        if not self.jobs and self.engine is not None:
            if self.loaded:
                self.engine.release_memory()
            self._publish_info()

    def _forget_job(self, conn: Connection) -> None:
        active = self.jobs.pop(conn, None)
        if active is not None:
            self.last_used = time.monotonic()
            if active.stream is not None:
                active.stream.close()
                active.stream = None
            if active in self.batch:
                self.batch.remove(active)
        self.idle_conns.discard(conn)


def cache_sizes(caches: dict | None) -> dict:
    """The engine's caches without their hit counts, which change with every job."""
    return {name: (cache.get("entries"), cache.get("bytes")) for name, cache in (caches or {}).items()}


def run(slot: int, settings: Settings, run_dir: str, device: str, lifeline: Connection) -> None:
    """Spawn target: the whole life of one model-worker process."""
    model = settings.slot_models[slot][0] if slot < len(settings.slot_models) else settings.model
    _set_title(f"{PROCESS_TITLE} [slot {slot} {model} {device}]")
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format=f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # Ctrl-C reaches the whole group; the master decides
    worker = ModelWorker(slot, settings, run_dir, device, lifeline)
    signal.signal(signal.SIGTERM, worker.stop)
    random.seed()
    sys.exit(worker.run())


def _set_title(title: str) -> None:
    try:
        import setproctitle
        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - setproctitle is a dependency; ps shows python then
        pass
