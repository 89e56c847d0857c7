"""Alembic environment: photosearch runs migrations in-process on a connection it passes in.

The catalog (photosearch/catalog.py) opens the engine, puts the connection into
``config.attributes["connection"]`` and calls ``alembic.command.upgrade``; there is no alembic.ini and no
offline (SQL script) mode.
"""

from alembic import context

from photosearch.stores.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("photosearch migrations run through photosearch.stores.catalog, not the alembic CLI")

# render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds tables so later migrations can.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
