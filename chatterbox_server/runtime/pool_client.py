"""The front worker's side of the model pool: pick a worker, send a job, receive its audio.

Each job gets its own Unix-socket connection to one model worker, spoken over
``multiprocessing.connection`` framing. The file descriptor is non-blocking and every wait goes
through the gevent hub, so a slow model worker never freezes the other greenlets (a blocking
``recv`` would: gevent #936, gunicorn #1311). A reader greenlet drains the connection into a
queue as soon as data arrives, so the model worker never blocks on a slow HTTP client either;
how far it may run ahead is bounded by credits instead.

Waiting for audio, a job fails with 504 when its model worker's heartbeat on the board has stood
still for the chunk timeout (the worker is hung), never merely because other jobs took long turns;
the first audio also has a wall-clock limit, the queue timeout.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket as stdlib_socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import gevent
import gevent.queue
from gevent import socket as gsocket

from chatterbox_server.runtime.admission import Limits, WorkerLoad, admissible, refusal
from workers.engines.base import EngineInfo
from workers.ipc.board import TAKES_JOBS, Board, SlotView, Speed, WorkerState, pid_alive
from workers.ipc.protocol import (
    Accepted,
    AudioChunk,
    ConvertJob,
    Credit,
    JobDone,
    JobFailed,
    ModelAction,
    ModelLoading,
    ModelReport,
    SpeechJob,
)
from workers.liveness import Silence, check_interval
from workers.model_worker import socket_path
from workers.scheduler.estimate import in_flight_seconds

log = logging.getLogger("chatterbox.pool")
CONNECT_TIMEOUT = 5.0


class PoolError(Exception):
    """A job could not be run; `status` is the HTTP status to answer with if nothing was sent yet."""
    status = 503
    code = "model_unavailable"
    retry_after: int | None = None

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


class PoolBusy(PoolError):
    """The pool is healthy but full (runtime/admission.py): 429, shaped like OpenAI's rate-limit error."""
    status = 429
    code = "rate_limit_exceeded"


class JobTimeout(PoolError):
    status = 504
    code = "timeout"


class CooperativeConnection(Connection):
    """A Connection whose reads and writes wait on the gevent hub instead of blocking the process."""

    def _send(self, buf: bytes, write=os.write) -> None:  # noqa: ANN001 - mirrors Connection._send
        view = memoryview(buf)
        while view:
            try:
                written = write(self._handle, view)
            except BlockingIOError:
                gsocket.wait_write(self._handle)
                continue
            view = view[written:]

    def _recv(self, size: int, read=os.read) -> io.BytesIO:  # noqa: ANN001 - mirrors Connection._recv
        buf = io.BytesIO()
        remaining = size
        while remaining > 0:
            try:
                chunk = read(self._handle, remaining)
            except BlockingIOError:
                gsocket.wait_read(self._handle)
                continue
            if not chunk:
                if remaining == size:
                    raise EOFError
                raise OSError("got end of file during message")
            buf.write(chunk)
            remaining -= len(chunk)
        return buf


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> CooperativeConnection:
    sock = gsocket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    fd = sock.detach()
    os.set_blocking(fd, False)
    return CooperativeConnection(fd)


_END = object()


class JobHandle:
    """One running job: iterate `chunks()` for its audio; `close()` cancels it."""

    def __init__(self, conn: CooperativeConnection, slot: int, queue_timeout: float, chunk_timeout: float,
                 on_accepted: Callable[[], None] = lambda: None, *, heartbeat: Callable[[], float]):
        """`heartbeat` reads the slot's beat on the board; 0 for either timeout: no limit."""
        self.conn = conn
        self._on_accepted = on_accepted
        self.slot = slot
        self.queue_timeout = queue_timeout
        self.chunk_timeout = chunk_timeout
        self.heartbeat = heartbeat
        now = time.monotonic()
        self.first_audio_deadline = now + queue_timeout if queue_timeout > 0 else float("inf")
        self.silence = Silence(heartbeat(), now)
        self.messages: gevent.queue.Queue = gevent.queue.Queue()
        self.result: JobDone | None = None
        self.jobs_ahead = 0
        self.closed = False
        self.cancel_reason: str | None = None
        self.loading_model: str | None = None      # the job waits for this model to load
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        try:
            while True:
                message = self.conn.recv()
                if isinstance(message, Accepted):
                    self._accepted()
                self.messages.put(message)
                if isinstance(message, (JobDone, JobFailed)):
                    return message      # the reader's value, for whoever links to it
        except (EOFError, OSError):
            self.messages.put(_END)

    def _accepted(self) -> None:
        on_accepted, self._on_accepted = self._on_accepted, lambda: None
        on_accepted()

    def cancel(self, reason: str) -> None:
        """Stop the job from another greenlet (a client that went away)."""
        self.cancel_reason = reason
        self.messages.put(_END)
        self.close()

    def _next(self, first_audio: bool, peek: bool = False) -> object:
        """The next message (`peek`: left in the queue); JobTimeout when the worker stays silent or the
        first audio is too late. The first-audio limit does not run while the model loads."""
        interval = check_interval(self.chunk_timeout)
        while True:
            deadline = self.first_audio_deadline if first_audio and self.loading_model is None else float("inf")
            take = self.messages.peek if peek else self.messages.get
            try:
                return take(timeout=max(0.0, min(interval, deadline - time.monotonic())))
            except gevent.queue.Empty:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise JobTimeout(f"no audio from the model worker within {self.queue_timeout:.0f} s")
            silent = self.silence.observe(self.heartbeat(), now)
            if 0 < self.chunk_timeout <= silent:
                raise JobTimeout(f"the model worker made no progress for {silent:.0f} s")

    def _loading(self, message: ModelLoading) -> None:
        if message.done:
            self.loading_model = None
            if self.queue_timeout > 0:
                self.first_audio_deadline = time.monotonic() + self.queue_timeout
        else:
            self.loading_model = message.model

    def model_loading(self) -> bool:
        """Wait until the job's audio begins or its model starts loading; True for the load (whose
        client may be told so before the audio). Leaves the audio, or the failure, to `chunks`."""
        while True:
            message = self._next(first_audio=True, peek=True)
            if isinstance(message, Accepted):
                self.messages.get()
                self.jobs_ahead = message.jobs_ahead
                continue
            if isinstance(message, ModelLoading):
                self.messages.get()
                self._loading(message)
                if not message.done:
                    return True
                continue
            return False

    def chunks(self) -> Iterator[AudioChunk]:
        """Audio chunks in order. Raises PoolError if the job fails; sets `result` when it completes."""
        received = 0
        while True:
            message = self._next(first_audio=received == 0)
            if isinstance(message, Accepted):
                self.jobs_ahead = message.jobs_ahead
                continue
            if isinstance(message, ModelLoading):
                self._loading(message)
                continue
            if isinstance(message, AudioChunk):
                received += 1
                yield message
                self._credit()
                continue
            if isinstance(message, JobDone):
                self.result = message
                return
            if isinstance(message, JobFailed) and message.kind == "model":
                raise PoolError(message.message, status=message.status, code="model_unavailable", retry_after=30)
            if isinstance(message, JobFailed):
                # 503: the job's model could not be loaded (its load failed, or the memory budget can never
                # hold it), a message worded for the client; other 5xx: an engine failure, whose text is kept back
                code = "invalid_request" if message.status < 500 else \
                    "model_unavailable" if message.status == 503 else "synthesis_failed"
                raise PoolError(message.message, status=message.status, code=code)
            if self.cancel_reason:
                raise PoolError(f"cancelled: {self.cancel_reason}", status=499, code="cancelled")
            raise PoolError("the model worker stopped while synthesizing this request", status=503,
                            code="model_worker_died")

    def _credit(self) -> None:
        if not self.closed:
            try:
                self.conn.send(Credit(1))
            except OSError:
                pass    # the worker is gone; the reader reports it

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._accepted()
        if self.reader is not gevent.getcurrent():
            # dead before the descriptor closes: a reader still waiting on it would leave libev a
            # watcher on a closed (or reused) descriptor, which aborts the process (EBADF in epoll_ctl)
            self.reader.kill(block=True)
        self.conn.close()


class PoolClient:
    def __init__(self, run_dir: str, max_queued_jobs: int, queue_timeout: float, chunk_timeout: float,
                 max_queued_seconds: float = 0.0, slot_models: tuple[str, ...] = ()):
        """`slot_models`: the served model of each slot (Settings.slot_models); empty: one model."""
        self.run_dir = run_dir
        self.board = Board.open(os.path.join(run_dir, "board"))
        self.max_queued_jobs = max_queued_jobs
        self.limits = Limits.of(max_queued_jobs, max_queued_seconds, queue_timeout)
        self.queue_timeout = queue_timeout
        self.chunk_timeout = chunk_timeout
        self.slot_models = slot_models or ("",) * self.board.slots
        self.connecting: Counter[int] = Counter()     # jobs sent by this front worker, not yet counted
        self.connecting_seconds: Counter[int] = Counter()     # what they add to a newcomer's wait

    # -- the served models ---------------------------------------------------------------------------
    @property
    def models(self) -> tuple[str, ...]:
        """The served models, the default first."""
        return tuple(dict.fromkeys(self.slot_models))

    @property
    def default_model(self) -> str:
        return self.slot_models[0]

    def model_of(self, slot: int) -> str:
        return self.slot_models[slot] if slot < len(self.slot_models) else self.default_model

    def slots(self, model: str | None = None) -> list[SlotView]:
        """Every slot's view, or those of one model's workers."""
        views = self.board.views()
        return views if model is None else [view for view in views if self.model_of(view.slot) == model]

    def ready_slots(self, model: str | None = None) -> list[SlotView]:
        return [view for view in self.slots(model) if view.state == WorkerState.READY]

    def engine_info(self, model: str | None = None) -> EngineInfo | None:
        """What the model's engine does (a loaded worker's info, else what an unloaded one described);
        None while no worker of it has said."""
        views = self.slots(model or self.default_model)
        # a failed model keeps the description its workers gave, so /v1/models still shows what it is
        ordered = [v for v in views if v.state == WorkerState.READY] + [v for v in views if v.state in TAKES_JOBS]
        ordered += views
        for view in ordered:
            if view.info:
                return engine_info_from_dict(view.info)
        return None

    def supervisor_alive(self) -> bool:
        pid, _ = self.board.supervisor()
        return pid_alive(pid)

    def _takers(self, model: str) -> dict[int, SlotView]:
        """The model's workers a job may go to: those with the model loaded, else those that will load it."""
        views = self.slots(model)
        # the state alone decides: a worker publishes its description before it says UNLOADED, and an
        # info read that a busy writer kept from settling must not turn a ready worker away
        for states in ((WorkerState.READY,), (WorkerState.LOADING,), (WorkerState.UNLOADED,)):
            found = {v.slot: v for v in views if v.state in states}
            if found:
                return found
        failed = [v.last_error for v in views if v.last_error]
        if failed:
            raise PoolError(f"model {model} is not available: {failed[0]}", retry_after=5)
        raise PoolError(f"no model worker of model {model} is ready yet; try again shortly", retry_after=5)

    def admit(self, check_wait: bool = True, model: str | None = None) -> list[SlotView]:
        """The model's workers that may take a new job, least loaded first (runtime/admission.py).
        Raises PoolError (503) when none is ready, PoolBusy (429) when every ready one is full
        (`check_wait=False`: full only by the job-count cap). Each model is admitted on its own workers'
        load alone, so a flood on one model never refuses another."""
        ready = self._takers(model or self.default_model)
        loads = [WorkerLoad(v.slot, v.active + self.connecting[v.slot],
                            v.queued_seconds + self.connecting_seconds[v.slot]) for v in ready.values()]
        slots = admissible(loads, self.limits, check_wait)
        if not slots:
            refused = refusal(loads, self.limits)
            raise PoolBusy(refused.message, retry_after=refused.retry_after)
        return [ready[slot] for slot in slots]

    def speed(self, model: str | None = None) -> Speed:
        """How fast the model's ready workers synthesize (their published admission costs) and the
        shortest queue among them: what a whole-file request's time is estimated from (synthesis/budget.py)."""
        ready = self.ready_slots(model or self.default_model)
        costs = [(view.info.get("admission") or {}) for view in ready]
        per_unit = [cost.get("per_unit") or {} for cost in costs]
        per_char = max((unit.get("speech") or 0.0 for unit in per_unit), default=0.0)
        per_second = max((unit.get("convert") or 0.0 for unit in per_unit), default=0.0)
        rows = sum(int(cost.get("rows") or 1) for cost in costs)
        queued = min((view.queued_seconds + self.connecting_seconds[view.slot] for view in ready), default=0.0)
        info = ready[0].info if ready else {}
        return Speed(per_char or None, per_second or None, rows, queued, str(info.get("engine") or ""),
                     str(info.get("device") or ""))

    def submit(self, job: SpeechJob | ConvertJob, admitted: bool = False) -> JobHandle:
        """Send the job to the least-loaded worker of its model with room; raises as `admit` does.
        `admitted`: a further job of a request already let in (`admit`), held only to the job-count cap."""
        background = bool(getattr(job, "background", False))     # gives its rows up: lengthens no wait
        for view in self.admit(check_wait=not (admitted or background), model=job.model or None):
            admission = view.info.get("admission") or {}
            seconds = in_flight_seconds(job, admission.get("per_unit") or {}, admission.get("rows") or 1)
            self._count(view.slot, 1, seconds)
            try:
                conn = connect(socket_path(self.run_dir, view.slot))
                conn.send(job)
            except (OSError, EOFError) as exc:
                self._count(view.slot, -1, -seconds)
                log.warning("model worker %d refused a job (%s); trying the next one", view.slot, exc)
                continue
            # until the worker counts the job itself on the board, this front worker counts it
            return JobHandle(conn, view.slot, self.queue_timeout, self.chunk_timeout,
                             on_accepted=lambda slot=view.slot, s=seconds: self._count(slot, -1, -s),
                             heartbeat=lambda slot=view.slot: self.board.beat_of(slot))
        raise PoolError("no model worker accepted the job; try again shortly")

    def model_action(self, model: str, action: str, timeout: float = 10.0) -> list[ModelReport]:
        """Ask every running worker of the model to `load` or `unload` it; their answers."""
        def ask(slot: int) -> ModelReport:
            try:
                with gevent.Timeout(timeout):
                    conn = connect(socket_path(self.run_dir, slot))
                    try:
                        conn.send(ModelAction(action))
                        report = conn.recv()
                    finally:
                        conn.close()
            except (OSError, EOFError, gevent.Timeout) as exc:
                return ModelReport("failed", f"model worker {slot} did not answer: {type(exc).__name__}")
            return report if isinstance(report, ModelReport) else ModelReport("failed", "unexpected answer")
        slots = [view.slot for view in self.slots(model) if view.state in TAKES_JOBS]
        greenlets = [gevent.spawn(ask, slot) for slot in slots]
        gevent.joinall(greenlets)
        return [greenlet.value for greenlet in greenlets]

    def _count(self, slot: int, jobs: int, seconds: float) -> None:
        self.connecting[slot] += jobs
        left = self.connecting_seconds[slot] + seconds
        self.connecting_seconds[slot] = left if self.connecting[slot] > 0 and left > 0 else 0.0


def engine_info_from_dict(info: dict) -> EngineInfo:
    names = {field.name for field in dataclasses.fields(EngineInfo)}
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in info.items() if key in names}
    return EngineInfo(**values)
