"""The error log behind /api/v1/errors/* (chatterbox_server/store/errorlog.py)."""
from __future__ import annotations

import multiprocessing

from chatterbox_server.store import errorlog
from chatterbox_server.store.errorlog import ErrorLog, classify


def test_summary_counts_the_window(tmp_path):
    log = ErrorLog(str(tmp_path / "errors.jsonl"))
    log.record(400, "invalid_value", "POST /api/v1/tts", "text: empty", now=1000.0)
    log.record(404, "not_found", "GET /outputs/x", "no such file", now=90_000.0)
    log.record(503, "model_unavailable", "POST /api/v1/tts", "loading", now=90_001.0)
    summary = log.summary(hours=24, now=90_002.0)
    assert summary["total_errors"] == 2            # the first one is older than 24 h
    assert summary["by_category"] == {"not_found": 1, "capacity": 1}
    assert summary["by_severity"] == {"low": 1, "high": 1}
    assert summary["by_operation"] == {"GET /outputs/x": 1, "POST /api/v1/tts": 1}
    assert summary["unresolved_count"] == 1
    recent = log.recent(2)
    assert [r["status"] for r in recent] == [503, 404] and recent[0]["timestamp"].startswith("1970-01-02")


def test_classify():
    assert classify(400) == ("validation", "low") and classify(500) == ("internal", "critical")
    assert classify(401)[0] == "authentication" and classify(413)[0] == "resource"


def test_an_empty_log(tmp_path):
    log = ErrorLog(str(tmp_path / "none.jsonl"))
    assert log.read() == [] and log.summary()["total_errors"] == 0 and log.recent(5) == []


def _write_many(path: str, tag: str) -> None:
    log = ErrorLog(path)
    for i in range(200):
        log.record(400, "invalid_value", "POST /api/v1/tts", f"{tag}-{i}")


def test_processes_appending_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "errors.jsonl")
    workers = [multiprocessing.get_context("fork").Process(target=_write_many, args=(path, t)) for t in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(ErrorLog(path).read()) == 400


def test_the_log_shrinks_past_its_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(errorlog, "MAX_BYTES", 2000)
    log = ErrorLog(str(tmp_path / "errors.jsonl"))
    for i in range(100):
        log.record(400, "invalid_value", "POST /api/v1/tts", f"message {i}")
    records = log.read()
    assert 0 < len(records) < 100 and records[-1].message == "message 99"
    assert (tmp_path / "errors.jsonl").stat().st_size <= 2000 + 300
