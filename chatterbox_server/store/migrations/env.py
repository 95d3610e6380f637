"""Alembic environment: the caller (store.db.migrate) hands over an open connection."""
from alembic import context

from chatterbox_server.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()
