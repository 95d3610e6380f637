"""The OpenAI-style family's management routes on a real server: history and statistics from real requests,
memory actions in every model worker, information endpoints, aliases on both ports, and the
long-text endpoints' validation and bookkeeping."""
from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.server
LONG = "/v1/audio/speech/long"


def test_history_and_statistics_come_from_real_requests(tone_server):
    before = requests.get(tone_server.url("/v1/status/statistics")).json()
    ok = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "Four words right here.", "voice": "alloy"})
    assert ok.status_code == 200
    failed = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "This one [[fail]]"})
    assert failed.status_code == 400
    stream = requests.post(tone_server.url("/tts/stream"), json={"input": "Streamed words."})
    assert stream.status_code == 200 and stream.content
    # history is written by each front worker's background writer (the database may be down): a
    # read on the other front worker sees a request finished a moment later
    deadline = time.monotonic() + 5
    while True:
        after = requests.get(tone_server.url("/stats")).json()
        if after["completed_requests"] + after["error_requests"] >= before["completed_requests"] + \
                before["error_requests"] + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after["total_requests"] == before["total_requests"] + 3
    assert after["completed_requests"] == before["completed_requests"] + 2
    assert after["error_requests"] == before["error_requests"] + 1
    assert after["total_characters"] == before["total_characters"] + len("Four words right here.Streamed words.")
    assert after["total_audio_seconds"] > before["total_audio_seconds"]
    newest = requests.get(tone_server.url("/v1/status/history?limit=2")).json()
    assert newest["total_records"] == 2 and newest["limit"] == 2
    stream_entry, failed_entry = newest["request_history"]
    assert stream_entry["status"] == "completed" and stream_entry["endpoint"] == "/v1/audio/speech/stream"
    assert failed_entry["status"] == "error" and failed_entry["text_preview"] == "This one [[fail]]"
    assert requests.get(tone_server.url("/v1/status/history?limit=0")).json()["error"]["param"] == "limit"
    refused = requests.post(tone_server.url("/v1/status/history/clear"))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "confirm"
    assert requests.post(tone_server.url("/status/history/clear?confirm=true")).json()["success"]
    assert requests.get(tone_server.url("/history")).json()["total_records"] == 0
    assert requests.get(tone_server.url("/stats")).json()["total_requests"] == after["total_requests"]
    status = requests.get(tone_server.url("/status?include_stats=true&include_history=true")).json()
    assert status["is_processing"] is False and "statistics" in status and "request_history" in status


def test_history_records_the_extended_familys_text_and_voice(tone_server):
    text = "Extended words here."
    made = requests.post(tone_server.extended_base + "/api/v1/tts",
                         json={"text": text, "bypass_whisper_checking": True, "export_formats": ["wav"]})
    assert made.status_code == 200, made.text
    entry = requests.get(tone_server.url("/v1/status/history?limit=1")).json()["request_history"][0]
    assert entry["endpoint"] == "/api/v1/tts" and entry["text_length"] == len(text)
    assert entry["text_preview"] == text and entry["voice_source"] == "default"


def test_memory_actions_reach_every_model_worker(tone_server):
    requests.post(tone_server.url("/v1/audio/speech"), json={"input": "Count this one."})
    memory = requests.get(tone_server.url("/memory")).json()
    assert memory["memory_info"]["cpu_memory_mb"] > 0 and memory["request_counter"] >= 1
    cleaned = requests.get(tone_server.url("/v1/memory?cleanup=true&force_cuda_clear=true")).json()
    assert cleaned["cleanup_performed"] is True and cleaned["cuda_cache_cleared"] is False   # tone: CPU
    (worker,) = cleaned["model_workers"]
    assert worker["collected_objects"] >= 0 and worker["rss_mb_after"] > 0 and "memory_info_after_cleanup" in cleaned
    assert requests.post(tone_server.url("/memory/reset")).status_code == 400
    reset = requests.post(tone_server.url("/memory/reset?confirm=true")).json()
    assert reset["status"] == "reset" and reset["previous_request_counter"] >= 1
    assert requests.get(tone_server.url("/memory")).json()["request_counter"] == 0
    assert requests.get(tone_server.url("/memory?cleanup=maybe")).status_code == 400
    bad = requests.post(tone_server.url("/memory/config?cpu_memory_percent=99"))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "cpu_memory_percent"
    updated = requests.post(tone_server.url("/memory/config?cpu_memory_percent=70")).json()
    assert updated["new_thresholds"]["cpu_memory_percent"] == 70
    for _ in range(4):      # kept in the database: every front worker answers with the new value
        assert requests.get(tone_server.url("/memory/config")).json()["alert_thresholds"]["cpu_memory_percent"] == 70
    assert "recommendations" in requests.get(tone_server.url("/memory/recommendations")).json()


@pytest.mark.parametrize("path", ["/ping", "/v1/ping", "/config", "/info", "/api/info", "/languages", "/endpoints",
                                  "/routes", "/v1/health", "/voice-library", "/voice_library", "/processing",
                                  "/processing/status", "/progress", "/history", "/stats", "/v1/memory/config"])
def test_information_and_alias_paths_answer_on_both_ports(tone_server, path):
    for base in (tone_server.base, tone_server.extended_base):
        response = requests.get(base + path)
        assert response.status_code == 200, (base, path, response.text)


def test_tts_alias_speaks_like_its_primary(tone_server):
    body = {"input": "Same words here.", "seed": 3}
    assert requests.post(tone_server.url("/tts"), json=body).content == \
        requests.post(tone_server.url("/v1/audio/speech"), json=body).content
    endpoints = requests.get(tone_server.url("/endpoints")).json()
    assert endpoints["mappings"]["/audio/speech"]["aliases"] == ["/v1/audio/speech", "/tts"]


def test_long_text_input_is_checked_and_jobs_are_managed(tone_server):
    too_long = requests.post(tone_server.url(LONG), json={"input": "x" * 200_001})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "input"
    for field, value in (("tags", ["t"] * 21), ("response_format", "ogg"), ("voice", "nobody"), ("speed", 0)):
        response = requests.post(tone_server.url(LONG), json={"input": "Hello there.", field: value})
        assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text
    assert requests.get(tone_server.url(f"{LONG}/missing")).status_code == 404
    created = requests.post(tone_server.url(LONG), json={"input": "One. Two. Three.", "response_format": "flac",
                                                         "display_name": "short", "tags": ["a"]}).json()
    job_id = created["job_id"]
    assert created["status_url"] == f"{LONG}/{job_id}" and created["total_chunks"] == 1
    deadline = time.monotonic() + 20
    while requests.get(tone_server.url(f"{LONG}/{job_id}")).json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    events = requests.get(tone_server.url(f"{LONG}/{job_id}/sse"), timeout=10)
    assert events.headers["Content-Type"].startswith("text/event-stream")
    assert "event: progress" in events.text and "event: completed" in events.text
    download = requests.get(tone_server.url(f"{LONG}/{job_id}/download"))
    assert download.status_code == 200 and download.content[:4] == b"fLaC"
    patched = requests.patch(tone_server.url(f"{LONG}/{job_id}"), json={"display_name": "renamed", "tags": [" b "]})
    assert patched.json()["success"] and patched.json()["status"] == "completed"
    details = requests.get(tone_server.url(f"{LONG}/{job_id}/details")).json()
    assert details["metadata"]["display_name"] == "renamed" and details["metadata"]["tags"] == ["b"]
    assert details["input_text"] == "One. Two. Three." and details["chunks"][0]["duration_ms"] > 0
    assert requests.put(tone_server.url(f"{LONG}/{job_id}/pause")).status_code == 409
    assert requests.post(tone_server.url(f"{LONG}/{job_id}/retry"), json={}).status_code == 400
    search = requests.get(tone_server.url("/v1/audio/speech/long-history?search=renamed")).json()
    assert [job["job_id"] for job in search["jobs"]] == [job_id]
    assert requests.get(tone_server.url("/v1/audio/speech/long-history?sort=bogus")).status_code == 400
    bulk = requests.post(tone_server.url(f"{LONG}/bulk"), json={"job_ids": [job_id, "missing"], "action": "archive",
                                                                "confirm": True}).json()
    assert bulk["success_count"] == 1 and bulk["failed_jobs"] == ["missing"]
    assert requests.get(tone_server.url(f"{LONG}/{job_id}")).json()["metadata"]["is_archived"] is True
    stats = requests.get(tone_server.url("/v1/audio/speech/long-history/stats")).json()
    assert stats["completed_jobs"] >= 1 and stats["total_storage_bytes"] > 0
    assert requests.delete(tone_server.url(f"{LONG}/history")).status_code == 400
    cleared = requests.delete(tone_server.url(f"{LONG}/history?confirm=true")).json()
    assert cleared["cleared_count"] >= 1
    assert requests.get(tone_server.url(f"{LONG}/{job_id}")).status_code == 404
