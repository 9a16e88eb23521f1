"""The agent's memory files: one set per owner, shared by all threads (agent.memory)."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from controller.store.db import Database
from controller.store.models import MemoryFile


class MemoryStore:
    """Implements `computer_use.agent.memory.MemoryBackend` on the controller's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def paths(self) -> list[str]:
        with self.db.read() as session:
            return list(session.scalars(select(MemoryFile.path).order_by(MemoryFile.path)))

    def files(self) -> list[MemoryFile]:
        with self.db.read() as session:
            return list(session.scalars(select(MemoryFile).order_by(MemoryFile.path)))

    def read(self, path: str) -> str | None:
        with self.db.read() as session:
            return session.scalar(select(MemoryFile.content).where(MemoryFile.path == path))

    def get(self, path: str) -> MemoryFile | None:
        with self.db.read() as session:
            return session.scalars(select(MemoryFile).where(MemoryFile.path == path)).first()

    def write(self, path: str, text: str) -> None:
        with self.db.write() as session:
            row = session.scalars(select(MemoryFile).where(MemoryFile.path == path)).first()
            if row is None:
                session.add(MemoryFile(path=path, content=text, updated_at=time.time()))
            else:
                row.content = text
                row.updated_at = time.time()

    def delete(self, paths: list[str]) -> None:
        with self.db.write() as session:
            session.execute(delete(MemoryFile).where(MemoryFile.path.in_(paths)))

    def rename(self, moves: dict[str, str]) -> None:
        with self.db.write() as session:
            rows = session.scalars(select(MemoryFile).where(MemoryFile.path.in_(list(moves))))
            # Two steps, so a move onto a path another move frees never trips the unique key.
            moved = [(row, row.path) for row in rows]
            for row, _ in moved:
                row.path = f"\x00moving\x00{row.id}"
            session.flush()
            now = time.time()
            for row, original in moved:
                row.path = moves[original]
                row.updated_at = now
