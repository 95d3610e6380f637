"""Request history: the progress tracker of every speech request, which also records each one
in the database when it ends (status, duration, characters, audio seconds, error)."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import has_request_context, request

from chatterbox_server.bodies import json_or_none
from chatterbox_server.progress import Progress
from chatterbox_server.store.history_db import HistoryStore

log = logging.getLogger("chatterbox.history")
RECORDED_PARAMETERS = ("model", "response_format", "stream_format", "speed", "exaggeration", "cfg_weight",
                       "temperature", "seed", "language", "streaming_strategy", "streaming_chunk_size")


class RecordingProgress(Progress):
    def __init__(self, directory: str, history: HistoryStore) -> None:
        super().__init__(directory)
        self.history = history
        self.pending: dict[str, dict[str, Any]] = {}

    def begin(self, request_id: str, total_chunks: int, text_preview: str) -> None:
        super().begin(request_id, total_chunks, text_preview)
        data = _request_fields()
        text = next((data[key] for key in ("input", "text") if isinstance(data.get(key), str)), "")  # /v1, /api/v1
        voice = data.get("voice") or data.get("reference_audio_filename") or data.get("target_voice_source")
        self.pending[request_id] = {
            "request_id": request_id, "endpoint": request.path if has_request_context() else "",
            "start_time": time.time(), "text_length": len(text),
            "text_preview": text[:100] + ("..." if len(text) > 100 else "") if text else text_preview,
            "voice_source": str(voice or "default")[:128],
            "parameters": {k: data[k] for k in RECORDED_PARAMETERS if k in data}, "total_chunks": total_chunks,
            "owner": self.active[request_id]["owner"]}      # the key's workspace: only it sees the text
        try:
            self.history.request_started()
        except Exception:  # noqa: BLE001 - history must never fail a request
            log.exception("could not count request %s", request_id)

    def end(self, request_id: str, result: object | None = None, error: str | None = None) -> None:
        super().end(request_id, result, error)
        entry = self.pending.pop(request_id, None)
        if entry is None:
            return
        ok = result is not None
        entry.update(end_time=time.time(), status="completed" if ok else "error",
                     audio_seconds=getattr(result, "audio_seconds", 0.0) if ok else 0.0,
                     error_message=None if ok else (error or "the request did not complete"))
        try:
            self.history.record(entry)
        except Exception:  # noqa: BLE001
            log.exception("could not record request %s in the history", request_id)


def _request_fields() -> dict[str, Any]:
    if not has_request_context():
        return {}
    data = json_or_none() if request.is_json else request.form.to_dict()
    return data if isinstance(data, dict) else {}
