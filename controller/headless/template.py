"""An empty database at the newest migration, kept in the cache and copied for each run.

Every `dispatch run` starts on a fresh SQLite database; migrating one costs Alembic's import and
seven migrations (0.2-0.3 s), against a millisecond to copy a file. The template is named by the
migration head and checked against it before use, so a new migration makes a new template, and
one that is damaged or stale is built again. It is made by the migrations themselves, so a copy
has exactly the migrated schema (tests/controller/test_headless_template.py compares them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from pathlib import Path

from sqlalchemy import URL

from controller.errors import ConfigError
from controller.store.db import Database, migration_head

log = logging.getLogger(__name__)
SIDES = ("-wal", "-shm", "-journal")


def is_at(path: Path, head: str) -> bool:
    """Whether the SQLite file at `path` is a database at migration `head`."""
    if not path.is_file():
        return False
    uri = f"{path.absolute().as_uri()}?mode=ro"  # percent-encoded: any path fits
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return rows == [(head,)]


def build(template: Path) -> None:
    """Migrate a new empty database and move it to `template` (atomically: runs may race)."""
    template.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = template.with_name(f".{template.name}.{os.getpid()}")
    try:
        # Rendered by SQLAlchemy: a '?', '#' or '%' in the path is escaped, not cut off.
        url = URL.create("sqlite", database=str(scratch)).render_as_string(hide_password=False)
        database = Database(url)
        try:
            database.migrate()
        finally:
            database.dispose()
        # One self-contained file, readable read-only; the controller turns WAL on as it opens.
        with contextlib.closing(sqlite3.connect(scratch)) as db:
            db.execute("PRAGMA journal_mode=DELETE")
        scratch.chmod(0o600)
        os.replace(scratch, template)
    finally:
        for path in (scratch, *(scratch.with_name(scratch.name + side) for side in SIDES)):
            path.unlink(missing_ok=True)


def _own_file(path: Path) -> bytes | None:
    """The file's bytes if it is a regular file of this user's that nobody else may write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return None
        return file.read()


def _is_empty(data: bytes) -> bool:
    """Whether the SQLite database in `data` holds no row but its migration version, and no
    trigger or view (which could act on the rows a run adds later)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.deserialize(data)
        kinds = {kind for (kind,) in db.execute("SELECT type FROM sqlite_master")}
        if kinds - {"table", "index"}:
            return False
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for name in tables:
            if name == "alembic_version" or name.startswith("sqlite_"):
                continue
            quoted = '"' + name.replace('"', '""') + '"'
            if db.execute(f"SELECT 1 FROM {quoted} LIMIT 1").fetchone() is not None:
                return False
    return True


def prepare(database: Path, cache_dir: Path) -> bool:
    """Put an empty, migrated database at `database` (which must not exist yet) from the
    template in `cache_dir`, building the template first if needed.

    False when nothing was copied (the file exists already or its folder does not, the
    migrations have no single head, the cache or the file cannot be written): the controller
    then migrates as it always does, and reports what is wrong with the data directory.
    """
    head = migration_head()
    if head is None or database.exists() or not database.parent.is_dir():
        return False
    template = cache_dir / f"empty-{head}.sqlite"
    try:
        data = _own_file(template) if is_at(template, head) else None
        if data is None or not _is_empty(data):
            build(template)
            data = _own_file(template)
            if data is None or not _is_empty(data) or not is_at(template, head):
                # never copy what the migrations did not make
                raise ConfigError(f"{template} is not an empty database at {head} once built")
    except (OSError, sqlite3.Error, ConfigError) as exc:
        log.warning("no template database in %s (%s); migrating a new one", cache_dir, exc)
        return False
    try:
        # Created private, as the controller would make it, before any byte is in it.
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as copy:
            copy.write(data)
    except OSError:
        database.unlink(missing_ok=True)
        return False
    return True
