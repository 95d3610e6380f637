"""Workspaces: the API key name that owns each long-text job and request-history record.

NULL is the single workspace of a server without keys (and what rows made before this revision
hold): with keys configured, only an admin key sees those.

Revision ID: 0002_workspaces
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_workspaces"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("long_jobs", "request_history"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
            batch.create_index(f"ix_{table}_owner", ["owner"])


def downgrade() -> None:
    for table in ("long_jobs", "request_history"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_owner")
            batch.drop_column("owner")
