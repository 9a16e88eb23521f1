"""Screenshots stored once by content: `shots/ab/abcdef...` holds the bytes whose SHA-256 is its
name, written by a background thread so that storing one never sits on the capture path.

    put(bytes) ──▶ hash (on the caller's thread, ~1 ms for a 1 MB PNG), queue the bytes, return
                   writer thread: temporary file, fsync, rename, fsync the folder
    wait(hashes) ─▶ block until those are durable (raises if one could not be written)

The chain's rule is that an entry never becomes durable before the screenshots it names:
`AuditLog.append` calls `wait` for them first. A screenshot is usually put a model turn or an
approval before the entry that names it, so by then it is long written and `wait` returns at once.
After a crash, then, a missing file is never "the entry got there first": it was deleted (or
pruned, which the chain records).

The file's bytes are exactly what was put (a PNG, JPEG or WebP, as captured); the kind is read
from the first bytes when it is needed (`media_type`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path

from computer_use.errors import AuditError

# What a full folder sync covers: at most this many files are written per batch.
BATCH_FILES = 32
WAIT_TIMEOUT_S = 120.0
# A screenshot put this recently is never pruned, even if every entry naming it is old: an entry
# about to be appended may name it (content-addressed files are shared by identical screens).
RECENT_S = 3600.0
RECENT_KEPT = 10_000

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
)


def media_type(data: bytes) -> tuple[str, str]:
    """The media type and file extension of image bytes, from their first bytes."""
    for magic, media, extension in _MAGIC:
        if data.startswith(magic):
            return media, extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return "application/octet-stream", "bin"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ScreenshotStore:
    """Content-addressed screenshot files under `root`, written behind the caller's back."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pending: dict[str, Future[None]] = {}
        self._recent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Queue `data` to be stored; its SHA-256 (hex), to name in an entry, at once.

        Raises:
            AuditError: the store is closed.
        """
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            if self._closed:
                raise AuditError("the screenshot store is closed; open the audit log again")
            now = time.monotonic()
            if len(self._recent) > RECENT_KEPT:
                self._recent = {d: t for d, t in self._recent.items() if now - t < RECENT_S}
            self._recent[digest] = now
            if digest in self._pending:
                return digest
            future: Future[None] = Future()
            self._pending[digest] = future
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_loop, name="audit-screenshots", daemon=True
                )
                self._thread.start()
        self._queue.put((digest, data))
        return digest

    def wait(self, hashes: Iterable[str], timeout_s: float = WAIT_TIMEOUT_S) -> None:
        """Return once every one of `hashes` is durable.

        Raises:
            AuditError: one was never put and has no file, or writing it failed (a full disk).
        """
        for digest in hashes:
            with self._lock:
                future = self._pending.get(digest)
            if future is None:
                if not self.path(digest).exists():
                    raise AuditError(
                        f"screenshot {digest[:12]} was never stored; pass its bytes to "
                        "screenshots.put() (or as a shot to append) before naming its hash"
                    )
                continue
            try:
                future.result(timeout=timeout_s)
            except OSError as exc:
                raise AuditError(
                    f"screenshot {digest[:12]} could not be written to {self.root}: "
                    f"{exc.strerror or exc}; free space or fix the permissions there"
                ) from exc
            except TimeoutError:
                raise AuditError(
                    f"screenshot {digest[:12]} was not written within {timeout_s:.0f} s; "
                    f"is the disk under {self.root} stalled?"
                ) from None

    def recently_put(self, digest: str) -> bool:
        with self._lock:
            put_at = self._recent.get(digest)
        return put_at is not None and time.monotonic() - put_at < RECENT_S

    def flush(self) -> None:
        """Wait until everything put so far is durable (errors are raised by `wait`)."""
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.exception(timeout=WAIT_TIMEOUT_S)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(WAIT_TIMEOUT_S)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[tuple[str, bytes]] = []
            stop = item is None
            if item is not None:
                batch.append(item)
            while not stop and len(batch) < BATCH_FILES:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            if batch:
                self._write_batch(batch)
            if stop:
                return

    def _write_batch(self, batch: list[tuple[str, bytes]]) -> None:
        folders: set[Path] = set()
        results: list[tuple[str, BaseException | None]] = []
        for digest, data in batch:
            target = self.path(digest)
            try:
                if not target.exists():
                    self._write_one(target, data, folders)
                results.append((digest, None))
            except OSError as exc:
                results.append((digest, exc))
        synced: BaseException | None = None
        try:
            for folder in folders:
                fsync_dir(folder)
        except OSError as exc:
            synced = exc
        for digest, error in results:
            with self._lock:
                future = self._pending.pop(digest)
            if error or synced:
                future.set_exception(error or synced)
            else:
                future.set_result(None)

    def _write_one(self, target: Path, data: bytes, folders: set[Path]) -> None:
        folder = target.parent
        if not folder.is_dir():
            if not folder.parent.is_dir():
                folder.parent.mkdir(parents=True, exist_ok=True)
                folders.add(folder.parent.parent)
            folder.mkdir(exist_ok=True)
            folders.add(folder.parent)
        temporary = folder / f".{target.name}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        folders.add(folder)
