"""Request history (bounded) and running statistics (unbounded totals) in the database."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from chatterbox_server.store.db import Database, guard_methods, reading
from chatterbox_server.store.tables import counters, request_history

COUNTERS = ("total_requests", "completed_requests", "error_requests", "sum_duration_seconds",
            "sum_text_length", "sum_audio_seconds", "memory_counter_base")


@guard_methods
class HistoryStore:
    def __init__(self, engine: Engine, max_records: int, database: Database | None = None) -> None:
        self.engine = engine
        self.max_records = max_records
        self.database = database
        if database is None:
            self._ensure_counters()
        else:
            database.on_ready(self._ensure_counters)        # once the database answers, not at boot

    def _ensure_counters(self) -> None:
        for name in COUNTERS:
            try:
                with self.engine.begin() as conn:
                    if conn.execute(select(counters.c.name).where(counters.c.name == name)).first() is None:
                        conn.execute(insert(counters).values(name=name, value=0.0))
            except IntegrityError:
                pass        # another process inserted it first

    def _add(self, conn, **amounts: float) -> None:  # noqa: ANN001 - a Connection
        for name, amount in amounts.items():
            conn.execute(update(counters).where(counters.c.name == name).values(value=counters.c.value + amount))

    def request_started(self) -> None:
        with self.engine.begin() as conn:
            self._add(conn, total_requests=1)

    def record(self, entry: dict[str, Any]) -> None:
        ok = entry["status"] == "completed"
        with self.engine.begin() as conn:
            conn.execute(insert(request_history).values(**{**entry, "parameters": json.dumps(entry["parameters"])}))
            self._add(conn, completed_requests=1 if ok else 0, error_requests=0 if ok else 1,
                      sum_duration_seconds=entry["end_time"] - entry["start_time"] if ok else 0,
                      sum_text_length=entry["text_length"] if ok else 0,
                      sum_audio_seconds=entry["audio_seconds"])
            newest = conn.execute(select(func.max(request_history.c.id))).scalar_one()
            conn.execute(delete(request_history).where(request_history.c.id <= newest - self.max_records))

    def history(self, limit: int, scope: str | None = None) -> list[dict[str, Any]]:
        """The newest records: every workspace's (`scope` None) or one owner's."""
        query = select(request_history)
        if scope is not None:
            query = query.where(request_history.c.owner == scope)
        with reading(self.engine) as conn:
            rows = conn.execute(query.order_by(request_history.c.id.desc()).limit(limit)).mappings().all()
        return [dict(row) for row in rows]

    def clear(self, scope: str | None = None) -> int:
        query = delete(request_history)
        if scope is not None:
            query = query.where(request_history.c.owner == scope)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount

    def totals(self) -> dict[str, float]:
        with reading(self.engine) as conn:
            return {name: value for name, value in conn.execute(select(counters.c.name, counters.c.value)).all()}

    def value(self, name: str, default: float) -> float:
        with reading(self.engine) as conn:
            found = conn.execute(select(counters.c.value).where(counters.c.name == name)).first()
        return found.value if found else default

    def set_value(self, name: str, value: float) -> None:
        with self.engine.begin() as conn:
            if conn.execute(update(counters).where(counters.c.name == name).values(value=value)).rowcount == 0:
                conn.execute(insert(counters).values(name=name, value=value))

    def reset_memory_counter(self) -> int:
        """Restart /memory's request_counter at 0; returns its value before."""
        with self.engine.begin() as conn:
            values: dict[str, int] = {row[0]: row[1] for row in conn.execute(select(counters.c.name, counters.c.value))}
            conn.execute(update(counters).where(counters.c.name == "memory_counter_base")
                         .values(value=values["total_requests"]))
        return int(values["total_requests"] - values["memory_counter_base"])

    def memory_counter(self) -> int:
        totals = self.totals()
        return int(totals["total_requests"] - totals["memory_counter_base"])


def describe_entry(row: dict[str, Any]) -> dict[str, Any]:
    """The peer's request-history record (its TTSRequestInfo), plus the audio produced."""
    done = row["status"] == "completed"
    return {"request_id": row["request_id"], "status": row["status"], "start_time": row["start_time"],
            "end_time": row["end_time"], "duration_seconds": round(row["end_time"] - row["start_time"], 3),
            "text_length": row["text_length"], "text_preview": row["text_preview"],
            "voice_source": row["voice_source"], "parameters": json.loads(row["parameters"]),
            "progress": {"current_chunk": row["total_chunks"] if done else None, "total_chunks": row["total_chunks"],
                         "current_step": "Completed" if done else "Error",
                         "progress_percentage": 100.0 if done else 0.0, "estimated_completion": None},
            "error_message": row["error_message"], "memory_usage": {}, "endpoint": row["endpoint"],
            "audio_seconds": round(row["audio_seconds"], 3)}


def statistics(totals: dict[str, float], is_processing: bool) -> dict[str, Any]:
    completed, errors = int(totals["completed_requests"]), int(totals["error_requests"])
    return {"total_requests": int(totals["total_requests"]), "completed_requests": completed,
            "error_requests": errors,
            "success_rate": round(100.0 * completed / max(1, completed + errors), 2),
            "average_duration_seconds": round(totals["sum_duration_seconds"] / completed, 3) if completed else 0.0,
            "average_text_length": round(totals["sum_text_length"] / completed, 1) if completed else 0.0,
            "is_processing": is_processing,
            "total_characters": int(totals["sum_text_length"]),
            "total_audio_seconds": round(totals["sum_audio_seconds"], 3),
            "total_duration_seconds": round(totals["sum_duration_seconds"], 3)}
