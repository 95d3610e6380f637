"""OpenAPI entries for the OpenAI-style family's management routes (long-text jobs, history,
info, memory), added to /openapi.json by api/docs/pages.py."""
from __future__ import annotations

from typing import Any

from apispec import APISpec

from chatterbox_server.synthesis.longjobs.rules import BulkSchema, LongTextRequestSchema, RetrySchema, UpdateSchema

LONG = "/v1/audio/speech/long"
ERROR = {"description": "Invalid request (`param` names the field)",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(method: str, summary: str, tag: str, path: str, body: str | None = None,
               query: tuple[str, ...] = ()) -> dict[str, Any]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    parameters = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]
    parameters += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in query]
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": parameters,
                                 "responses": {"200": {"description": "OK"}, "400": ERROR}}
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return {method: operation}


def add_paths(spec: APISpec) -> None:
    spec.components.schema("LongTextRequest", schema=LongTextRequestSchema(max_input_chars=200_000))
    spec.components.schema("LongTextUpdate", schema=UpdateSchema())
    spec.components.schema("LongTextRetry", schema=RetrySchema())
    spec.components.schema("LongTextBulk", schema=BulkSchema())
    tag = "long-text jobs"
    entries: dict[str, dict[str, Any]] = {
        LONG: {**_operation("post", "Create a long-text job", tag, LONG, "LongTextRequest"),
               **_operation("get", "List jobs", tag, LONG, query=("status", "limit"))},
        f"{LONG}/{{job_id}}": {
            **_operation("get", "Job status and progress", tag, f"{LONG}/{{job_id}}"),
            **_operation("patch", "Rename, tag or archive", tag, f"{LONG}/{{job_id}}", "LongTextUpdate"),
            **_operation("delete", "Cancel (action=cancel) or delete (action=delete)", tag, f"{LONG}/{{job_id}}",
                         query=("action",))},
        f"{LONG}/{{job_id}}/details": _operation("get", "Job with every chunk", tag, f"{LONG}/{{job_id}}/details"),
        f"{LONG}/{{job_id}}/download": _operation("get", "The finished audio", tag, f"{LONG}/{{job_id}}/download"),
        f"{LONG}/{{job_id}}/sse": _operation("get", "Progress as Server-Sent Events", tag, f"{LONG}/{{job_id}}/sse"),
        f"{LONG}/{{job_id}}/pause": _operation("put", "Pause", tag, f"{LONG}/{{job_id}}/pause"),
        f"{LONG}/{{job_id}}/resume": _operation("put", "Resume", tag, f"{LONG}/{{job_id}}/resume"),
        f"{LONG}/{{job_id}}/retry": _operation("post", "Retry a failed or cancelled job", tag,
                                               f"{LONG}/{{job_id}}/retry", "LongTextRetry"),
        f"{LONG}/bulk": _operation("post", "Bulk delete, archive, unarchive or retry", tag, f"{LONG}/bulk",
                                   "LongTextBulk"),
        f"{LONG}/history": _operation("delete", "Delete every finished job (confirm=true)", tag, f"{LONG}/history",
                                      query=("confirm", "session_id")),
        "/v1/audio/speech/long-history": _operation(
            "get", "Job history with filters", tag, "/v1/audio/speech/long-history",
            query=("status", "session_id", "search", "is_archived", "start_date", "end_date", "sort", "limit",
                   "offset")),
        "/v1/audio/speech/long-history/stats": _operation("get", "Job statistics", tag,
                                                          "/v1/audio/speech/long-history/stats"),
        "/v1/status/history": _operation("get", "Recent requests", "status", "/v1/status/history", query=("limit",)),
        "/v1/status/statistics": _operation("get", "Request statistics", "status", "/v1/status/statistics"),
        "/v1/status/history/clear": _operation("post", "Clear the request history (confirm=true)", "status",
                                               "/v1/status/history/clear", query=("confirm",)),
        "/memory/reset": _operation("post", "Cleanup and counter reset in every worker (confirm=true)", "memory",
                                    "/memory/reset", query=("confirm",)),
        "/memory/config": {**_operation("get", "Memory settings and alert thresholds", "memory", "/memory/config"),
                           **_operation("post", "Set alert thresholds", "memory", "/memory/config",
                                        query=("cpu_memory_percent", "gpu_memory_mb"))},
        "/memory/recommendations": _operation("get", "Memory recommendations", "memory", "/memory/recommendations"),
    }
    for path, summary in (("/config", "Configuration"), ("/info", "API information"),
                          ("/languages", "Languages of the engine"), ("/endpoints", "Paths and aliases"),
                          ("/ping", "Connectivity check")):
        entries[path] = _operation("get", summary, "info", path)
    for path, operations in entries.items():
        spec.path(path, operations=operations)
