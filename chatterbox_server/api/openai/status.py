"""Processing status, request history and statistics (the OpenAI-style family's /status routes), from the database."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from chatterbox_server.api.common import bool_arg, int_arg
from chatterbox_server.api.openai.memory import process_memory
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.recording import RecordingProgress
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.store.history_db import describe_entry, statistics

bp = Blueprint("status_history", __name__)


def _settled_history() -> None:
    progress = services().progress
    if isinstance(progress, RecordingProgress):
        progress.settle()


def current_statistics() -> dict[str, Any]:
    _settled_history()
    active = services().progress.all_active(guards.can_see_text, guards.admin_caller())
    return statistics(services().history.totals(), bool(active))


def history_records(limit: int) -> list[dict[str, Any]]:
    """The caller's own records (with keys; an admin key and a server without keys: everyone's)."""
    _settled_history()
    return [describe_entry(row) for row in services().history.history(limit, guards.scope())]


def processing_status() -> dict[str, Any]:
    """The peer's status object (its newest active request, or idle), plus every active request."""
    active = services().progress.all_active(guards.can_see_text, guards.admin_caller())
    total = int(services().history.totals()["total_requests"])
    base: dict[str, Any] = {"active_requests": len(active), "requests": active, "total_requests": total}
    if not active:
        return {"status": "idle", "is_processing": False, "message": "No active requests", **base}
    newest = active[-1]
    return {"status": newest["status"], "is_processing": True, "request_id": newest["request_id"],
            "duration_seconds": newest["duration_seconds"], "text_preview": newest["text_preview"],
            "progress": {k: newest[k] for k in ("current_chunk", "total_chunks", "current_step",
                                                 "progress_percentage", "estimated_completion")}, **base}


@bp.get("/status")
def status() -> Response:
    report = processing_status()
    if bool_arg("include_memory"):
        report["memory_info"] = process_memory()
    if bool_arg("include_history"):
        report["request_history"] = history_records(int_arg("history_limit", 5, 1, 20))
    if bool_arg("include_stats"):
        report["statistics"] = current_statistics()
    return jsonify(report)


@bp.get("/status/history")
def history() -> Response:
    limit = int_arg("limit", 10, 1, max(50, services().settings.history_max_records))
    records = history_records(limit)
    return jsonify({"request_history": records, "total_records": len(records), "limit": limit})


@bp.get("/status/statistics")
def stats() -> Response:
    report = current_statistics()
    if bool_arg("include_memory"):
        report["current_memory"] = process_memory()
    return jsonify(report)


@bp.post("/status/history/clear")
def clear() -> Response:
    if not bool_arg("confirm"):
        raise ApiError(400, "confirm: clearing the request history requires confirm=true", param="confirm")
    cleared = services().history.clear(guards.scope())
    return jsonify({"success": True, "message": "TTS request history cleared successfully",
                    "cleared_records": cleared})
