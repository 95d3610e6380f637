"""Long-text jobs without I/O: statuses, the request schema, and the OpenAI-style peer's JSON shapes.

Job rows are plain dicts as the store returns them (times in UNIX seconds); the shapes follow
travisvn/chatterbox-tts-api's app/models/long_text.py field for field.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from chatterbox_server.store.job_states import (  # noqa: F401 - the states are part of the job rules
    ACTIVE,
    CANCELLABLE,
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED,
    PAUSABLE,
    PAUSED,
    PENDING,
    PROCESSING,
    RETRYABLE,
    STATUSES,
)
from chatterbox_server.synthesis.budget import Ledger, Limits
from chatterbox_server.synthesis.requests import (
    GAP_MS_MAX,
    RESPONSE_FORMATS,
    SPEED_RANGE,
    SynthesisFields,
    WholeNumber,
    in_range,
    one_of,
    speakers_field,
)
from chatterbox_server.text.chunking import STRATEGIES, chunk_texts

BULK_ACTIONS = ("delete", "archive", "unarchive", "retry")
# A long job's file is kept and downloaded, at the engine's rate: raw G.711 (a wire format for
# telephony, 8 kHz, no header) is for the speech endpoints and the WebSocket layer only.
LONG_TEXT_FORMATS = tuple(fmt for fmt in RESPONSE_FORMATS if fmt not in ("mulaw", "alaw"))
DEFAULT_CHUNK_SIZE = 250


class LongTextRequestSchema(SynthesisFields):
    """POST /v1/audio/speech/long."""

    class Meta:
        unknown = RAISE

    input = fields.String(required=True)
    model = fields.String(load_default=None, allow_none=True)
    voice = fields.String(load_default=None, allow_none=True)
    response_format = fields.String(load_default="mp3", allow_none=True, validate=one_of(LONG_TEXT_FORMATS))
    speed = fields.Float(load_default=1.0, validate=in_range(*SPEED_RANGE))
    streaming_strategy = fields.String(load_default="sentence", validate=one_of(STRATEGIES))
    streaming_chunk_size = WholeNumber(load_default=DEFAULT_CHUNK_SIZE, validate=in_range(50, 500))
    session_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=128))
    display_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    tags = fields.List(fields.String(validate=validate.Length(max=50)), load_default=list,
                       validate=validate.Length(max=20))
    # a script with inline speakers (text/speakers.py): each label's voice, and the silence between turns
    speakers = speakers_field()
    gap_ms = WholeNumber(load_default=None, allow_none=True, validate=in_range(0, GAP_MS_MAX))

    def __init__(self, *, max_input_chars: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_input_chars = max_input_chars

    @validates("input")
    def _check_input(self, value: str, data_key: str) -> None:
        if not value.strip():
            raise ValidationError("Must contain text to speak.")
        if len(value) > self.max_input_chars:
            raise ValidationError(f"Longer than the limit of {self.max_input_chars} characters ({len(value)}).")


class UpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    display_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    is_archived = fields.Boolean(allow_none=True)
    tags = fields.List(fields.String(validate=validate.Length(max=50)), allow_none=True,
                       validate=validate.Length(max=20))


class BulkSchema(Schema):
    class Meta:
        unknown = RAISE

    job_ids = fields.List(fields.String(), required=True, validate=validate.Length(min=1, max=100))
    action = fields.String(required=True, validate=one_of(BULK_ACTIONS))
    confirm = fields.Boolean(required=True)


class RetrySchema(Schema):
    class Meta:
        unknown = RAISE

    preserve_chunks = fields.Boolean(load_default=True)
    new_parameters = fields.Dict(load_default=None, allow_none=True)


RETRY_PARAMETERS = ("exaggeration", "cfg_weight", "temperature", "seed", "speed", "language")


def plan_job(text: str, params: dict[str, Any], limits: Limits, what: str = "input") -> list[str]:
    """A job's chunks, its worst-case cost checked before it exists (a 413 naming the limit).

    Text preparation of a long job is chunking alone, so its prepared characters are the chunks';
    a retry keeps the text and the chunking parameters, but is checked again: the limits may have
    been lowered since, and a reused chunk whose file is gone is made again, so its worst case is
    every chunk. Cutting takes up to 0.3 s of CPU for 200,000 characters (call this off the hub), so
    a text surely over the chunk limit is refused first, in about a millisecond: no chunk is longer
    than the chunk size, so there are at least as many chunks as the size goes into the text's
    non-whitespace characters."""
    size = params["streaming_chunk_size"]
    ledger = Ledger(limits)
    ledger.check_long_chunks(-(-len("".join(text.split())) // size), size, what, at_least=True)
    chunks = chunk_texts(text, params["streaming_strategy"], size)
    ledger.add_long_text(chunks, size, what)
    return chunks


# -- shapes ---------------------------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


def urls(job_id: str) -> dict[str, str]:
    base = f"/v1/audio/speech/long/{job_id}"
    return {"status_url": base, "sse_url": f"{base}/sse", "download_url": f"{base}/download"}


def percentage(row: dict[str, Any]) -> float:
    if row["status"] == COMPLETED:
        return 100.0
    total = max(row["total_chunks"], 1)
    return round(100.0 * row["completed_chunks"] / total, 1)


def remaining_seconds(row: dict[str, Any]) -> int | None:
    done = row["completed_chunks"]
    if row["status"] in FINISHED or not done:
        return None
    per_chunk = row["total_processing_time_ms"] / 1000.0 / done
    return int(per_chunk * (row["total_chunks"] - done))


def describe_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chunk row as the peer shows it, with its voice (and, in a script, its turn and the silence
    after it) when the caller added them to the row."""
    samples, rate = chunk.get("samples"), chunk.get("sample_rate")
    described = {"index": chunk["idx"], "text": chunk["text"], "text_preview": chunk["text"][:50],
                 "character_count": len(chunk["text"]), "audio_file": chunk["audio_file"],
                 "duration_ms": int(1000 * samples / rate) if samples is not None and rate else None,
                 "processing_started_at": iso(chunk["started_at"]),
                 "processing_completed_at": iso(chunk["completed_at"]), "error": None}
    for name in ("voice", "turn", "pause_after_ms"):
        if name in chunk:
            described[name] = chunk[name]
    return described


def public_parameters(raw: str) -> dict[str, Any]:
    """The job's parameters as the API shows them: without its script (a list per chunk)."""
    params = json.loads(raw)
    params.pop("script", None)
    return params


def script_summary(raw: str) -> dict[str, Any] | None:
    """A scripted job's turns, voices and dropped tags (None for plain text)."""
    script = json.loads(raw).get("script")
    if not script:
        return None
    return {"turns": script.get("turn_count", 1), "voices": script.get("voices", []),
            "dropped_tags": script.get("dropped_tags", []),
            "lead_pause_ms": round(1000 * script.get("lead", 0.0))}


def metadata(row: dict[str, Any]) -> dict[str, Any]:
    finished_ok = row["status"] == COMPLETED
    return {
        "job_id": row["id"], "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "status": row["status"], "text_length": row["text_length"], "text_hash": row["text_hash"],
        "total_chunks": row["total_chunks"], "completed_chunks": row["completed_chunks"], "failed_chunks": [],
        "current_chunk": row["current_chunk"], "voice": row["voice"],
        "parameters": public_parameters(row["parameters"]), "script": script_summary(row["parameters"]),
        "processing_started_at": iso(row["processing_started_at"]),
        "processing_paused_at": iso(row["processing_paused_at"]),
        "processing_completed_at": iso(row["processing_completed_at"]),
        "total_processing_time_ms": row["total_processing_time_ms"], "output_format": row["output_format"],
        "output_path": urls(row["id"])["download_url"] if finished_ok else None,
        "output_size_bytes": row["output_size_bytes"], "output_duration_seconds": row["output_duration_seconds"],
        "error": row["error"], "user_session_id": row["session_id"],
        "completion_timestamp": iso(row["processing_completed_at"]) if finished_ok else None,
        "audio_file_path": urls(row["id"])["download_url"] if finished_ok else None,
        "audio_file_size": row["output_size_bytes"], "total_duration_seconds": row["output_duration_seconds"],
        "retry_count": row["retry_count"], "original_job_id": row["original_job_id"],
        "is_archived": bool(row["is_archived"]), "last_accessed": iso(row["last_accessed"]),
        "display_name": row["display_name"], "tags": json.loads(row["tags"] or "[]"),
    }


def progress(row: dict[str, Any], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    done = [describe_chunk(c) for c in chunks if c["audio_file"]]
    current = next((c for c in chunks if not c["audio_file"]), None) if row["status"] == PROCESSING else None
    return {"job_id": row["id"], "overall_progress": percentage(row),
            "current_chunk": describe_chunk(current) if current else None, "completed_chunks": done,
            "estimated_remaining_seconds": remaining_seconds(row), "status": row["status"], "error": row["error"]}


def job_response(row: dict[str, Any], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"job_id": row["id"], "status": row["status"], "progress": progress(row, chunks),
            "metadata": metadata(row), "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
            "download_url": urls(row["id"])["download_url"] if row["status"] == COMPLETED else None,
            "can_pause": row["status"] in PAUSABLE, "can_resume": row["status"] == PAUSED,
            "can_cancel": row["status"] in CANCELLABLE}


def list_item(row: dict[str, Any]) -> dict[str, Any]:
    preview = row.get("text_preview") or row.get("text", "")[:100]
    return {"job_id": row["id"], "status": row["status"], "text_preview": preview,
            "text_length": row["text_length"], "progress_percentage": percentage(row),
            "created_at": iso(row["created_at"]), "completed_at": iso(row["processing_completed_at"]),
            "download_url": urls(row["id"])["download_url"] if row["status"] == COMPLETED else None,
            "can_resume": row["status"] == PAUSED, "voice": row["voice"],
            "estimated_remaining_seconds": remaining_seconds(row),
            "total_duration_seconds": row["output_duration_seconds"], "audio_file_size": row["output_size_bytes"],
            "retry_count": row["retry_count"], "is_archived": bool(row["is_archived"]),
            "display_name": row["display_name"], "tags": json.loads(row["tags"] or "[]"),
            "last_accessed": iso(row["last_accessed"]), "parameters": public_parameters(row["parameters"])}


def history_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    completed = [r for r in rows if r["status"] == COMPLETED]
    failed = [r for r in rows if r["status"] == FAILED]
    voices: dict[str, int] = {}
    months: dict[str, int] = {}
    for r in rows:
        voices[r["voice"] or "default"] = voices.get(r["voice"] or "default", 0) + 1
        month = datetime.fromtimestamp(r["created_at"], timezone.utc).strftime("%Y-%m")
        months[month] = months.get(month, 0) + 1
    ended = len(completed) + len(failed)
    return {"total_jobs": len(rows), "completed_jobs": len(completed), "failed_jobs": len(failed),
            "total_audio_duration_seconds": round(sum(r["output_duration_seconds"] or 0 for r in completed), 3),
            "total_storage_bytes": sum(r["output_size_bytes"] or 0 for r in completed),
            "average_processing_time_seconds": round(
                sum(r["total_processing_time_ms"] for r in completed) / 1000 / len(completed), 3) if completed else 0.0,
            "success_rate_percentage": round(100.0 * len(completed) / ended, 1) if ended else 0.0,
            "most_used_voice": max(voices, key=voices.get) if voices else None, "jobs_by_month": months}
