"""Progress of the requests in flight, shared by every front worker through small JSON files.

Each front worker owns one file in the pool's run directory and rewrites it (atomically) when one
of its requests starts, finishes a chunk or ends; /v1/status reads every live worker's file.
"""
from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Callable
from typing import Any

from chatterbox_server.security.keys import REQUEST_OWNER
from workers.ipc.board import pid_alive


class Progress:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, f"{os.getpid()}.json")
        self.active: dict[str, dict[str, Any]] = {}

    def begin(self, request_id: str, total_chunks: int, text_preview: str) -> None:
        self.active[request_id] = {"request_id": request_id, "front_worker_pid": os.getpid(),
                                   "started_at": time.time(),
                                   "current_chunk": 0, "total_chunks": total_chunks,
                                   "text_preview": text_preview, "owner": REQUEST_OWNER.get()}
        self._save()

    def chunk_done(self, request_id: str, done: int) -> None:
        if request_id in self.active:
            self.active[request_id]["current_chunk"] = done
            self._save()

    def note(self, request_id: str, stage: str | None) -> None:
        """What the request waits for besides its chunks (`loading model`); None: synthesizing again."""
        if request_id in self.active:
            self.active[request_id]["stage"] = stage
            self._save()

    def end(self, request_id: str, result: object | None = None, error: str | None = None) -> None:
        """`result` (the job's JobDone, None if it did not complete) and `error` serve subclasses."""
        if self.active.pop(request_id, None) is not None:
            self._save()

    def _save(self) -> None:
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(list(self.active.values()), f)
        os.replace(temporary, self.path)

    def all_active(self, can_see_text: Callable[[str | None], bool] = lambda owner: True,
                   show_pids: bool = True) -> list[dict[str, Any]]:
        """Every request in flight on any live front worker, oldest first, as the seed's progress object;
        the text previews of requests `can_see_text` refuses (by the key that sent them) are None, and
        so is every front_worker_pid unless `show_pids`."""
        entries: list[dict[str, Any]] = []
        for path in glob.glob(os.path.join(self.directory, "*.json")):
            if not pid_alive(int(os.path.basename(path).split(".")[0])):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    entries.extend(json.load(f))
            except (OSError, ValueError):
                continue
        described = [describe(entry, hide_text=not can_see_text(entry.get("owner")))
                     for entry in sorted(entries, key=lambda e: e["started_at"])]
        return described if show_pids else [{**entry, "front_worker_pid": None} for entry in described]


def describe(entry: dict[str, Any], now: float | None = None, hide_text: bool = False) -> dict[str, Any]:
    now = time.time() if now is None else now
    done, total = entry["current_chunk"], max(entry["total_chunks"], 1)
    elapsed = now - entry["started_at"]
    estimate = entry["started_at"] + elapsed * total / done if done else None
    loading = entry.get("stage") == "loading model"
    return {"request_id": entry["request_id"], "front_worker_pid": entry["front_worker_pid"],
            "is_processing": True, "status": "loading_model" if loading else "generating_audio",
            "current_step": "Loading model" if loading else f"Streaming audio for chunk {min(done + 1, total)}/{total}",
            "current_chunk": done, "total_chunks": entry["total_chunks"],
            "progress_percentage": round(100.0 * done / total, 1), "duration_seconds": round(elapsed, 3),
            "estimated_completion": estimate, "text_preview": None if hide_text else entry["text_preview"]}


IDLE = {"is_processing": False, "status": "idle", "current_step": None, "current_chunk": 0, "total_chunks": 0,
        "progress_percentage": 0.0, "duration_seconds": 0.0, "estimated_completion": None, "text_preview": None}

