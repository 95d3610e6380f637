"""What the board says about each served model: its state, workers, device, memory and features,
as /v1/models, /health and /metrics show it."""
from __future__ import annotations

from typing import Any

from chatterbox_server.services import Services
from chatterbox_server.synthesis import routing
from workers.engines.base import EngineInfo
from workers.ipc.board import SlotView, WorkerState
from workers.supervisor import LOAD_FAILED

STATES = ("loaded", "loading", "unloaded", "failed")
def load_failed(view: SlotView) -> bool:
    """The slot's worker was last replaced because its model did not load (workers/supervisor.py)."""
    return view.last_error.startswith(LOAD_FAILED)


def model_state(views: list[SlotView], preloaded: bool) -> str:
    """loaded: a worker serves it; loading: one is loading it; failed: its last load failed and none
    serves it; unloaded: its workers wait for a request (or a load by hand)."""
    states = {view.state for view in views}
    if WorkerState.READY in states:
        return "loaded"
    if WorkerState.LOADING in states or (preloaded and WorkerState.STARTING in states):
        return "loading"
    if views and (all(view.state == WorkerState.FAILED for view in views) or any(load_failed(v) for v in views)):
        return "failed"
    return "unloaded"


def features(info: EngineInfo | None) -> dict[str, Any]:
    if info is None:
        return {}
    return {"tags": list(info.tags), "exaggeration": info.supports_exaggeration,
            "cfg_weight": info.supports_exaggeration, "languages": list(info.languages) or ["en"],
            "voice_conversion": info.supports_voice_conversion, "voice_cloning": info.supports_cloning}


def worker_entry(view: SlotView, detailed: bool) -> dict[str, Any]:
    info = view.info or {}
    memory = info.get("memory") or {}
    entry = {"slot": view.slot, "state": view.state.name.lower(), "device": info.get("device"),
             "loaded": bool(info.get("loaded")) and view.state == WorkerState.READY,
             "weight_bytes": int(info.get("weight_bytes") or 0),
             "accelerator_allocated_bytes": memory.get("allocated_bytes"),
             "active_jobs": view.active, "load_seconds": info.get("load_seconds"), "loads": info.get("loads", 0)}
    if detailed:
        entry["pid"], entry["last_error"] = view.pid, view.last_error or None
    return entry


def model_entry(name: str, views: list[SlotView], info: EngineInfo | None, *, default: bool, preloaded: bool,
                detailed: bool) -> dict[str, Any]:
    """One served model as /v1/models lists it (OpenAI's model object, with our fields after)."""
    state = model_state(views, preloaded)
    workers = [worker_entry(view, detailed) for view in views]
    weight = sum(worker["weight_bytes"] for worker in workers)
    entry: dict[str, Any] = {
        "id": routing.model_id(name), "object": "model", "created": 0, "owned_by": "chatterbox-server",
        "model": name, "state": state, "default": default, "engine": info.engine if info else None,
        "engine_model": info.model if info else None,
        "device": ",".join(dict.fromkeys(str(w["device"]) for w in workers if w["device"])) or None,
        "workers": workers,
        "memory": {"weight_bytes": weight, "weight_mb": round(weight / 1e6, 1),
                   "accelerator_allocated_bytes": sum(w["accelerator_allocated_bytes"] or 0 for w in workers)},
        "features": features(info),
        "names": list(routing.names_of(routing.Served(name, info))),
        "preload": preloaded,
        "active_jobs": sum(view.active for view in views),
        "loads": sum(int(w["loads"] or 0) for w in workers),
    }
    if info is not None and info.fallback_reason:
        entry["fallback_reason"] = info.fallback_reason if detailed else "Chatterbox could not run here"
    if state == "failed" and detailed:
        entry["error"] = next((view.last_error for view in views if view.last_error), None)
    elif state == "failed":
        entry["error"] = "its weights could not be loaded; see the server log"
    return entry


def model_entries(svc: Services, detailed: bool) -> list[dict[str, Any]]:
    """Every served model's entry, the default first."""
    preload = set(svc.settings.preload_names)
    return [model_entry(name, svc.pool.slots(name), svc.engine_info(name), default=index == 0,
                        preloaded=name in preload, detailed=detailed)
            for index, name in enumerate(svc.pool.models)]
