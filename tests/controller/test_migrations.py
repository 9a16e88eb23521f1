"""The Alembic migrations build exactly the schema the models describe, and rerun safely."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from controller.store.db import Database
from controller.store.models import Base


def test_migrations_match_the_models_and_are_idempotent(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'dispatch.db'}")
    db.migrate()
    db.migrate()
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert set(inspect(db.engine).get_table_names()) >= {"tasks", "events", "devices", "threads"}
    db.dispose()
