"""The template database `dispatch run` copies: the migrated schema exactly, never a stale one."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from controller.headless import template
from controller.store.db import MIGRATIONS_DIR, Database, migration_head


def schema(path: Path) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Every table, index and trigger as SQLite stores its definition, and the revision."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        objects = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return objects, revision


def migrated(path: Path) -> Path:
    database = Database(f"sqlite:///{path}")
    try:
        database.migrate()
    finally:
        database.dispose()
    return path


def test_the_head_read_from_the_files_is_alembics() -> None:
    # A new migration must not need this test edited: whatever Alembic calls the head.
    assert migration_head() == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def test_a_copy_of_the_template_has_the_migrated_schema(tmp_path: Path) -> None:
    expected = schema(migrated(tmp_path / "migrated.db"))
    cache = tmp_path / "cache"
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    assert template.prepare(first, cache)  # builds the template, then copies it
    assert template.prepare(second, cache)  # copies the one built
    assert schema(first) == expected
    assert schema(second) == expected
    assert first.stat().st_mode & 0o777 == 0o600
    # The controller opening the copy finds nothing to migrate, and the store works on it.
    database = Database(f"sqlite:///{second}")
    try:
        assert database.at_head()
        database.migrate()
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        database.dispose()
    assert schema(second) == expected


def test_a_stale_or_damaged_template_is_built_again(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert template.prepare(tmp_path / "a.db", cache)
    (made,) = cache.glob("empty-*.sqlite")
    with contextlib.closing(sqlite3.connect(made)) as db, db:
        db.execute("UPDATE alembic_version SET version_num = 'older'")
    assert template.prepare(tmp_path / "b.db", cache)
    assert schema(tmp_path / "b.db") == schema(migrated(tmp_path / "migrated.db"))
    made.write_bytes(b"not a database")
    assert template.prepare(tmp_path / "c.db", cache)
    assert template.is_at(tmp_path / "c.db", str(migration_head()))


def test_an_existing_database_is_left_alone(tmp_path: Path) -> None:
    existing = tmp_path / "dispatch.db"
    existing.write_bytes(b"")
    assert not template.prepare(existing, tmp_path / "cache")
    assert existing.read_bytes() == b""
    assert not template.prepare(tmp_path / "missing" / "dispatch.db", tmp_path / "cache")


def test_a_cache_path_with_url_characters_gets_its_template(tmp_path: Path) -> None:
    # A database URL would cut such a path at the '?' or '#' unless it is escaped.
    odd = tmp_path / "a%3F#b?c d"
    odd.mkdir()
    assert template.prepare(odd / "first.db", odd / "cache")
    assert template.prepare(odd / "second.db", odd / "cache")
    assert schema(odd / "second.db") == schema(migrated(tmp_path / "migrated.db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a%3F#b?c d", "migrated.db"]


def test_a_cache_that_cannot_be_written_leaves_the_migration_to_the_controller(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would be")
    database = tmp_path / "dispatch.db"
    assert not template.prepare(database, blocked)
    assert not database.exists()
    assert schema(migrated(database)) == schema(migrated(tmp_path / "other.db"))


def test_a_database_at_the_head_is_opened_without_loading_alembic(tmp_path: Path) -> None:
    database = migrated(tmp_path / "dispatch.db")
    code = (
        "import sys; from controller.store.db import Database; "
        f"db = Database('sqlite:///{database}'); db.migrate(); db.dispose(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    opened = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert opened.stdout.strip() == "[]"
