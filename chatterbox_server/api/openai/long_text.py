"""Long-text jobs (the OpenAI-style family's /audio/speech/long): create, watch, pause, resume, cancel,
download, edit, retry, bulk actions and history. The work itself is done by longjobs.runner."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import gevent
from flask import Blueprint, Response, jsonify, request, send_file
from sqlalchemy.exc import SQLAlchemyError

from chatterbox_server.api import disk_quota, errors
from chatterbox_server.api.bodies import json_object, load
from chatterbox_server.api.common import bool_arg, int_arg
from chatterbox_server.audio.encoders import CONTENT_TYPES
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.store.jobs_db import SORTS, paused_values
from chatterbox_server.synthesis.budget import Limits
from chatterbox_server.synthesis.longjobs import files, rules, script
from chatterbox_server.synthesis.longjobs.rules import (
    CANCELLABLE,
    CANCELLED,
    COMPLETED,
    FINISHED,
    PAUSABLE,
    PAUSED,
    PENDING,
    RETRYABLE,
)
from chatterbox_server.synthesis.speech import random_seed
from workers.engines.base import EngineInfo

bp = Blueprint("long_text", __name__)
log = logging.getLogger("chatterbox.longjobs")
SSE_POLL_SECONDS = 1.0             # one read of the job's row a second per stream, and streams are capped
_open_streams = [0]                # this front worker's open progress streams
SSE_KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# -- helpers --------------------------------------------------------------------------------------
def _job(job_id: str) -> dict[str, Any]:
    """The caller's job; another key's job is "not found" too, so its existence does not leak."""
    row = services().jobs.get(job_id, guards.scope())
    if row is None:
        raise ApiError(404, f"long-text job {job_id!r} not found", param="job_id", code="job_not_found")
    return row


def _choice_arg(name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    value = request.args.get(name, default)
    if value is not None and value not in choices:
        raise ApiError(400, f"{name}: must be one of {', '.join(choices)}", param=name)
    return value


def _date_arg(name: str) -> float | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, f"{name}: not an ISO 8601 date", param=name) from None


def _create_response(row: dict[str, Any], message: str) -> dict[str, Any]:
    links = rules.urls(row["id"])
    per_chunk = 2
    return {"job_id": row["id"], "status": row["status"], "message": message,
            "estimated_processing_time_seconds": row["total_chunks"] * per_chunk,
            "total_chunks": row["total_chunks"], "status_url": links["status_url"], "sse_url": links["sse_url"]}


def _new_job(text: str, chunks: list[str], voice: str | None, fmt: str, params: dict[str, Any],
             extra: dict[str, Any], owner: str | None, job_id: str | None = None,
             done: dict[int, dict[str, Any]] | None = None) -> dict:
    """`chunks`: rules.plan_job's, whose cost was checked before any other work."""
    svc = services()
    if svc.jobs.count_active() >= svc.settings.longtext_max_active:
        raise ApiError(429, f"{svc.settings.longtext_max_active} long-text jobs are already pending, running or "
                            "paused; wait for some to finish or cancel them", code="too_many_jobs", retry_after=30)
    per_key = svc.settings.longtext_max_active_per_key
    if owner is not None and per_key and svc.jobs.count_active(owner) >= per_key:
        raise ApiError(429, f"the API key {owner!r} already has {per_key} long-text jobs pending, running or "
                            "paused (CHATTERBOX_LONGTEXT_MAX_ACTIVE_PER_KEY); wait for some to finish or cancel "
                            "them", code="too_many_jobs", retry_after=30)
    if not chunks:
        raise ApiError(400, "input: contains nothing to speak", param="input")
    disk_quota.require_room()       # its audio counts in the key's quota: refused once the workspace is full
    job_id = job_id or str(uuid.uuid4())
    row = {"id": job_id, "text": text, "text_length": len(text),
           "text_hash": hashlib.sha256(text.encode()).hexdigest(), "voice": voice,
           "parameters": json.dumps(params), "output_format": fmt, "owner": owner, **extra}
    svc.jobs.create(row, chunks, done)
    svc.runner.poke()
    return svc.jobs.get(job_id)


# -- create, list, read -----------------------------------------------------------------------------
@bp.post("/audio/speech/long")
def create_job() -> Response:
    svc = services()
    req = load(rules.LongTextRequestSchema(max_input_chars=svc.settings.longtext_max_chars), json_object())
    scripted = off_hub(script.needs_script, req["input"])
    chunks = None if scripted else off_hub(rules.plan_job, req["input"], req, Limits.of(svc.settings))  # 413 first
    info = svc.require_engine(req["model"], req["language"])
    _check_language(req["language"], info)
    svc.voices.resolve(req["voice"], info, owns=guards.owner_check())   # 400 now for a voice it cannot use
    params = {name: req[name] for name in ("exaggeration", "cfg_weight", "temperature", "speed", "language",
                                            "streaming_strategy", "streaming_chunk_size")}
    params["model"] = info.group         # the runner sends its chunks to this model's workers
    params["seed"] = req["seed"] if req["seed"] is not None else random_seed()
    gap_ms = svc.settings.dialogue_gap_ms if req["gap_ms"] is None else req["gap_ms"]
    planned = _plan_script(req, info, gap_ms) if scripted else script.Script(tuple(chunks or ()))
    if planned.scripted:
        if planned.trim_edges:      # a dialogue
            params.update(speakers=req["speakers"], gap_ms=gap_ms)
        params["script"] = planned.to_json()
    row = _new_job(req["input"], list(planned.chunks), req["voice"], req["response_format"] or "mp3", params,
                   {"session_id": req["session_id"], "display_name": req["display_name"],
                    "tags": json.dumps(req["tags"])}, guards.workspace())
    response = jsonify(_create_response(row, "Job submitted for processing"))
    if planned.dropped_tags:
        response.headers["X-Chatterbox-Dropped-Tags"] = ",".join(planned.dropped_tags)
    return response


def _plan_script(req: dict[str, Any], info: EngineInfo, gap_ms: int) -> script.Script:
    """A script's chunks (off the hub: a two-hour script is read in one go), every turn's voice
    resolved: a 400 naming the turn before anything is stored or synthesized."""
    svc = services()
    planned = off_hub(functools.partial(
        script.plan_script, req["input"], strategy=req["streaming_strategy"], chunk_size=req["streaming_chunk_size"],
        tags=frozenset(info.tags), speakers=req["speakers"], default_voice=req["voice"], gap=gap_ms / 1000,
        max_turns=script.TURNS_PER_DIALOGUE_LIMIT * svc.settings.dialogue_max_turns, limits=Limits.of(svc.settings)))
    owns = guards.owner_check()
    for name in planned.voices:
        try:
            svc.voices.resolve(name, info, param="speakers", owns=owns)
        except ApiError as exc:
            raise ApiError(exc.status, f"input: {planned.first_use.get(name, 'a turn')}: {exc.message}",
                           param="speakers", code=exc.code) from None
    return planned


def _check_language(language: str | None, info: Any, param: str = "language") -> None:
    if language is not None and language not in info.languages and language != "en":
        raise ApiError(400, f"{param}: language {language!r} is not supported by this model "
                            f"(supported: {', '.join(info.languages) or 'en'})", param=param)


@bp.get("/audio/speech/long")
@bp.get("/audio/speech/long/jobs")
def list_jobs() -> Response:
    status = _choice_arg("status", rules.STATUSES)
    limit = int_arg("limit", 20, 1, 100)
    jobs = services().jobs
    rows = jobs.list(status=status, limit=limit, scope=guards.scope())
    counts = jobs.status_counts(guards.scope())
    return jsonify({"jobs": [rules.list_item(row) for row in rows], "total_jobs": sum(counts.values()),
                    "active_jobs": counts.get(PENDING, 0) + counts.get(rules.PROCESSING, 0),
                    "completed_jobs": counts.get(COMPLETED, 0)})


@bp.get("/audio/speech/long/<job_id>")
@bp.get("/audio/speech/long/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    row = _job(job_id)
    return jsonify(rules.job_response(row, _chunks(row)))


def _chunks(row: dict[str, Any], voices: bool = False) -> list[dict[str, Any]]:
    """The job's chunk rows with the sample rate; `voices`: each with its voice too (and, in a
    script, its turn and the silence after it)."""
    chunks = services().jobs.chunks(row["id"])
    info = services().engine_info() if not row["sample_rate"] else None
    rate = row["sample_rate"] or (info.sample_rate if info else None)
    for chunk in chunks:
        chunk["sample_rate"] = rate
    if voices:
        plan = script.Script.from_params(json.loads(row["parameters"]), [c["text"] for c in chunks])
        for chunk in chunks:
            chunk["voice"] = plan.voice_of(chunk["idx"], row["voice"])
            if plan.scripted:
                chunk["turn"] = plan.turn_of(chunk["idx"])
                chunk["pause_after_ms"] = round(1000 * plan.pause_after(chunk["idx"]))
    return chunks


@bp.get("/audio/speech/long/<job_id>/details")
def job_details(job_id: str) -> Response:
    row = _job(job_id)
    chunks = _chunks(row, voices=True)
    services().jobs.touch(job_id)
    done = [c for c in chunks if c["audio_file"]]
    return jsonify({"metadata": rules.metadata(row), "chunks": [rules.describe_chunk(c) for c in chunks],
                    "input_text": row["text"], "error_log": [row["error"]] if row["error"] else [],
                    "performance_metrics": {
                        "total_processing_time_ms": row["total_processing_time_ms"],
                        "avg_chunk_time_ms": row["total_processing_time_ms"] / len(done) if done else 0,
                        "success_rate": len(done) / len(chunks) if chunks else 0}})


@bp.get("/audio/speech/long/<job_id>/download")
def download(job_id: str) -> Response:
    row = _job(job_id)
    if row["status"] != COMPLETED:
        raise ApiError(409, f"job {job_id} is {row['status']}; its audio can be downloaded once it is completed",
                       code="job_not_completed")
    path = files.output_path(services().jobs_root, job_id, row["output_format"])
    if not os.path.isfile(path):
        raise ApiError(410, f"the audio of job {job_id} is no longer on disk", code="output_missing")
    services().jobs.touch(job_id)
    return send_file(path, mimetype=CONTENT_TYPES[row["output_format"]], as_attachment=True,
                     download_name=f"long_text_{job_id}.{row['output_format']}", conditional=True)


@bp.get("/audio/speech/long/<job_id>/sse")
def job_events(job_id: str) -> Response:
    _job(job_id)
    jobs = services().jobs
    scope = guards.scope()          # read once: the generator runs after the request context
    limit = services().settings.longtext_max_sse
    if _open_streams[0] >= limit:
        raise ApiError(429, f"{limit} long-job progress streams are already open on this worker "
                            "(CHATTERBOX_LONGTEXT_MAX_SSE); poll the job's status_url instead",
                       code="too_many_streams", retry_after=5)

    response = Response(progress_events(jobs, job_id, scope), mimetype="text/event-stream", headers=SSE_HEADERS)
    _open_streams[0] += 1
    response.call_on_close(_stream_closed)         # also when the client left before the first event
    return response


def progress_events(jobs: Any, job_id: str, scope: str | None) -> Iterator[bytes]:
    """The stream's events: progress on every change (and every SSE_KEEPALIVE_SECONDS), then one
    `completed` or `error` event. A store that fails (down, or past its deadline: DatabaseUnavailable
    is an SQLAlchemyError) ends the stream with an `error` event naming the database, as the 503 of
    every other long-job route does, instead of an exception that breaks the chunked body."""
    last: tuple | None = None
    quiet_since = time.monotonic()
    while True:
        try:
            row = jobs.get(job_id, scope)
        except SQLAlchemyError as exc:
            log.warning("long-job progress stream of %s: the database is unavailable (%s); stream ended",
                        job_id, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            yield _event("error", job_id, {
                "code": "database_unavailable", "retry_after": errors.DATABASE_RETRY_SECONDS,
                "message": "the job and history database is unavailable; the job itself goes on: "
                           "reconnect shortly or poll its status_url"})
            return
        if row is None:
            yield _event("error", job_id, {"message": f"job {job_id} was deleted"})
            return
        state = (row["status"], row["completed_chunks"])
        if state != last or time.monotonic() - quiet_since > SSE_KEEPALIVE_SECONDS:
            # a paused job says nothing new: the periodic event also reveals a client that left
            last, quiet_since = state, time.monotonic()
            yield _event("progress", job_id, {
                "status": row["status"], "progress": rules.percentage(row),
                "current_chunk": row["current_chunk"], "completed_chunks": row["completed_chunks"],
                "total_chunks": row["total_chunks"],
                "estimated_remaining_seconds": rules.remaining_seconds(row)})
        if row["status"] in FINISHED:
            ok = row["status"] == COMPLETED
            yield _event("completed" if ok else "error", job_id, {
                "status": row["status"],
                "message": "Job completed successfully" if ok else (row["error"] or f"Job {row['status']}"),
                "download_url": rules.urls(job_id)["download_url"] if ok else None})
            return
        gevent.sleep(SSE_POLL_SECONDS)


def _stream_closed() -> None:
    _open_streams[0] -= 1


def _event(name: str, job_id: str, data: dict[str, Any]) -> bytes:
    payload = {"job_id": job_id, "event_type": name, **data, "timestamp": rules.iso(time.time())}
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


# -- actions --------------------------------------------------------------------------------------
@bp.put("/audio/speech/long/<job_id>/pause")
def pause(job_id: str) -> Response:
    row = _job(job_id)
    if not services().jobs.transition(job_id, PAUSABLE, paused_values()):
        raise ApiError(409, f"cannot pause job in {row['status']} state", code="invalid_state")
    return jsonify({"message": f"Job {job_id} paused successfully", "status": PAUSED})


@bp.put("/audio/speech/long/<job_id>/resume")
def resume(job_id: str) -> Response:
    row = _job(job_id)
    if not services().jobs.transition(job_id, (PAUSED,), {"status": PENDING, "processing_paused_at": None,
                                                                 "error": None}):
        raise ApiError(409, f"cannot resume job in {row['status']} state", code="invalid_state")
    services().runner.poke()
    return jsonify({"message": f"Job {job_id} resumed successfully", "status": PENDING})


@bp.delete("/audio/speech/long/<job_id>")
def cancel_or_delete(job_id: str) -> Response:
    action = _choice_arg("action", ("cancel", "delete"), "cancel")
    row = _job(job_id)
    if action == "delete":
        _delete(job_id)
        return jsonify({"message": f"Job {job_id} deleted successfully"})
    if not services().jobs.transition(job_id, CANCELLABLE, {"status": CANCELLED}):
        raise ApiError(409, f"cannot cancel job in {row['status']} state", code="invalid_state")
    return jsonify({"message": f"Job {job_id} cancelled successfully", "status": CANCELLED})


def _delete(job_id: str) -> bool:
    """Delete the row first (a runner sees it gone at its next heartbeat and stops), then the files."""
    deleted = services().jobs.delete(job_id)
    files.remove_job_files(services().jobs_root, job_id)
    return deleted


@bp.patch("/audio/speech/long/<job_id>")
def update(job_id: str) -> Response:
    _job(job_id)
    values = {k: v for k, v in load(rules.UpdateSchema(), json_object()).items() if v is not None}
    if "tags" in values:
        values["tags"] = [tag.strip() for tag in values["tags"]]
    services().jobs.update_meta(job_id, values)
    return jsonify({"success": True, "message": "Job metadata updated successfully",
                    "status": _job(job_id)["status"]})


@bp.post("/audio/speech/long/<job_id>/retry")
def retry(job_id: str) -> Response:
    row = _job(job_id)
    body = load(rules.RetrySchema(), json_object() if request.get_data() else {})
    new_row = _retry(row, body["preserve_chunks"], body["new_parameters"])
    return jsonify(_create_response(new_row, f"Retry job created successfully (retry #{new_row['retry_count']})"))


def _retry(row: dict[str, Any], preserve_chunks: bool, new_parameters: dict | None) -> dict[str, Any]:
    if row["status"] not in RETRYABLE:
        raise ApiError(400, f"cannot retry job in {row['status']} state; only failed or cancelled jobs",
                       code="invalid_state")
    params = json.loads(row["parameters"])
    new_parameters = dict(new_parameters or {})
    unknown = sorted(set(new_parameters) - set(rules.RETRY_PARAMETERS))
    if unknown:
        raise ApiError(400, f"new_parameters: cannot change {unknown[0]!r}; allowed: "
                            f"{', '.join(rules.RETRY_PARAMETERS)}", param="new_parameters")
    try:
        checked = load(rules.LongTextRequestSchema(max_input_chars=len(row["text"]) + 1),
                       {"input": row["text"], **{k: v for k, v in params.items() if k in rules.RETRY_PARAMETERS},
                        **new_parameters})
    except ApiError as exc:
        raise ApiError(exc.status, f"new_parameters.{exc.message}", code=exc.code,
                       param=f"new_parameters.{exc.param}" if exc.param else "new_parameters") from None
    if "language" in new_parameters:
        _check_language(checked["language"], services().require_engine(), "new_parameters.language")
    if "seed" in new_parameters and checked["seed"] is None:
        checked["seed"] = random_seed()             # null: a new random seed, as on creation
    changed = any(checked[k] != params.get(k) for k in rules.RETRY_PARAMETERS if k in new_parameters)
    params.update({k: checked[k] for k in rules.RETRY_PARAMETERS if k in new_parameters})
    # the same text and chunking, but checked again before any file is linked: limits may be lower now
    limits = Limits.of(services().settings)
    if params.get("script"):        # planned with the engine's tags and the speakers then: its chunks as stored
        chunks = off_hub(script.check_stored, [c["text"] for c in services().jobs.chunks(row["id"])],
                         params["streaming_chunk_size"], limits, "the job's text")
    else:
        chunks = off_hub(rules.plan_job, row["text"], params, limits, "the job's text")
    original = row["original_job_id"] or row["id"]
    job_id = str(uuid.uuid4())
    # reused chunks are linked in before the job exists, and recorded with it in one transaction:
    # no runner can claim it half-copied
    done = _reuse_chunks(row["id"], job_id, row["owner"]) if preserve_chunks and not changed else {}
    try:
        return _new_job(row["text"], chunks, row["voice"], row["output_format"], params, {
            "session_id": row["session_id"], "display_name": row["display_name"], "tags": row["tags"],
            "retry_count": row["retry_count"] + 1, "original_job_id": original}, row["owner"], job_id=job_id,
            done=done)
    except BaseException:
        files.remove_job_files(services().jobs_root, job_id)
        raise


def _reuse_chunks(source: str, target: str, owner: str | None) -> dict[int, dict[str, Any]]:
    """Chunks already made are the same audio (same text, settings and seed): hard-link their files
    (a copy where links fail), off the hub, into a folder marked as `owner`'s (its disk quota counts
    them even before the retry first runs, and once the first job is gone)."""
    root = services().jobs_root
    pairs: list[tuple[int, str, str]] = []
    done: dict[int, dict[str, Any]] = {}
    for chunk in services().jobs.chunks(source):
        path = files.recorded_path(root, source, chunk["audio_file"])
        if path is None:
            continue
        destination = files.chunk_path(root, target, chunk["idx"])
        pairs.append((chunk["idx"], path, destination))
        done[chunk["idx"]] = {"audio_file": os.path.basename(destination), "samples": chunk["samples"] or 0,
                              "synth_ms": chunk["synth_ms"] or 0}

    def link_all() -> set[int]:
        if pairs:
            files.mark_owner(root, target, owner)
        missing = set()
        for idx, path, destination in pairs:
            try:
                files.link_or_copy(path, destination)
            except FileNotFoundError:
                missing.add(idx)
        return missing

    for idx in off_hub(link_all):
        done.pop(idx)
    return done


@bp.post("/audio/speech/long/bulk")
def bulk() -> Response:
    body = load(rules.BulkSchema(), json_object())
    if not body["confirm"]:
        raise ApiError(400, "confirm: bulk operations require confirm=true", param="confirm")
    jobs = services().jobs
    failed: list[str] = []
    for job_id in body["job_ids"]:
        row = jobs.get(job_id, guards.scope())          # another key's job fails like a missing one
        ok = row is not None
        if ok and body["action"] == "delete":
            ok = _delete(job_id)
        elif ok and body["action"] in ("archive", "unarchive"):
            ok = jobs.update_meta(job_id, {"is_archived": body["action"] == "archive"})
        elif ok:
            try:
                _retry(row, True, None)
            except ApiError:
                ok = False
        if not ok:
            failed.append(job_id)
    total = len(body["job_ids"])
    done = total - len(failed)
    return jsonify({"success_count": done, "failed_count": len(failed), "total_count": total,
                    "failed_jobs": failed, "message": f"Bulk {body['action']}: {done}/{total} successful"})


# -- history --------------------------------------------------------------------------------------
@bp.get("/audio/speech/long-history")
def history() -> Response:
    jobs = services().jobs
    rows = jobs.list(status=_choice_arg("status", rules.STATUSES), session_id=request.args.get("session_id"),
                     search=request.args.get("search"), is_archived=bool_arg("is_archived", None),
                     start=_date_arg("start_date"), end=_date_arg("end_date"),
                     sort=_choice_arg("sort", tuple(SORTS), "completed_desc"),
                     limit=int_arg("limit", 50, 1, 100), offset=int_arg("offset", 0, 0, 10**9),
                     scope=guards.scope())
    counts = jobs.status_counts(guards.scope())
    return jsonify({"jobs": [rules.list_item(row) for row in rows], "total_jobs": sum(counts.values()),
                    "active_jobs": counts.get(PENDING, 0) + counts.get(rules.PROCESSING, 0),
                    "completed_jobs": counts.get(COMPLETED, 0)})


@bp.get("/audio/speech/long-history/stats")
def history_stats() -> Response:
    return jsonify(rules.history_stats(services().jobs.all_rows(request.args.get("session_id"), guards.scope())))


@bp.delete("/audio/speech/long/history")
def clear_history() -> Response:
    if not bool_arg("confirm"):
        raise ApiError(400, "confirm: history clearing requires confirm=true", param="confirm")
    session_id = request.args.get("session_id")
    cleared = failed = 0
    for status in FINISHED:
        for row in services().jobs.list(status=status, session_id=session_id, limit=10**6,
                                          scope=guards.scope()):
            if _delete(row["id"]):
                cleared += 1
            else:
                failed += 1
    return jsonify({"message": f"Cleared {cleared} jobs from history", "cleared_count": cleared,
                    "failed_count": failed})
