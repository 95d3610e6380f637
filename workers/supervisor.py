"""The pool supervisor: starts the model workers, notices their death and replaces them.

A READY worker whose heartbeat on the board stands still for CHATTERBOX_CHUNK_TIMEOUT (a hung CUDA
kernel, a SIGSTOP) is killed with SIGKILL and replaced like one that died; a worker that gives up
on a broken engine exits with model_worker.EXIT_ENGINE_BROKEN and is replaced the same way. Why a
slot's worker was last replaced stays in its board error across the restart, for /health.

It runs as its own spawned process (title ``chatterbox-pool-supervisor``) because the gunicorn
master's loop has no hook for this work and reaps every child it sees. Model workers are the
supervisor's children, so their exit is seen here through their sentinels; the master only keeps
a thread that replaces the supervisor itself if it dies (workers/pool.py). The supervisor exits,
stopping its workers, when the process that started it closes the lifeline or says "stop".
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from chatterbox_server.settings import Settings
from workers import model_worker
from workers.ipc.board import Board, WorkerState
from workers.liveness import Silence, hang_reason
from workers.scheduler import residency
from workers.scheduler.residency import Resident

log = logging.getLogger("chatterbox.supervisor")
PROCESS_TITLE = "chatterbox-pool-supervisor"
LOAD_FAILED = "could not load its engine"     # how a slot's error begins after a failed load (/v1/models reads it)
HEALTHY_AFTER_SECONDS = 60.0      # a worker that lived this long resets the crash back-off
MAX_BACKOFF_SECONDS = 30.0


def worker_devices(settings: Settings) -> list[str]:
    """One entry per model-worker slot. `auto` is resolved inside each worker (torch lives there)."""
    return [device for _, device in settings.slot_models]


@dataclass
class Slot:
    index: int
    device: str
    process: multiprocessing.process.BaseProcess | None = None
    lifeline: Connection | None = None
    started: float = 0.0
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float | None = None
    silence: Silence | None = None      # measured while the worker is READY
    kill_reason: str | None = None      # set when the supervisor killed it (hung)
    exit_reason: str = ""               # why the previous worker went, carried on the board
    resident: Resident | None = None     # its model's weights, as the memory budget sees them
    jobs_done: int = 0                   # the board's count when last looked at (a finished job is a use)


class Supervisor:
    def __init__(self, settings: Settings, run_dir: str, lifeline: Connection) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.lifeline = lifeline
        self.board = Board.open(os.path.join(run_dir, "board"))
        self.context = multiprocessing.get_context("spawn")
        self.slots = [Slot(i, device, resident=Resident(i, model))
                      for i, (model, device) in enumerate(settings.slot_models)]
        self.preload = set(settings.preload_names)
        self.budget = settings.memory_budget_bytes
        self.measured: dict[str, int] = {}      # bytes each model's weights took at its last load
        self.stopping = False

    def run(self) -> None:
        for slot in self.slots:
            self._start(slot)
        while not self.stopping:
            self.board.supervisor_beat(os.getpid())
            self._watch(timeout=1.0)
            self._kill_hung()
            self._restart_due()
            self._note_use()
            self._apply(residency.plan([slot.resident for slot in self.slots], self.budget, self.measured))
        self._stop_all()

    def _start(self, slot: Slot) -> None:
        parent_end, child_end = self.context.Pipe()
        process = self.context.Process(
            target=model_worker.run, name=f"model-worker-{slot.index}",
            args=(slot.index, self.settings, self.run_dir, slot.device, child_end))
        process.start()
        child_end.close()
        slot.process, slot.lifeline, slot.started, slot.restart_at = process, parent_end, time.monotonic(), None
        slot.silence, slot.kill_reason = None, None
        self.board.reset(slot.index, process.pid, slot.restarts, error=slot.exit_reason)
        slot.resident = Resident(slot.index, slot.resident.model, last_used=time.monotonic())
        log.info("model worker %d started (pid %d, model %s, device %s)", slot.index, process.pid,
                 slot.resident.model, slot.device)
        if slot.resident.model in self.preload:
            self._send(slot, ("preload",))

    def _watch(self, timeout: float) -> None:
        sentinels = {slot.process.sentinel: slot for slot in self.slots if slot.process is not None}
        talking = {slot.lifeline: slot for slot in self.slots if slot.lifeline is not None}
        for ready in wait([self.lifeline, *sentinels, *talking], timeout):
            if ready is self.lifeline:
                self._read_lifeline()
            elif ready in talking:
                if talking[ready].lifeline is ready:        # not reaped earlier in this round
                    self._hear(talking[ready])
            elif sentinels[ready].process is not None:
                self._reap(sentinels[ready])

    # -- the memory budget: loads, unloads --------------------------------------------------------
    def _hear(self, slot: Slot) -> None:
        """A message from a model worker about its model (model_worker.ModelWorker.want_load etc.)."""
        try:
            message = slot.lifeline.recv()
        except (EOFError, OSError):      # dying: its sentinel follows
            if slot.process is not None:
                self._reap(slot)
            return
        resident, kind = slot.resident, message[0]
        if kind == "want-load":
            resident.wants_since = resident.wants_since or time.monotonic()
            resident.expected = int(message[1] or 0)
        elif kind == "loaded":
            resident.loaded, resident.loaded_bytes, resident.loading_bytes = True, int(message[1]), 0
            resident.wants_since, resident.last_used = None, time.monotonic()
            self.measured[resident.model] = resident.loaded_bytes
        elif kind == "unloaded":
            resident.loaded, resident.loaded_bytes, resident.unloading = False, 0, False
            log.info("model worker %d unloaded %s (%s)", slot.index, resident.model, message[1])
        elif kind == "unload-refused":
            resident.unloading = False
        elif kind == "load-failed":
            resident.loading_bytes, resident.wants_since = 0, None

    def _note_use(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None:
                continue
            view = self.board.view(slot.index)
            slot.resident.busy = view.active > 0
            if view.active > 0 or view.jobs_done != slot.jobs_done:
                slot.resident.last_used, slot.jobs_done = now, view.jobs_done

    def _apply(self, plan: residency.Plan) -> None:
        for index in plan.grant:
            slot = self.slots[index]
            slot.resident.loading_bytes = max(residency.size_of(slot.resident, self.measured), 1)
            slot.resident.wants_since = None
            self._send(slot, ("load",))
        for index in plan.evict:
            slot = self.slots[index]
            log.info("memory budget: unloading %s from model worker %d to make room", slot.resident.model, index)
            slot.resident.unloading = True
            self._send(slot, ("unload", "the memory budget needs its room"))
        for index, message in plan.refuse:
            slot = self.slots[index]
            log.error("memory budget: %s", message)
            slot.resident.wants_since = None
            self._send(slot, ("refuse", message))

    def _send(self, slot: Slot, message: object) -> None:
        try:
            if slot.lifeline is not None:
                slot.lifeline.send(message)
        except OSError:
            pass        # dying: its sentinel follows

    def _read_lifeline(self) -> None:
        try:
            message = self.lifeline.recv()
        except (EOFError, OSError):
            message = "stop"
        if message == "stop":
            self.stopping = True

    def _kill_hung(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None or slot.kill_reason is not None:
                continue
            view = self.board.view(slot.index)
            if view.state != WorkerState.READY:
                slot.silence = None          # loading and warming up do not beat
                continue
            if slot.silence is None:
                slot.silence = Silence(view.heartbeat, now)
            reason = hang_reason(slot.silence.observe(view.heartbeat, now), self.settings.chunk_timeout, view.active)
            if reason is None:
                continue
            log.error("model worker %d (pid %d) is %s; killing it", slot.index, slot.process.pid, reason)
            slot.kill_reason = reason
            self.board.set_state(slot.index, WorkerState.FAILED, reason)    # no new job goes there meanwhile
            slot.process.kill()     # SIGKILL works on a stopped process too; the sentinel brings _reap

    def _reap(self, slot: Slot) -> None:
        process = slot.process
        process.join(timeout=5)
        slot.lifeline.close()
        slot.process = slot.lifeline = None
        slot.resident = Resident(slot.index, slot.resident.model)     # its memory went with it
        lived = time.monotonic() - slot.started
        slot.crashes_in_a_row = 0 if lived > HEALTHY_AFTER_SECONDS else slot.crashes_in_a_row + 1
        delay = 0.0 if slot.crashes_in_a_row <= 1 else min(2.0 ** (slot.crashes_in_a_row - 1), MAX_BACKOFF_SECONDS)
        if slot.kill_reason is not None:
            reason = slot.exit_reason = slot.kill_reason
        else:
            reason = _describe_exit(process.exitcode)
            previous = self.board.view(slot.index).last_error
            if previous and previous != slot.exit_reason:       # the worker's own last words
                reason = f"{reason}: {previous}"
            slot.exit_reason = reason
        self.board.set_state(slot.index, WorkerState.FAILED, slot.exit_reason)
        log.error("model worker %d (pid %d) %s after %.1f s; restarting in %.0f s", slot.index, process.pid,
                  reason, lived, delay)
        slot.restarts += 1
        slot.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)

    def _stop_all(self) -> None:
        running = [slot for slot in self.slots if slot.process is not None]
        for slot in running:
            try:
                slot.lifeline.send("stop")
            except OSError:
                pass
        deadline = time.monotonic() + self.settings.graceful_timeout
        for slot in running:
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                log.warning("model worker %d did not stop in time; killing it", slot.index)
                slot.process.kill()
                slot.process.join(timeout=5)
            self.board.set_state(slot.index, WorkerState.STOPPED)
        log.info("model pool stopped")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "vanished"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == model_worker.EXIT_LOAD_FAILED:
        return LOAD_FAILED
    if code == model_worker.EXIT_ENGINE_BROKEN:
        return "gave up on its engine"
    return f"exited with code {code}"


def run(settings: Settings, run_dir: str, lifeline: Connection) -> None:
    """Spawn target of the supervisor process."""
    model_worker._set_title(PROCESS_TITLE)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format=f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    supervisor = Supervisor(settings, run_dir, lifeline)
    signal.signal(signal.SIGTERM, lambda *_: setattr(supervisor, "stopping", True))
    supervisor.run()
