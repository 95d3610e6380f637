"""A long job's progress stream (GET .../long/{id}/sse) when the job store fails mid-stream: the
stream ends with one clean SSE `error` event naming the database, never a broken chunked body."""
from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import OperationalError

from chatterbox_server.api.openai import long_text
from chatterbox_server.store.db import DatabaseUnavailable
from chatterbox_server.synthesis.longjobs.rules import PROCESSING

ROW = {"id": "book", "status": PROCESSING, "completed_chunks": 1, "total_chunks": 4, "current_chunk": 1,
       "total_processing_time_ms": 1000, "error": None}


class FailingStore:
    """Answers `good` reads, then raises what a down (or hung) database raises."""

    def __init__(self, error: Exception, good: int = 1) -> None:
        self.error, self.good, self.reads = error, good, 0

    def get(self, job_id, scope=None):  # noqa: ANN001, ANN201 - JobStore.get
        self.reads += 1
        if self.reads > self.good:
            raise self.error
        return dict(ROW)


def parse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.parametrize("error", [
    OperationalError("SELECT 1", {}, Exception("connection refused")),
    DatabaseUnavailable("the database did not answer within 10 s"),     # the store's deadline
], ids=["sqlalchemy", "deadline"])
def test_a_database_outage_ends_the_stream_with_an_error_event(monkeypatch, error):
    monkeypatch.setattr(long_text, "SSE_POLL_SECONDS", 0)
    store = FailingStore(error, good=2)
    raw = b"".join(long_text.progress_events(store, "book", None))     # ends: no exception escapes
    events = parse(raw)
    assert [name for name, _ in events] == ["progress", "error"]
    name, data = events[-1]
    assert data["code"] == "database_unavailable" and data["job_id"] == "book"
    assert "database" in data["message"] and data["retry_after"] > 0
    assert raw.endswith(b"\n\n")


def test_an_outage_at_the_first_read_still_sends_a_well_formed_event(monkeypatch):
    monkeypatch.setattr(long_text, "SSE_POLL_SECONDS", 0)
    events = parse(b"".join(long_text.progress_events(FailingStore(DatabaseUnavailable("down"), good=0),
                                                      "book", None)))
    assert [(name, data["code"]) for name, data in events] == [("error", "database_unavailable")]
