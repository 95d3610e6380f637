"""Pure parts of long-text jobs and the management API: shapes, limits, aliases, joining chunks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from marshmallow import ValidationError

from chatterbox_server.api.openai.aliases import PEER_TABLE, REWRITES, compile_rewrites, rewrite
from chatterbox_server.audio.encoders import encode_whole
from chatterbox_server.synthesis.longjobs import files, rules


def row(**values) -> dict:
    base = {"id": "j1", "status": "processing", "created_at": 1.0, "updated_at": 2.0, "text": "Hello. " * 30,
            "text_length": 210, "text_hash": "h", "total_chunks": 4, "completed_chunks": 1, "current_chunk": 1,
            "voice": None, "parameters": json.dumps({"seed": 3}), "output_format": "mp3", "output_path": None,
            "output_size_bytes": None, "output_duration_seconds": None, "sample_rate": 24000, "error": None,
            "session_id": None, "display_name": None, "tags": "[]", "is_archived": False, "retry_count": 0,
            "original_job_id": None, "attempts": 1, "last_accessed": None, "processing_started_at": 1.5,
            "processing_paused_at": None, "processing_completed_at": None, "total_processing_time_ms": 2000,
            "lease_owner": "x", "lease_expires": 9.0}
    return {**base, **values}


def test_the_request_schema_names_the_field_beyond_a_limit():
    schema = rules.LongTextRequestSchema(max_input_chars=100)
    with pytest.raises(ValidationError) as too_long:
        schema.load({"input": "x" * 101})
    assert "input" in too_long.value.messages
    for field, value in (("tags", ["t"] * 21), ("tags", ["x" * 51]), ("display_name", "n" * 201),
                         ("response_format", "ogg"), ("response_format", "mulaw"), ("sample_rate", 8000),
                         ("streaming_chunk_size", 20), ("speed", 9), ("shout", 1)):
        with pytest.raises(ValidationError) as error:
            schema.load({"input": "hi", field: value})
        assert field in error.value.messages
    loaded = schema.load({"input": "hi"})
    assert loaded["response_format"] == "mp3" and loaded["streaming_chunk_size"] == rules.DEFAULT_CHUNK_SIZE


def test_job_response_has_the_peer_fields_and_an_honest_estimate():
    chunks = [{"idx": i, "text": f"chunk {i}", "audio_file": "f" if i == 0 else None, "samples": 24000,
               "started_at": 1.0, "completed_at": 2.0, "sample_rate": 24000} for i in range(4)]
    response = rules.job_response(row(), chunks)
    assert set(response) == {"job_id", "status", "progress", "metadata", "created_at", "updated_at",
                             "download_url", "can_pause", "can_resume", "can_cancel"}
    assert response["progress"]["overall_progress"] == 25.0
    assert response["progress"]["estimated_remaining_seconds"] == 6          # 2 s per chunk, 3 left
    assert response["progress"]["current_chunk"]["index"] == 1
    assert response["progress"]["completed_chunks"][0]["duration_ms"] == 1000
    assert response["can_pause"] and not response["can_resume"] and response["download_url"] is None
    done = rules.job_response(row(status="completed", completed_chunks=4), chunks)
    assert done["download_url"].endswith("/download") and done["progress"]["overall_progress"] == 100.0


def test_history_stats_count_outcomes():
    rows = [{"status": s, "voice": v, "created_at": 0.0, "output_duration_seconds": 10.0, "output_size_bytes": 5,
             "total_processing_time_ms": 4000} for s, v in (("completed", "a"), ("completed", "a"), ("failed", "b"))]
    stats = rules.history_stats(rows)
    assert stats["completed_jobs"] == 2 and stats["failed_jobs"] == 1 and stats["most_used_voice"] == "a"
    assert stats["success_rate_percentage"] == 66.7 and stats["total_audio_duration_seconds"] == 20.0


def test_every_peer_alias_maps_to_a_path_we_serve():
    table = compile_rewrites()
    assert rewrite("/tts/", table) == "/v1/audio/speech" and rewrite("/v1/audio/speech", table) == "/v1/audio/speech"
    served_aliases = {alias for alias, _ in REWRITES}
    for primary, aliases in PEER_TABLE.items():
        for alias in aliases:
            assert alias in served_aliases or alias == "/v1" + primary, alias


def test_joined_chunks_are_the_whole_file_in_every_format(tmp_path):
    rng = np.random.default_rng(0)
    pcm = [(rng.normal(0, 3000, n)).astype("<i2").tobytes() for n in (24000, 7, 30001)]
    paths = []
    for i, data in enumerate(pcm):
        paths.append(files.chunk_path(str(tmp_path), "job", i))
        files.write_atomically(paths[-1], data)
    for fmt in ("wav", "pcm", "mp3", "flac", "aac"):
        out = files.output_path(str(tmp_path), "job", fmt)
        size, seconds = files.assemble(fmt, paths, 24000, out)
        with open(out, "rb") as f:
            assert f.read() == encode_whole(fmt, b"".join(pcm), 24000), fmt
        assert seconds == pytest.approx(54008 / 24000) and size > 0


def test_a_lease_owner_is_dead_only_when_surely_dead():
    import socket
    import subprocess
    import sys

    from chatterbox_server.synthesis.longjobs.runner import owner_dead, owner_id
    me = owner_id()
    assert not owner_dead(me)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert owner_dead(f"{socket.gethostname()}|{child.pid}|1.00")     # gone (or a different process now)
    assert not owner_dead(f"another-host|{child.pid}|1.00")          # elsewhere: only the lease can tell
    assert not owner_dead("not an owner")
