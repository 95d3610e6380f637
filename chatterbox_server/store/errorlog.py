"""The error log behind /api/v1/errors/*: one JSON line per error answer, shared by every front worker.

Lines are appended with a single O_APPEND write (atomic for lines this short on a local file
system), so the front workers need no lock. The file is cut to its newer half when it grows past
MAX_BYTES. No Flask here.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

MAX_BYTES = 1024 * 1024
MESSAGE_CHARS = 500


@dataclass(frozen=True)
class ErrorRecord:
    timestamp: float
    status: int
    error_code: str
    operation: str             # "POST /api/v1/tts"
    message: str
    category: str              # validation, authentication, not_found, resource, capacity, generation, internal
    severity: str              # low, medium, high, critical
    owner: str | None = None   # the API key's workspace: its texts name its voices and files

    def describe(self) -> dict:
        return {**asdict(self), "timestamp": datetime.fromtimestamp(self.timestamp, timezone.utc).isoformat(),
                "resolved": self.status < 500}


def classify(status: int) -> tuple[str, str]:
    """(category, severity) of an answer's status."""
    if status in (401, 403):
        return "authentication", "medium"
    if status == 404:
        return "not_found", "low"
    if status in (413, 429):
        return "resource", "medium"
    if status < 500:
        return "validation", "low"
    if status in (503, 504):
        return "capacity", "high"
    return ("internal", "critical") if status == 500 else ("generation", "high")


class ErrorLog:
    def __init__(self, path: str) -> None:
        self.path = path

    def record(self, status: int, error_code: str, operation: str, message: str, now: float | None = None,
               owner: str | None = None) -> None:
        category, severity = classify(status)
        entry = ErrorRecord(time.time() if now is None else now, status, error_code, operation,
                            message[:MESSAGE_CHARS], category, severity, owner)
        line = (json.dumps(asdict(entry), separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > MAX_BYTES:
            self._shrink()

    def _shrink(self) -> None:
        records = self.read()
        keep = records[len(records) // 2:]
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(r), separators=(",", ":")) + "\n" for r in keep)
        os.replace(temporary, self.path)

    def read(self) -> list[ErrorRecord]:
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(ErrorRecord(**json.loads(line)))
            except (ValueError, TypeError):
                continue        # a line cut by a concurrent shrink
        return records

    def recent(self, count: int, owns: Callable[[str | None], bool] = lambda owner: True) -> list[dict]:
        mine = [r for r in self.read() if owns(r.owner)]
        return [r.describe() for r in reversed(mine[-count:])] if count > 0 else []

    def summary(self, hours: float = 24.0, now: float | None = None,
                owns: Callable[[str | None], bool] = lambda owner: True) -> dict:
        since = (time.time() if now is None else now) - hours * 3600
        window = [r for r in self.read() if r.timestamp >= since and owns(r.owner)]
        return {
            "total_errors": len(window),
            "by_category": dict(Counter(r.category for r in window)),
            "by_severity": dict(Counter(r.severity for r in window)),
            "by_operation": dict(Counter(r.operation for r in window)),
            "most_frequent": dict(Counter(f"{r.error_code}: {r.message[:80]}" for r in window).most_common(5)),
            "unresolved_count": sum(1 for r in window if r.status >= 500),
            "window_hours": hours,
        }
