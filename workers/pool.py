"""Starting and stopping the model pool from the process that owns it (the gunicorn master).

This side never imports an engine runtime: it creates the run directory and the board, spawns
the supervisor, and keeps one end of the supervisor's lifeline. A watchdog thread starts a new
supervisor if the old one dies; it only ever waits on a sentinel or spawns (fork + exec), so
gunicorn forking front workers meanwhile copies no lock it could hold.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait

from chatterbox_server.settings import Settings
from workers import supervisor
from workers.asr_worker import AsrProcess
from workers.ipc.board import Board, WorkerState

log = logging.getLogger("chatterbox.pool")
RUN_DIR_ENV = "CHATTERBOX_POOL_DIR"   # where front workers find the pool; set by the pool's owner
RESPAWN_PAUSE_SECONDS = 1.0


class ModelPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.owns_run_dir = not settings.run_dir
        self.run_dir = settings.run_dir
        self.process: multiprocessing.process.BaseProcess | None = None
        self.lifeline = None
        self.stopping = threading.Event()
        self.watchdog: threading.Thread | None = None
        self.asr: AsrProcess | None = None

    def start(self) -> None:
        if self.owns_run_dir:
            self.run_dir = tempfile.mkdtemp(prefix="chatterbox-pool-")
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        os.chmod(self.run_dir, 0o700)        # the sockets accept jobs: only our user may connect
        shutil.rmtree(os.path.join(self.run_dir, "progress"), ignore_errors=True)   # a previous run's
        slots = len(supervisor.worker_devices(self.settings))
        Board(os.path.join(self.run_dir, "board"), slots, create=True).close()
        self._spawn_supervisor()
        self.asr = AsrProcess(self.settings, self.run_dir)      # Whisper for /api/v1/tts candidates
        self.asr.start()
        os.environ[RUN_DIR_ENV] = self.run_dir
        self.watchdog = threading.Thread(target=self._watch_supervisor, name="pool-watchdog", daemon=True)
        self.watchdog.start()
        log.info("model pool: %d worker(s), engine %s, state in %s", slots, self.settings.engine, self.run_dir)

    def when_serving(self, callback: Callable[[dict], None], timeout: float = 3600.0) -> None:
        """Call `callback(engine info)` once, from a thread, when the first model worker is ready."""
        def wait_for_a_worker() -> None:
            board = Board.open(os.path.join(self.run_dir, "board"))
            try:
                deadline = time.monotonic() + timeout
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    ready = [view for view in board.views() if view.state == WorkerState.READY and view.info]
                    if ready:
                        callback(ready[0].info)
                        return
                    time.sleep(0.5)      # not stopping.wait: front workers fork meanwhile (its lock)
            finally:
                board.close()
        threading.Thread(target=wait_for_a_worker, name="pool-ready", daemon=True).start()

    def _spawn_supervisor(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=supervisor.run, name="pool-supervisor",
                                  args=(self.settings, self.run_dir, theirs))
        process.start()
        theirs.close()
        self.process, self.lifeline = process, ours

    def _watch_supervisor(self) -> None:
        while not self.stopping.is_set():
            process, lifeline = self.process, self.lifeline
            if not wait([process.sentinel], 1.0) or self.stopping.is_set():
                continue
            log.error("the pool supervisor (pid %d) died; starting a new one with new model workers", process.pid)
            lifeline.close()
            self._spawn_supervisor()
            self.stopping.wait(RESPAWN_PAUSE_SECONDS)      # a supervisor that dies at once is not restarted in a loop

    def forget_in_child(self) -> None:
        """In a process forked from the owner: drop the owner's handles so they do not keep it alive."""
        if self.lifeline is not None:
            self.lifeline.close()
            self.lifeline = None
        if self.asr is not None:
            self.asr.forget_in_child()
        multiprocessing.process._children.clear()   # noqa: SLF001 - else exit tries to join them

    def stop(self, timeout: float | None = None) -> None:
        self.stopping.set()
        if self.watchdog is not None:
            self.watchdog.join(5)
        if self.asr is not None:
            self.asr.stop()
        if self.process is None:
            return
        try:
            self.lifeline.send("stop")
        except OSError:
            pass
        # The sentinel, not join(): the gunicorn master reaps every child itself, after which
        # Process.is_alive() can no longer tell (its SIGCHLD handler calls waitpid(-1)).
        limit = timeout if timeout is not None else self.settings.graceful_timeout + 10
        if not wait([self.process.sentinel], limit):
            log.warning("pool supervisor did not stop in time; killing it")
            self.process.kill()
            wait([self.process.sentinel], 5)
        self.lifeline.close()
        self.process = None
        if self.owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
