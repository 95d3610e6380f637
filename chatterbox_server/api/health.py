"""Operations endpoints shared by both families: health, memory."""
from __future__ import annotations

import time
from typing import Any

import gevent
from flask import Blueprint, Response, jsonify

from chatterbox_server.api.language_notes import language_extras_availability
from chatterbox_server.api.model_states import model_entries
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.asr_availability import DEFAULT_MODEL, engine_availability, whisper_availability
from chatterbox_server.runtime.asr_client import AsrClient
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from workers.engines.base import EngineInfo
from workers.ipc.board import TAKES_JOBS, SlotView, WorkerState

bp = Blueprint("ops", __name__)


def health_report(svc: Services, detailed: bool | None = None) -> dict[str, Any]:
    """The health report; PIDs and last errors only for an admin caller (see guards.admin_caller)."""
    detailed = guards.admin_caller() if detailed is None else detailed
    views = svc.pool.slots()
    ready = [v for v in views if v.state == WorkerState.READY]
    alive = [v for v in views if v.state in (*TAKES_JOBS, WorkerState.STARTING)]
    info = svc.engine_info()
    in_flight = sum(v.active for v in views if v.state in TAKES_JOBS)
    busy = sum(1 for v in ready if v.active > 0)
    supervisor_alive = svc.pool.supervisor_alive()
    models = {entry["id"]: _model_health(entry) for entry in model_entries(svc, detailed)}
    # ready: the preloaded models serve, and every model can take a request (loaded, or able to load)
    preloaded_ready = all(entry["state"] == "loaded" or entry["loads"] > 0 for entry in models.values()
                          if entry["preload"])      # once loaded, an idle unload leaves it ready
    takers = [v for v in views if v.state in TAKES_JOBS]
    is_ready = bool(takers) and preloaded_ready and supervisor_alive
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
        "jobs_parked": sum(parked_jobs(v) for v in ready),
        "optional": optional_capabilities(svc, info, detailed),
        "models": models,
    }


def _model_health(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("state", "default", "preload", "engine", "device", "active_jobs", "error")
    workers = entry["workers"]
    return {**{key: entry.get(key) for key in keys if key in entry},
            "workers": {"total": len(workers), "loaded": sum(1 for w in workers if w["loaded"])},
            "weight_mb": entry["memory"]["weight_mb"], "loads": entry["loads"]}


_WHISPER_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}
WHISPER_STATUS_TTL = 10.0        # seconds a front worker reuses the speech-recognition process's answer
WHISPER_STATUS_TIMEOUT = 0.5


def optional_capabilities(svc: Services, info: EngineInfo | None, detailed: bool) -> dict[str, Any]:
    """Which optional parts are off and why; `reason` (paths, error texts) for trusted callers only."""
    capabilities = {"chatterbox_engine": engine_availability(info.engine if info else None, svc.settings.engine,
                                                             info.fallback_reason if info else None),
                    "whisper": whisper_status(svc.pool.run_dir),
                    "language_extras": language_extras_availability(info)}
    capabilities["database"] = services().database.availability()
    if not detailed:
        capabilities = {name: {k: v for k, v in entry.items() if k != "reason"} for name, entry in capabilities.items()}
    return capabilities


def whisper_status(run_dir: str) -> dict[str, Any]:
    cached = _WHISPER_CACHE.get(run_dir)
    if cached and time.monotonic() - cached[0] < WHISPER_STATUS_TTL:
        return cached[1]
    asr = AsrClient(run_dir)
    try:
        asr.open()
        report = whisper_availability(asr.status(DEFAULT_MODEL, WHISPER_STATUS_TIMEOUT))
    except (ApiError, OSError, EOFError, gevent.Timeout) as exc:
        why = exc.message if isinstance(exc, ApiError) else (f"no answer in {WHISPER_STATUS_TIMEOUT} s"
                                                             if isinstance(exc, gevent.Timeout) else str(exc))
        report = whisper_availability(None, why)
    finally:
        asr.close()
    _WHISPER_CACHE[run_dir] = (time.monotonic(), report)
    return report


def _slot(view: SlotView, detailed: bool) -> dict[str, Any]:
    """`last_error` keeps why the slot's worker was last replaced (crashed, hung, broken engine)."""
    running = view.state in (*TAKES_JOBS, WorkerState.STARTING)
    entry = {"slot": view.slot, "pid": view.pid, "state": view.state.name.lower(), "active_jobs": view.active,
             "jobs_done": view.jobs_done, "jobs_failed": view.jobs_failed, "restarts": view.restarts,
             "engine_failures_in_a_row": view.engine_failures,
             "heartbeat_age_seconds": round(max(0.0, time.time() - view.heartbeat), 1) if running else None,
             "queued_seconds": round(view.queued_seconds, 1), "last_error": view.last_error or None}
    entry["parked_jobs"] = parked_jobs(view)
    if not detailed:
        del entry["pid"], entry["last_error"]
    return entry


def parked_jobs(view: SlotView) -> int:
    """Jobs whose client reads no audio: held by the worker, not counted in active_jobs."""
    return int(view.info.get("outbox", {}).get("parked_jobs", 0))


@bp.get("/health")
def health() -> tuple[Response, int]:
    report = health_report(services())
    return jsonify(report), 200 if report["ready"] else 503


# /memory and its actions live in api/openai/memory.py
