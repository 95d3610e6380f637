"""The served models (issue 20): /v1/models with each one's state, and loading or unloading one by hand.

GET /v1/models lists every served model (`chatterbox-standard`, `chatterbox-turbo`, ...) with its
state, workers, device, memory and features, then the other names requests may use (OpenAI's
`tts-1`, the engine's own) with the model each one goes to. POST /v1/models/{id}/load and /unload
are for an admin key (without keys: callers on this machine), like /memory.
"""
from __future__ import annotations

import time
from typing import Any

import gevent
from flask import Blueprint, Response, jsonify, request

from chatterbox_server.api.model_states import model_entries
from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.synthesis import routing
from chatterbox_server.synthesis.requests import OPENAI_MODELS

bp = Blueprint("models", __name__)
LOAD_WAIT_LIMIT = 1800.0        # seconds a load by hand may be waited for (?wait=false: not at all)
POLL_SECONDS = 0.2


def alias_entries(svc: Services, served: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The other names a request's `model` may use, each with the model it goes to."""
    listed = {entry["id"] for entry in served}
    entries = []
    names = [name for entry in served for name in entry["names"]]
    for name in dict.fromkeys([*names, routing.GENERIC_NAME, *OPENAI_MODELS]):
        if name in listed:
            continue
        try:
            target = svc.route(name)
        except ApiError:
            continue
        entries.append({"id": name, "object": "model", "created": 0, "owned_by": "chatterbox-server",
                        "routes_to": routing.model_id(target)})
    return entries


@bp.get("/models")
def list_models() -> Response:
    svc = services()
    served = model_entries(svc, guards.admin_caller())
    return jsonify({"object": "list", "data": [*served, *alias_entries(svc, served)],
                    "default": served[0]["id"] if served else None,
                    "memory_budget_bytes": svc.settings.memory_budget_bytes,
                    "idle_unload_seconds": svc.settings.idle_unload_seconds or None})


def served_model(svc: Services, model_id: str) -> str:
    """The served model an id in the path names; 404 listing them for any other."""
    wanted = model_id.strip().lower()
    for served in svc.served():
        if wanted in (name.lower() for name in routing.names_of(served)):
            return served.name
    raise ApiError(404, routing.unknown_message(model_id, svc.served()), param="model_id", code="model_not_found")


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> Response:
    svc = services()
    name = served_model(svc, model_id)
    entries = model_entries(svc, guards.admin_caller())
    return jsonify(next(entry for entry in entries if entry["model"] == name))


def _admin_only() -> None:
    if not guards.admin_caller():
        raise ApiError(403, "loading and unloading models is for an admin API key (`name:key admin` in the keys "
                            "file; without keys: callers on this machine)", code="not_allowed")


def _entry(svc: Services, name: str) -> dict[str, Any]:
    return next(entry for entry in model_entries(svc, True) if entry["model"] == name)


@bp.post("/models/<path:model_id>/load")
def load_model(model_id: str) -> tuple[Response, int]:
    """Load the model on every worker of it (within the memory budget). Waits until it is loaded
    unless `?wait=false` (then 202); 503 when its load fails."""
    _admin_only()
    svc = services()
    name = served_model(svc, model_id)
    reports = svc.pool.model_action(name, "load")
    if not reports:
        raise ApiError(503, f"no model worker of {routing.model_id(name)} is running; see /health",
                       code="model_unavailable", retry_after=5)
    if request.args.get("wait", "true").lower() in ("0", "false", "no"):
        return jsonify(_entry(svc, name)), 202
    deadline = time.monotonic() + LOAD_WAIT_LIMIT
    while time.monotonic() < deadline:
        entry = _entry(svc, name)
        if entry["state"] == "loaded":
            return jsonify(entry), 200
        if entry["state"] == "failed":
            raise ApiError(503, f"model {entry['id']} could not be loaded: {entry.get('error')}",
                           code="model_unavailable")
        gevent.sleep(POLL_SECONDS)
    return jsonify(_entry(svc, name)), 202


@bp.post("/models/<path:model_id>/unload")
def unload_model(model_id: str) -> tuple[Response, int]:
    """Free the model's memory on every worker of it; 409 while a request is using it (nothing is
    unloaded under a request)."""
    _admin_only()
    svc = services()
    name = served_model(svc, model_id)
    reports = svc.pool.model_action(name, "unload")
    busy = [report for report in reports if report.state in ("in_use", "loading")]
    if busy:
        raise ApiError(409, f"model {routing.model_id(name)} is in use ({'; '.join(r.message for r in busy)}): "
                            "a worker with a request keeps it loaded; try again once it is idle", code="model_in_use")
    return jsonify(_entry(svc, name)), 200
