"""Memory of the whole server (this front worker and every model worker) and actions on it:
garbage collection and CUDA cache release run inside each model worker through the pool
(a MemoryAction message on a fresh connection), and the answer says what each one did."""
from __future__ import annotations

import gc
import os
from typing import Any

import gevent
import psutil
from flask import Blueprint, Response, jsonify

from chatterbox_server.api.common import bool_arg, float_arg
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.pool_client import connect
from chatterbox_server.security import guards
from chatterbox_server.services import services
from workers.ipc.board import WorkerState
from workers.ipc.protocol import MemoryAction, MemoryReport
from workers.model_worker import socket_path


def _admin_only() -> None:
    if not guards.admin_caller():      # PIDs, the machine's memory, actions on every worker: like /health's details
        raise ApiError(403, "/memory is for an admin API key (`name:key admin` in the keys file; without keys: "
                            "callers on this machine)", code="not_allowed")


bp = Blueprint("memory", __name__)
bp.before_request(_admin_only)
MB = 1024 * 1024
ACTION_TIMEOUT = 60.0            # a model worker answers between two chunks
THRESHOLDS = {"cpu_memory_percent": (85.0, 50.0, 95.0), "gpu_memory_mb": (8192.0, 1024.0, 32768.0)}


def _rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss if pid > 0 else None
    except psutil.Error:
        return None


def _server_rss(fallback: int) -> int:
    """Every process of this server (gunicorn master, all front workers, supervisor, model workers),
    so the figure does not depend on which front worker answers; `fallback` outside gunicorn."""
    try:
        master = psutil.Process(os.getppid())
        if "gunicorn" not in " ".join(master.cmdline()):
            return fallback
        total = master.memory_info().rss
        for child in master.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return fallback


def process_memory(detailed: bool | None = None) -> dict[str, Any]:
    """The peer's memory_info fields for the whole server, with the per-process detail beside them
    (`front_worker` is the one answering): PIDs and the machine's memory for an admin caller only
    (see guards.admin_caller), the peer's fields for everyone."""
    detailed = guards.admin_caller() if detailed is None else detailed
    svc = services()
    front = psutil.Process(os.getpid()).memory_info()
    workers, gpu = [], {"allocated_bytes": 0, "reserved_bytes": 0, "peak_allocated_bytes": 0}
    for view in svc.pool.slots():
        accelerator = view.info.get("memory") if view.info else None
        workers.append({"slot": view.slot, "pid": view.pid, "state": view.state.name.lower(),
                        "rss_bytes": _rss(view.pid), "accelerator": accelerator,
                        "caches": view.info.get("caches") if view.info else None})
        for key in gpu:
            gpu[key] += (accelerator or {}).get(key, 0)
    total_rss = _server_rss(front.rss + sum(w["rss_bytes"] or 0 for w in workers))
    system = psutil.virtual_memory()
    info: dict[str, Any] = {"cpu_memory_mb": round(total_rss / MB, 2),
                            "cpu_memory_percent": round(100.0 * total_rss / system.total, 2)}
    if any(w["accelerator"] for w in workers):
        info.update(gpu_memory_allocated_mb=round(gpu["allocated_bytes"] / MB, 2),
                    gpu_memory_reserved_mb=round(gpu["reserved_bytes"] / MB, 2),
                    gpu_memory_max_allocated_mb=round(gpu["peak_allocated_bytes"] / MB, 2))
    voices = [w["caches"]["conditionals"] for w in workers if (w["caches"] or {}).get("conditionals")]
    if voices:      # the per-voice conditionals of every model worker (bounded: capacity each)
        info["voice_cache"] = {"entries": sum(c["entries"] for c in voices),
                               "capacity": sum(c["capacity"] for c in voices),
                               "mb": round(sum(c["bytes"] for c in voices) / MB, 2)}
    if detailed:
        info.update(front_worker={"pid": os.getpid(), "rss_bytes": front.rss, "vms_bytes": front.vms},
                    model_workers=workers, system=dict(system._asdict()))
    return info


def act_on_workers(reset_peak: bool) -> list[dict[str, Any]]:
    """Run a MemoryAction in every ready model worker at once; one report (or error) per worker."""
    svc = services()

    def one(slot: int) -> dict[str, Any]:
        try:
            with gevent.Timeout(ACTION_TIMEOUT):
                conn = connect(socket_path(svc.pool.run_dir, slot))
                try:
                    conn.send(MemoryAction(reset_peak=reset_peak))
                    report = conn.recv()
                finally:
                    conn.close()
        except (OSError, EOFError, gevent.Timeout) as exc:
            return {"slot": slot, "error": f"no answer: {type(exc).__name__} {exc}".strip()}
        if not isinstance(report, MemoryReport):
            return {"slot": slot, "error": f"unexpected answer {type(report).__name__}"}
        return {"slot": report.slot, "pid": report.pid, "collected_objects": report.collected_objects,
                "cuda_cache_cleared": report.cuda_cache_cleared, "peak_stats_reset": report.peak_stats_reset,
                "rss_mb_before": round(report.rss_before / MB, 2), "rss_mb_after": round(report.rss_after / MB, 2),
                "accelerator_before": report.accelerator_before, "accelerator_after": report.accelerator_after}

    slots = [v.slot for v in svc.pool.slots() if v.state == WorkerState.READY]
    greenlets = [gevent.spawn(one, slot) for slot in slots]
    gevent.joinall(greenlets)
    return [g.value for g in greenlets]


def cleanup(reset_peak: bool) -> dict[str, Any]:
    front = gc.collect()
    workers = act_on_workers(reset_peak)
    collected = front + sum(w.get("collected_objects", 0) for w in workers)
    return {"collected_objects": collected, "front_worker_collected_objects": front, "model_workers": workers,
            "cuda_cache_cleared": any(w.get("cuda_cache_cleared") for w in workers)}


def thresholds() -> dict[str, float]:
    history = services().history
    return {name: history.value(f"alert_{name}", default) for name, (default, _, _) in THRESHOLDS.items()}


def alerts(info: dict[str, Any]) -> dict[str, Any]:
    limits = thresholds()
    found = []
    if info["cpu_memory_percent"] > limits["cpu_memory_percent"]:
        found.append({"type": "cpu_memory_high", "level": "warning",
                      "message": f"CPU memory usage is high: {info['cpu_memory_percent']:.1f}%",
                      "threshold": limits["cpu_memory_percent"], "current": info["cpu_memory_percent"]})
    if info.get("gpu_memory_allocated_mb", 0) > limits["gpu_memory_mb"]:
        found.append({"type": "gpu_memory_high", "level": "warning",
                      "message": f"GPU memory usage is high: {info['gpu_memory_allocated_mb']:.1f}MB",
                      "threshold": limits["gpu_memory_mb"], "current": info["gpu_memory_allocated_mb"]})
    return {"has_alerts": bool(found), "alert_count": len(found), "alerts": found}


@bp.get("/memory")
def memory() -> Response:
    do_cleanup = bool_arg("cleanup")
    force_cuda = bool_arg("force_cuda_clear")
    info = process_memory()
    result: dict[str, Any] = {"memory_info": info, "request_counter": services().history.memory_counter(),
                              "cleanup_performed": False, "cuda_cache_cleared": False}
    if bool_arg("include_alerts", True):
        result["alerts"] = alerts(info)
    if do_cleanup:
        report = cleanup(reset_peak=False)
        result.update(cleanup_performed=True, **report, memory_info_after_cleanup=process_memory())
        result["force_cuda_clear"] = force_cuda    # every cleanup empties the CUDA cache where there is one
    return jsonify(result)


@bp.post("/memory/reset")
def reset() -> Response:
    if not bool_arg("confirm"):
        raise ApiError(400, "confirm: resetting memory tracking requires confirm=true", param="confirm")
    previous = services().history.reset_memory_counter()
    report = cleanup(reset_peak=True)
    return jsonify({"status": "reset", "previous_request_counter": previous, **report,
                    "cuda_stats_reset": any(w.get("peak_stats_reset") for w in report["model_workers"]),
                    "memory_info": process_memory()})


@bp.get("/memory/config")
def get_config() -> Response:
    settings = services().settings
    info = services().engine_info()
    device = info.device if info else None
    cuda = bool(device and device.startswith("cuda"))
    return jsonify({"config": {"model_workers": settings.model_workers, "device": settings.device,
                               "max_queued_jobs": settings.max_queued_jobs,
                               "max_chunk_length": 500, "max_total_length": settings.max_input_chars,
                               "cleanup": "after every job each model worker releases cached accelerator memory",
                               "enable_memory_monitoring": True},
                    "alert_thresholds": thresholds(),
                    "device_info": {"cuda_available": cuda,
                                    "cuda_device_count": len({v.info.get("device") for v in services().pool.slots()
                                                              if v.info and str(v.info.get("device")).startswith(
                                                                  "cuda")}),
                                    "current_device": device}})


@bp.post("/memory/config")
def set_config() -> Response:
    old = thresholds()
    history = services().history
    for name, (_, low, high) in THRESHOLDS.items():
        value = float_arg(name, None, low, high)
        if value is not None:
            history.set_value(f"alert_{name}", value)
    return jsonify({"status": "success", "message": "Memory alert thresholds updated", "old_thresholds": old,
                    "new_thresholds": thresholds(),
                    "note": "Stored in the database: every front worker and instance uses them, across restarts"})


@bp.get("/memory/recommendations")
def recommendations() -> Response:
    info = process_memory()
    counter = services().history.memory_counter()
    found = []
    percent = info["cpu_memory_percent"]
    if percent > 60:
        found.append({"type": "cpu_memory", "priority": "high" if percent > 80 else "medium",
                      "title": "High CPU Memory Usage" if percent > 80 else "Moderate CPU Memory Usage",
                      "description": f"The server's processes use {percent:.1f}% of the machine's memory",
                      "actions": ["Lower CHATTERBOX_MODEL_WORKERS", "Run GET /memory?cleanup=true"]})
    gpu = info.get("gpu_memory_reserved_mb", 0)
    if gpu > thresholds()["gpu_memory_mb"]:
        found.append({"type": "gpu_memory", "priority": "high", "title": "High GPU Memory Usage",
                      "description": f"Model workers hold {gpu:.1f} MB of GPU memory",
                      "actions": ["Run GET /memory?cleanup=true to empty the CUDA caches",
                                  "Lower CHATTERBOX_MODEL_WORKERS per device"]})
    if counter > 1000:
        found.append({"type": "maintenance", "priority": "low", "title": "High Request Count",
                      "description": f"Processed {counter} requests since the last reset",
                      "actions": ["Watch /memory for growth; POST /memory/reset?confirm=true restarts the count"]})
    return jsonify({"memory_info": info, "request_counter": counter, "recommendations": found,
                    "recommendation_count": len(found),
                    "has_critical_issues": any(r["priority"] == "high" for r in found)})
