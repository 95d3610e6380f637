"""The database schema as SQLAlchemy Core tables (the migrations create exactly these).

Times are UNIX seconds (floats) so SQLite and PostgreSQL store and compare them the same way.
"""
from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()

long_jobs = Table(
    "long_jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("updated_at", Float, nullable=False),
    Column("text", Text, nullable=False),
    Column("text_length", Integer, nullable=False),
    Column("text_hash", String(64), nullable=False),
    Column("total_chunks", Integer, nullable=False),
    Column("completed_chunks", Integer, nullable=False, default=0),
    Column("current_chunk", Integer),
    Column("voice", String(128)),
    Column("parameters", Text, nullable=False),          # JSON: synthesis settings, seed, chunking
    Column("output_format", String(8), nullable=False),
    Column("output_path", Text),
    Column("output_size_bytes", Integer),
    Column("output_duration_seconds", Float),
    Column("sample_rate", Integer),
    Column("error", Text),
    Column("session_id", String(128)),
    Column("display_name", String(200)),
    Column("tags", Text, nullable=False, default="[]"),  # JSON list
    Column("is_archived", Boolean, nullable=False, default=False),
    Column("retry_count", Integer, nullable=False, default=0),
    Column("original_job_id", String(64)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_accessed", Float),
    Column("processing_started_at", Float),
    Column("processing_paused_at", Float),
    Column("processing_completed_at", Float),
    Column("total_processing_time_ms", Integer, nullable=False, default=0),
    Column("lease_owner", String(200)),
    Column("lease_expires", Float),
    Column("owner", String(64), index=True),            # the API key's name; NULL: no keys (one workspace)
)

long_job_chunks = Table(
    "long_job_chunks", metadata,
    Column("job_id", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("text", Text, nullable=False),
    Column("audio_file", Text),
    Column("samples", Integer),
    Column("started_at", Float),
    Column("completed_at", Float),
    Column("synth_ms", Integer),
)

request_history = Table(
    "request_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("endpoint", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_time", Float, nullable=False, index=True),
    Column("end_time", Float, nullable=False),
    Column("text_length", Integer, nullable=False),
    Column("text_preview", Text, nullable=False),
    Column("voice_source", String(128), nullable=False),
    Column("parameters", Text, nullable=False),
    Column("total_chunks", Integer, nullable=False),
    Column("audio_seconds", Float, nullable=False),
    Column("error_message", Text),
    Column("owner", String(64), index=True),
)

# Running totals that outlive the bounded history: name -> value.
counters = Table(
    "counters", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Float, nullable=False),
)
