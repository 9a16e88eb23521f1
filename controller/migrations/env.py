"""Alembic environment: migrate the connection the controller hands in (or alembic.ini's URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from controller.store.models import Base

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as connection:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    # Batch mode lets later migrations alter SQLite tables (which lack most ALTER forms).
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
