"""The database: engine set-up (SQLite in WAL mode, or PostgreSQL), sessions, and migrations.

Writes go through `Database.write()`. On SQLite they are serialised by a lock in this process
and open with `BEGIN IMMEDIATE`: SQLite allows one writer at a time, and its busy handler backs
off by sleeping (up to 100 ms a try), so queueing writers here is both faster and fairer. The
serialisation also makes event ids commit in increasing order, which the event log relies on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controller.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=16,
        max_overflow=32,
    )

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN, so writes can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a task accepted with 202 survives a power cut, not only a crash of this process.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Owns the engine; hands out read sessions and serialised write sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            if url.startswith("sqlite"):
                self.engine = _sqlite_engine(url)
            else:
                self.engine = create_engine(url, pool_size=16, max_overflow=32, pool_pre_ping=True)
        except (ImportError, ModuleNotFoundError) as exc:
            raise ConfigError(
                f"database_url {url!r} needs a driver that is not installed ({exc}); "
                "pip install 'dispatch[postgres]'"
            ) from None
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgres = self.engine.dialect.name == "postgresql"
        writer = (
            self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        )
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(writer, expire_on_commit=False)
        self._write_lock: threading.Lock | nullcontext[None] = (
            threading.Lock() if self.is_sqlite else nullcontext()
        )
        self._commit_hooks: list[Callable[[Session], None]] = []
        event.listen(self._writers, "after_commit", self._after_commit)

    def on_commit(self, hook: Callable[[Session], None]) -> None:
        """Call `hook(session)` after every write transaction commits."""
        self._commit_hooks.append(hook)

    def _after_commit(self, session: Session) -> None:
        for hook in self._commit_hooks:
            hook(session)

    def migrate(self) -> None:
        """Apply every Alembic migration not yet applied (idempotent).

        Raises:
            ConfigError: the database cannot be reached.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self._write_lock, self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise ConfigError(
                f"cannot open the database at {self.engine.url!r} ({exc.orig}); check "
                "database_url (DISPATCH_DATABASE_URL) or the data directory's permissions"
            ) from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; it is rolled back at the end."""
        with self._readers() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose changes are committed at the end of the block (or rolled back)."""
        with self._write_lock, self._writers() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
