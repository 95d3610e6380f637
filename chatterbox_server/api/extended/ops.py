"""Health and operations of the Extended API: /api/v1/health, config, metrics,
resources, cleanup and errors. Every answer comes from live data: the pool's board, the outputs
directory, the process table, the request counters and the error log every front worker writes.

/api/v1/health answers without a key, so it keeps the peer's shape but shows the private parts
(directory sizes, the machine's memory, error texts with voice and file names) to an admin caller
only, and it stays cheap: what costs a file walk or a read of the error log is measured off the
hub, at most once per HEALTH_CACHE_SECONDS per front worker, and bounded (MAX_WALK_FILES).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import gevent.lock
import psutil
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import chatterbox_server
from chatterbox_server.api.extended.common import output_store
from chatterbox_server.api.extended.fields import EXPORT_FORMATS
from chatterbox_server.api.extended.tts_schema import DEFAULT_EXPORT_FORMATS, WHISPER_MODELS
from chatterbox_server.api.health import health_report
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.runtime.telemetry import AUDIO_SECONDS, FIRST_AUDIO, SPEECH_REQUESTS
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.store.errorlog import ErrorLog
from chatterbox_server.store.outputs import TEMP_MAX_AGE
from workers.ipc.asr import socket_path as asr_socket

bp = Blueprint("extended_ops", __name__)
STARTED = time.time()
WARN_PERCENT = 80.0
HISTORY_KEPT = 10
HEALTH_CACHE_SECONDS = 30.0
MAX_WALK_FILES = 200_000          # a directory walk stops here and says it is a lower bound
PUBLIC_ERROR_FIELDS = ("total_errors", "by_category", "by_severity", "unresolved_count", "window_hours")
_cache: dict[str, tuple[float, Any]] = {}
_cache_locks: dict[str, gevent.lock.Semaphore] = {}


def cached(name: str, compute: Any, seconds: float | None = None) -> Any:
    """compute() run off the hub, at most once per `seconds` (HEALTH_CACHE_SECONDS) in this front
    worker: probes that arrive meanwhile share the last answer, those during a run wait for it."""
    seconds = HEALTH_CACHE_SECONDS if seconds is None else seconds
    hit = _cache.get(name)
    if hit is not None and time.monotonic() - hit[0] < seconds:
        return hit[1]
    with _cache_locks.setdefault(name, gevent.lock.Semaphore()):
        hit = _cache.get(name)
        if hit is None or time.monotonic() - hit[0] >= seconds:
            hit = (time.monotonic(), off_hub(compute))
            _cache[name] = hit
    return hit[1]


def error_log(svc: Services | None = None) -> ErrorLog:
    return (svc or services()).errors


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def server_started() -> float:
    """When the server (the gunicorn master, else this process) started."""
    try:
        process = psutil.Process(os.getppid() if "gunicorn" in request.environ.get("SERVER_SOFTWARE", "")
                                 else os.getpid())
        return process.create_time()
    except psutil.Error:
        return STARTED


# -- health ---------------------------------------------------------------------------------------
@bp.get("/health")
def health() -> tuple[Response, int]:
    svc = services()
    report = health_report(svc)
    info = svc.engine_info()
    status = {"ok": "healthy", "loading": "loading"}.get(report["status"], "unhealthy")
    errors = cached("error_summary", error_log(svc).summary)
    if guards.admin_caller():
        resources = cached("resource_status", lambda: resource_status(svc))
        system = system_info()
    else:       # the peer's fields, without sizes, memory or error texts (names of voices and files)
        resources = {"timestamp": now_iso(), "warnings": [], "whisper_process": whisper_running(svc)}
        system = {"cpu_count": psutil.cpu_count()}
        errors = {name: errors[name] for name in PUBLIC_ERROR_FIELDS}
    uptime = time.time() - server_started()
    body = {
        "status": status,
        "success": report["ready"],
        "message": "API is healthy" if report["ready"] else f"not ready: {report['status']}",
        "timestamp": now_iso(),
        "models_loaded": {"tts": report["ready"],
                          "vc": bool(report["ready"] and info and info.supports_voice_conversion)},
        "version": chatterbox_server.__version__,
        "uptime_seconds": round(uptime, 3),
        "uptime": str(timedelta(seconds=int(uptime))),
        "engine": report["engine"], "model": report["model"], "device": report["device"],
        "workers": report["workers"],
        "metrics": request_metrics(),
        "system_info": system,
        "resource_status": resources,
        "warnings": resources["warnings"] or None,
        "error_summary": errors if errors["total_errors"] else None,
    }
    return jsonify(body), 200 if report["ready"] else 503


# -- config ---------------------------------------------------------------------------------------
@bp.get("/config")
def config() -> Response:
    settings = current_app.config["SETTINGS"]
    info = services().engine_info()
    return jsonify({
        "tts_defaults": {"exaggeration": 0.5, "temperature": 0.75, "cfg_weight": 1.0, "seed": 0,
                         "speed_factor": 1.0, "num_candidates_per_chunk": 3, "max_attempts_per_candidate": 3,
                         "bypass_whisper_checking": False, "whisper_model_name": "medium",
                         "export_formats": list(DEFAULT_EXPORT_FORMATS), "disable_watermark": True},
        "vc_defaults": {"chunk_sec": 60, "overlap_sec": 0.1, "export_formats": list(DEFAULT_EXPORT_FORMATS)},
        "supported_formats": list(EXPORT_FORMATS),
        "api_limits": {"max_text_length": settings.max_input_chars,
                       "max_upload_bytes": settings.max_upload_bytes,
                       "output_retention_seconds": settings.output_retention_seconds,
                       "output_max_bytes": settings.output_max_bytes,
                       "max_queued_jobs_per_worker": settings.max_queued_jobs,
                       "max_queued_seconds": settings.max_queued_seconds,
                       "queue_timeout_seconds": settings.queue_timeout},
        "engine": {"name": info.engine if info else settings.engine, "model": info.model if info else None,
                   "sample_rate": info.sample_rate if info else None,
                   "supports_cloning": bool(info and info.supports_cloning),
                   "supports_voice_conversion": bool(info and info.supports_voice_conversion)},
        "whisper": {"models": list(WHISPER_MODELS), "model_dir": settings.whisper_model_dir or None,
                    "device": settings.whisper_device},
        "watermark": {"disable_allowed": settings.allow_disable_watermark},
    })


# -- metrics and resources ------------------------------------------------------------------------
def request_metrics() -> dict[str, Any]:
    """The request counters of every front worker (prometheus multiprocess files), as plain numbers."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        families = list(registry.collect())
    else:
        families = [family for metric in (SPEECH_REQUESTS, AUDIO_SECONDS, FIRST_AUDIO) for family in metric.collect()]
    requests_by: dict[str, float] = {}
    audio_seconds = first_audio_count = first_audio_sum = 0.0
    for family in families:
        for sample in family.samples:
            if sample.name == "chatterbox_speech_requests_total":
                key = f"{sample.labels['endpoint']} {sample.labels['outcome']}"
                requests_by[key] = requests_by.get(key, 0) + sample.value
            elif sample.name == "chatterbox_audio_seconds_total":
                audio_seconds += sample.value
            elif sample.name == "chatterbox_time_to_first_audio_seconds_count":
                first_audio_count += sample.value
            elif sample.name == "chatterbox_time_to_first_audio_seconds_sum":
                first_audio_sum += sample.value
    return {"speech_requests": requests_by, "speech_requests_total": sum(requests_by.values()),
            "audio_seconds_total": round(audio_seconds, 3),
            "first_audio_seconds_mean": round(first_audio_sum / first_audio_count, 4) if first_audio_count else None}


def system_info() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {"cpu_count": psutil.cpu_count(), "cpu_percent": psutil.cpu_percent(interval=None),
            "load_average": list(os.getloadavg()), "memory_total_bytes": memory.total,
            "memory_available_bytes": memory.available, "memory_percent": memory.percent}


@bp.get("/metrics")
def metrics() -> Response:
    svc = services()
    report = health_report(svc)
    processes = {"front_worker": _process(os.getpid()),
                 "model_workers": [{"slot": s["slot"], **_process(s["pid"])} for s in report["workers"]["slots"]]}
    disk = shutil.disk_usage(svc.settings.data_dir)
    return jsonify({"timestamp": now_iso(), "uptime_seconds": round(time.time() - server_started(), 3),
                    "system": {**system_info(), "disk_total_bytes": disk.total, "disk_free_bytes": disk.free},
                    "application": {**request_metrics(), "jobs_in_flight": report["jobs_in_flight"],
                                    "queue_depth": report["queue_depth"],
                                    "jobs_done": sum(s["jobs_done"] for s in report["workers"]["slots"]),
                                    "jobs_failed": sum(s["jobs_failed"] for s in report["workers"]["slots"])},
                    "processes": processes})


def _process(pid: int) -> dict[str, Any]:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return {"pid": pid, "rss_bytes": proc.memory_info().rss, "cpu_seconds": round(sum(proc.cpu_times()[:2]), 3),
                    "threads": proc.num_threads()}
    except (psutil.Error, ValueError):
        return {"pid": pid, "rss_bytes": None}


def directory_usage(path: str, max_files: int = MAX_WALK_FILES) -> tuple[int, int]:
    """(bytes, files) of the regular files under `path`, symlinks not followed; at most `max_files`
    looked at (the sums are then a lower bound)."""
    size = count = seen = 0
    for root, _, names in os.walk(path):
        for name in names:
            seen += 1
            if seen > max_files:
                return size, count
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                size += info.st_size
                count += 1
    return size, count


def resource_status(svc: Services) -> dict[str, Any]:
    settings = svc.settings
    status: dict[str, Any] = {"timestamp": now_iso(), "directories": {}, "warnings": []}
    limits = {"outputs": settings.output_max_bytes, "voices": 0, "tmp": 0}
    try:        # every store under DATA_DIR (vc_inputs and the like too), not only the ones named here
        limits.update({entry.name: 0 for entry in os.scandir(settings.data_dir)
                       if entry.is_dir(follow_symlinks=False) and entry.name not in limits
                       and not entry.name.startswith(".")})
    except FileNotFoundError:
        pass
    for name, limit in limits.items():
        size, count = directory_usage(os.path.join(settings.data_dir, name))
        entry = {"size_bytes": size, "size_mb": round(size / 2**20, 3), "file_count": count}
        if limit:
            entry.update({"max_size_mb": round(limit / 2**20, 3), "usage_percent": round(100 * size / limit, 2)})
            if entry["usage_percent"] >= WARN_PERCENT:
                status["warnings"].append(f"{name} directory using {entry['usage_percent']:.1f}% of its limit")
        status["directories"][name] = entry
    disk = shutil.disk_usage(settings.data_dir)
    status["disk"] = {"total_bytes": disk.total, "free_bytes": disk.free,
                      "usage_percent": round(100 * (disk.total - disk.free) / disk.total, 2)}
    if status["disk"]["usage_percent"] >= 95:
        status["warnings"].append(f"disk {status['disk']['usage_percent']:.1f}% full")
    memory = psutil.virtual_memory()
    status["memory"] = {"percent": memory.percent, "available_bytes": memory.available}
    if memory.percent >= 95:
        status["warnings"].append(f"memory {memory.percent:.1f}% used")
    status["whisper_process"] = whisper_running(svc)
    return status


def whisper_running(svc: Services) -> bool:
    return os.path.exists(asr_socket(svc.pool.run_dir))


@bp.get("/resources")
def resources() -> Response:
    svc = services()
    return jsonify(off_hub(resource_status, svc))       # a walk of DATA_DIR: never on the hub


# -- cleanup --------------------------------------------------------------------------------------
def cleanup_history_path(svc: Services) -> str:
    return os.path.join(svc.pool.run_dir, "cleanup.jsonl")


def run_cleanup(svc: Services, forced: bool) -> dict[str, Any]:
    """Apply the retention limits to the outputs directory and every project folder in it, and
    delete upload leftovers in DATA_DIR/tmp older than an hour."""
    started = time.time()
    root = output_store()
    paths = [os.path.join(dirpath, name) for dirpath, _, names in os.walk(root.directory) for name in names]
    before = {os.path.relpath(path, root.directory): os.lstat(path).st_size for path in paths}
    removed = root.prune()          # the root store walks its project folders too
    freed = sum(before.get(name, 0) for name in removed)
    temp_removed = 0
    for name in _files(svc.upload_dir):
        path = os.path.join(svc.upload_dir, name)
        try:
            info = os.lstat(path)
            if started - info.st_mtime > TEMP_MAX_AGE:
                os.unlink(path)
                freed += info.st_size
                temp_removed += 1
        except OSError:
            continue
    summary = {"timestamp": now_iso(), "forced": forced, "success": True,
               "total_files_removed": len(removed) + temp_removed, "total_bytes_freed": freed,
               "outputs_removed": removed, "temp_files_removed": temp_removed,
               "duration_seconds": round(time.time() - started, 4)}
    with open(cleanup_history_path(svc), "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")
    return summary


def _files(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if os.path.isfile(os.path.join(directory, n))
                and not os.path.islink(os.path.join(directory, n))]
    except FileNotFoundError:
        return []


def cleanup_history(svc: Services) -> list[dict[str, Any]]:
    try:
        with open(cleanup_history_path(svc), encoding="utf-8") as f:
            lines = f.readlines()[-HISTORY_KEPT:]
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


@bp.post("/cleanup")
def cleanup() -> Response:
    return jsonify(run_cleanup(services(), forced=True))


@bp.get("/cleanup/status")
def cleanup_status() -> Response:
    svc = services()
    history = cleanup_history(svc)
    settings = svc.settings
    return jsonify({"scheduler": {"running": True, "mode": "after every generated file, and on POST /api/v1/cleanup",
                                  "retention_seconds": settings.output_retention_seconds,
                                  "max_bytes": settings.output_max_bytes,
                                  "last_cleanup_time": history[-1]["timestamp"] if history else None,
                                  "cleanup_count": len(history)},
                    "history": history[-5:]})


# -- errors ---------------------------------------------------------------------------------------
@bp.get("/errors/summary")
def errors_summary() -> Response:
    log, owns = error_log(), guards.owner_check()        # a key sees its own errors; an admin key every one
    return jsonify({**log.summary(owns=owns), "recent_errors": log.recent(5, owns)})


@bp.get("/errors/recent")
def errors_recent() -> Response:
    raw = request.args.get("count", "10")
    try:
        count = int(raw)
    except ValueError:
        raise ApiError(400, f"count: must be a whole number, got {raw!r}", param="count") from None
    if count < 0:
        raise ApiError(400, "count: cannot be negative", param="count")
    log, owns = error_log(), guards.owner_check()
    return jsonify({"recent_errors": log.recent(min(count, 50), owns),
                    "total_stored": sum(1 for r in log.read() if owns(r.owner))})


