"""Stop and reload as a client sees them.

On SIGTERM gunicorn's gevent worker stops accepting connections and gives the requests it has
CHATTERBOX_GRACEFUL_TIMEOUT seconds to finish. A request that still reaches it meanwhile (on a
kept-alive connection, nginx's upstream pool above all) is answered 503 with `Retry-After` and
`Connection: close`, instead of starting a synthesis that the stop would cut.

A reload (SIGHUP) also sends SIGTERM to the old front workers, but new ones are already serving:
there the old worker finishes what it has, answers what still reaches it, and nobody gets a 503.
The master marks a reload in the pool's run directory (gunicorn's on_reload hook) just before it
replaces the workers, which is how an old worker tells the two apart.
"""
from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response

from chatterbox_server.errors import ApiError

RELOAD_MARK = "reloading"
RELOAD_WINDOW_SECONDS = 30.0     # the master sends SIGTERM to the old workers right after the mark
RETRY_AFTER_SECONDS = 5

_worker: Any = None              # this process's gunicorn worker, once post_worker_init ran


def attach(worker: Any) -> None:
    global _worker
    _worker = worker


def mark_reload(run_dir: str) -> None:
    with open(os.path.join(run_dir, RELOAD_MARK), "w") as f:
        f.write(str(time.time()))


def reloading(run_dir: str, now: float | None = None) -> bool:
    try:
        with open(os.path.join(run_dir, RELOAD_MARK)) as f:
            marked = float(f.read() or 0)
    except (OSError, ValueError):
        return False
    return 0 <= (time.time() if now is None else now) - marked <= RELOAD_WINDOW_SECONDS


def worker_exiting() -> bool:
    """True once this front worker was told to exit (a stop or a reload): long-lived sockets wind down."""
    return _worker is not None and not _worker.alive


def stopping(run_dir: str) -> bool:
    """True once this front worker was told to exit, unless a reload replaces it."""
    return _worker is not None and not _worker.alive and not reloading(run_dir)


def init_app(app: Flask, run_dir: str) -> None:
    @app.before_request
    def refuse_while_stopping() -> None:
        if stopping(run_dir):
            raise ApiError(503, "the server is shutting down; retry in a few seconds", code="shutting_down",
                           retry_after=RETRY_AFTER_SECONDS)

    @app.after_request
    def close_while_stopping(response: Response) -> Response:
        if _worker is not None and not _worker.alive:
            response.headers["Connection"] = "close"
        return response
