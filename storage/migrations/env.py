"""Alembic environment: runs on the connection `storage.migrate` hands over.

There is no alembic.ini: the node migrates its own index at start-up
(`storage.migrate.upgrade`), and developers make a new revision with
`python -m storage.migrate revision "message"`.
"""

from __future__ import annotations

from alembic import context

from storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters a table by copying it (batch mode); harmless on PostgreSQL.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
