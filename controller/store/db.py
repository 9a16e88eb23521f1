"""The database: engine set-up (SQLite in WAL mode, or PostgreSQL), sessions, and migrations.

Writes go through `Database.write()`, and are serialised. On SQLite, by a lock in this process,
and they open with `BEGIN IMMEDIATE`: SQLite allows one writer at a time, and its busy handler
backs off by sleeping (up to 100 ms a try), so queueing writers here is both faster and fairer.
On PostgreSQL, whose database several controllers may share, each write transaction first takes
a transaction-scoped advisory lock, held until it commits. Serialised writes are what the stores
rely on: event ids commit in increasing order (so `Last-Event-ID` resumes without a gap), a
pairing code is claimed once, two submissions naming a new thread create it once, and a task is
claimed only while no other task of its thread runs. Taken first, before any row lock, the lock
cannot deadlock with them. Migrations take another advisory lock, so controllers that start
together on a fresh database do not both create the tables. A database already at the newest
migration is seen as such without loading Alembic (a tenth of a second or more to load, paid
by every start and, before its template database, by every `dispatch run`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from controller.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
# PostgreSQL advisory lock keys: any 64-bit numbers no other application sharing the server uses.
WRITE_LOCK = text("SELECT pg_advisory_xact_lock(84200001)")
MIGRATE_LOCK = text("SELECT pg_advisory_xact_lock(84200002)")
_REVISION = re.compile(r"^revision\b[^=]*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\b[^=]*=(.*)$", re.MULTILINE)


def migration_head(versions: Path = MIGRATIONS_DIR / "versions") -> str | None:
    """The newest migration's revision, read from the migration files without Alembic.

    None unless there is exactly one head (a branch is left to Alembic to sort out).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN_REVISION.search(text)
        if down is not None:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def engine_url(url: str) -> URL:
    """`url` with PostgreSQL's driver named: psycopg (the `postgres` extra), where a bare
    `postgresql://` would mean SQLAlchemy's default, psycopg2, and `postgres://` nothing."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_engine(url: URL) -> Engine:
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
            parsed = engine_url(url)
            if parsed.get_backend_name() == "sqlite":
                self.engine = _sqlite_engine(parsed)
            else:
                self.engine = create_engine(
                    parsed, pool_size=16, max_overflow=32, pool_pre_ping=True
                )
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
        if self.at_head():
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self._write_lock, self.engine.begin() as connection:
                if self.is_postgres:
                    connection.execute(MIGRATE_LOCK)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise ConfigError(
                f"cannot open the database at {self.engine.url!r} ({exc.orig}); check "
                "database_url (DISPATCH_DATABASE_URL) or the data directory's permissions"
            ) from None

    def at_head(self) -> bool:
        """Whether the database is at the newest migration (False when unsure)."""
        head = migration_head()
        if head is None:
            return False
        try:
            with self.engine.connect() as connection:
                found = connection.execute(text("SELECT version_num FROM alembic_version"))
                return found.scalars().all() == [head]
        except SQLAlchemyError:  # no such table yet, or no database: migrate() says which
            return False

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; it is rolled back at the end."""
        with self._readers() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose changes are committed at the end of the block (or rolled back)."""
        with self._write_lock, self._writers() as session, session.begin():
            if self.is_postgres:
                session.execute(WRITE_LOCK)
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
