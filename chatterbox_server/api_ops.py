"""Operations endpoints shared by both families: health, memory."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from chatterbox_server.services import Services, services
from workers.board import WorkerState

bp = Blueprint("ops", __name__)


def health_report(svc: Services) -> dict[str, Any]:
    views = svc.pool.slots()
    ready = [v for v in views if v.state == WorkerState.READY]
    alive = [v for v in views if v.state in (WorkerState.READY, WorkerState.STARTING)]
    info = svc.engine_info()
    in_flight = sum(v.active for v in ready)
    busy = sum(1 for v in ready if v.active > 0)
    supervisor_alive = svc.pool.supervisor_alive()
    is_ready = bool(ready) and supervisor_alive
    status = "ok" if is_ready else ("loading" if alive and supervisor_alive else "unavailable")
    return {
        "status": status,
        "ready": is_ready,
        "engine": info.engine if info else svc.settings.engine,
        "model": info.model if info else None,
        "device": info.device if info else None,
        "sample_rate": info.sample_rate if info else None,
        "workers": {
            "total": len(views), "alive": len(alive), "ready": len(ready), "busy": busy,
            "supervisor_alive": supervisor_alive,
            "slots": [{"slot": v.slot, "pid": v.pid, "state": v.state.name.lower(), "active_jobs": v.active,
                       "jobs_done": v.jobs_done, "jobs_failed": v.jobs_failed, "restarts": v.restarts,
                       "last_error": v.last_error or None} for v in views],
        },
        "jobs_in_flight": in_flight,
        "queue_depth": max(in_flight - busy, 0),
    }


@bp.get("/health")
def health() -> tuple[Response, int]:
    report = health_report(services())
    return jsonify(report), 200 if report["ready"] else 503


# /memory and its actions live in api/memory.py
