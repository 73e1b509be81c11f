"""Alembic environment: always run with a connection handed in by `Database.migrate`."""

from alembic import context

from tokenim.server.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through tokenim.server.storage.database.Database.migrate")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
