"""Long-text jobs, their chunks, request history and counters.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "long_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("text_length", sa.Integer, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("total_chunks", sa.Integer, nullable=False),
        sa.Column("completed_chunks", sa.Integer, nullable=False),
        sa.Column("current_chunk", sa.Integer),
        sa.Column("voice", sa.String(128)),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("output_format", sa.String(8), nullable=False),
        sa.Column("output_path", sa.Text),
        sa.Column("output_size_bytes", sa.Integer),
        sa.Column("output_duration_seconds", sa.Float),
        sa.Column("sample_rate", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("session_id", sa.String(128)),
        sa.Column("display_name", sa.String(200)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("is_archived", sa.Boolean, nullable=False),
        sa.Column("retry_count", sa.Integer, nullable=False),
        sa.Column("original_job_id", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_accessed", sa.Float),
        sa.Column("processing_started_at", sa.Float),
        sa.Column("processing_paused_at", sa.Float),
        sa.Column("processing_completed_at", sa.Float),
        sa.Column("total_processing_time_ms", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires", sa.Float),
    )
    op.create_index("ix_long_jobs_status", "long_jobs", ["status"])
    op.create_index("ix_long_jobs_created_at", "long_jobs", ["created_at"])
    op.create_table(
        "long_job_chunks",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("audio_file", sa.Text),
        sa.Column("samples", sa.Integer),
        sa.Column("started_at", sa.Float),
        sa.Column("completed_at", sa.Float),
        sa.Column("synth_ms", sa.Integer),
    )
    op.create_table(
        "request_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float, nullable=False),
        sa.Column("text_length", sa.Integer, nullable=False),
        sa.Column("text_preview", sa.Text, nullable=False),
        sa.Column("voice_source", sa.String(128), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("total_chunks", sa.Integer, nullable=False),
        sa.Column("audio_seconds", sa.Float, nullable=False),
        sa.Column("error_message", sa.Text),
    )
    op.create_index("ix_request_history_start_time", "request_history", ["start_time"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("counters", "request_history", "long_job_chunks", "long_jobs"):
        op.drop_table(table)
