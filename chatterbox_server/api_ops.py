"""Operations endpoints shared by both families: health, memory."""
from __future__ import annotations

import os
from typing import Any

import psutil
from flask import Blueprint, Response, jsonify

from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from workers.board import SlotView, WorkerState

bp = Blueprint("ops", __name__)


def health_report(svc: Services, detailed: bool | None = None) -> dict[str, Any]:
    """The health report; PIDs and last errors only for a trusted caller (see guards.trusted_caller)."""
    detailed = guards.trusted_caller() if detailed is None else detailed
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
            "slots": [_slot(v, detailed) for v in views],
        },
        "jobs_in_flight": in_flight,
        "queue_depth": max(in_flight - busy, 0),
    }


def _slot(view: SlotView, detailed: bool) -> dict[str, Any]:
    entry = {"slot": view.slot, "pid": view.pid, "state": view.state.name.lower(), "active_jobs": view.active,
             "jobs_done": view.jobs_done, "jobs_failed": view.jobs_failed, "restarts": view.restarts,
             "last_error": view.last_error or None}
    if not detailed:
        del entry["pid"], entry["last_error"]
    return entry


@bp.get("/health")
def health() -> tuple[Response, int]:
    report = health_report(services())
    return jsonify(report), 200 if report["ready"] else 503


@bp.get("/memory")
def memory() -> Response:
    if not guards.trusted_caller():      # PIDs and the machine's memory: like /health's details
        raise ApiError(403, "/memory is for callers with an API key (without keys: callers on this machine)",
                       code="not_allowed")
    svc = services()
    workers = []
    for view in svc.pool.slots():
        entry: dict[str, Any] = {"slot": view.slot, "pid": view.pid, "state": view.state.name.lower()}
        try:
            entry["rss_bytes"] = psutil.Process(view.pid).memory_info().rss if view.pid > 0 else None
        except psutil.Error:
            entry["rss_bytes"] = None
        entry["accelerator"] = view.info.get("memory") if view.info else None
        workers.append(entry)
    front = psutil.Process(os.getpid()).memory_info()
    return jsonify({"memory_info": {
        "front_worker": {"pid": os.getpid(), "rss_bytes": front.rss, "vms_bytes": front.vms},
        "model_workers": workers,
        "system": dict(psutil.virtual_memory()._asdict()),
    }})
