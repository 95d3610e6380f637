"""The housekeeping timer of a front worker: a sweep when the app starts, then one every
CHATTERBOX_HOUSEKEEPING_INTERVAL seconds in a greenlet (under gunicorn's gevent worker only)."""
from __future__ import annotations

import logging
import os
import random

from chatterbox_server.runtime import janitor
from chatterbox_server.settings import Settings
from chatterbox_server.store.outputs import OutputStore

log = logging.getLogger("chatterbox.housekeeping")


def run_once(settings: Settings) -> None:
    tmp = os.path.join(settings.data_dir, "tmp")
    try:
        swept = janitor.sweep(tmp)
        store = OutputStore(os.path.join(settings.data_dir, "outputs"), settings.output_retention_seconds,
                            settings.output_max_bytes)
        pruned = store.prune()
    except OSError:
        log.exception("housekeeping of %s failed", settings.data_dir)
        return
    if swept or pruned:
        log.info("housekeeping removed %d stale temporary file(s) and %d output file(s)", len(swept), len(pruned))


def start(settings: Settings) -> None:
    run_once(settings)
    if settings.housekeeping_interval <= 0 or not _gevent_worker():
        return
    import gevent

    from chatterbox_server.runtime.hub import off_hub

    def loop() -> None:
        while True:
            # jitter, so the front workers do not all sweep in the same second
            gevent.sleep(settings.housekeeping_interval * random.uniform(0.9, 1.1))
            off_hub(run_once, settings)
    gevent.spawn(loop)


def _gevent_worker() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")
