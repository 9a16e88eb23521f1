"""The audit log: one append-only, hash-chained file per controller, written ahead.

    log = AuditLog.open(data_dir / "audit")
    shot = log.screenshots.put(png_bytes)                # returns the hash at once
    log.append(Kind.ACTION_PROPOSED, task=7, thread=2,
               data={"action_id": "toolu_1", "tool": "computer", ...},
               shots={"judged": shot})                   # returns once durable
    log.head()                                           # Head(seq, hash), to publish

`append` takes a lock (a thread lock, and `flock` on the file so that every process of one
controller, the CLI included, writes one chain), catches up with entries another process wrote,
writes one line with O_APPEND and returns only after `fdatasync`: a proposed action's entry is on
disk before the action runs. A crash before that returns leaves at worst a torn last line (a
line cut short, or garbage where the file system had reserved room for it); nothing that was
acknowledged is ever lost. The next `open` moves such a tail aside into `torn/`, records that in
a `log_repaired` entry (offset, length, SHA-256 and where it was saved), and carries on; until
then `verify` reports it. Anything else wrong with the tail (a complete line that does not match
its hash, a log shorter than this writer saw it) is not a crash's doing: `open` and `append`
refuse, naming `dispatch audit verify`.

Layout under the audit folder: `chain.jsonl` (the log), `shots/` (`ScreenshotStore`), `torn/`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from computer_use.audit import entry as E
from computer_use.audit.entry import EMPTY_HEAD, REQUIRED, Entry, Head, Kind
from computer_use.audit.shots import ScreenshotStore, fsync_dir
from computer_use.errors import AuditError

# The log's folder in the controller's data directory.
AUDIT_FOLDER = "audit"
LOG_NAME = "chain.jsonl"
SHOTS_NAME = "shots"
TORN_NAME = "torn"
# How much of the file's end is read to find the last line.
TAIL_READ_BYTES = 1 << 16


def _last_line(fd: int, size: int) -> tuple[int, bytes]:
    """The offset and bytes of the file's last line (with its newline, if it has one)."""
    end = size
    if size and os.pread(fd, 1, size - 1) == b"\n":
        end = size - 1
    start, chunk = end, b""
    while start > 0:
        step = min(TAIL_READ_BYTES, start)
        start -= step
        chunk = os.pread(fd, step, start) + chunk
        cut = chunk.rfind(b"\n", 0, end - start)
        if cut >= 0:
            start += cut + 1
            break
    return start, os.pread(fd, size - start, start)


def _torn(line: bytes) -> bool:
    """A last line a crash could have left: cut short, or not an entry at all."""
    return not line.endswith(b"\n") or E.decode(line[:-1]) is None


class AuditSink(Protocol):
    """What a caller that records steps needs (`AuditLog` is the one implementation; a test
    may pass a list-backed fake). Screenshots go in `shots` as bytes or as hashes from
    `AuditLog.screenshots.put`."""

    def append(
        self,
        kind: Kind,
        *,
        task: int | None,
        thread: int | None,
        data: Mapping[str, Any],
        shots: Mapping[str, str | bytes] | None = None,
    ) -> Entry: ...

    def head(self) -> Head: ...


class AuditLog:
    """The controller's audit chain in `root`; use `open`, then `append`, and `close` at exit."""

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.path = root / LOG_NAME
        self.screenshots = ScreenshotStore(root / SHOTS_NAME)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._head = EMPTY_HEAD
        self._index: dict[int, list[tuple[int, int]]] = {}
        self._indexed_to = 0
        self._index_lock = threading.Lock()

    @classmethod
    def open(cls, root: Path, *, clock: Callable[[], float] = time.time) -> AuditLog:
        """Open (creating if needed) the log in `root`, setting aside a torn last line.

        Raises:
            AuditError: the folder cannot be created or the log's tail is not a valid entry.
        """
        log = cls(root, clock=clock)
        try:
            root.mkdir(parents=True, exist_ok=True)
            created = not log.path.exists()
            log._fd = os.open(log.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if created:
                fsync_dir(root)
        except OSError as exc:
            raise AuditError(
                f"cannot open the audit log {log.path}: {exc.strerror}; check the data directory"
            ) from None
        with log._locked():
            pass
        return log

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> Head:
        """The last entry's seq and hash (seq 0 and 64 zeros while the log is empty)."""
        with self._locked():
            return self._head

    def append(
        self,
        kind: Kind,
        *,
        task: int | None,
        thread: int | None,
        data: Mapping[str, Any],
        shots: Mapping[str, str | bytes] | None = None,
    ) -> Entry:
        """Write one entry and return it once it is durable, with its seq and hash.

        Args:
            kind: what happened.
            task, thread: whose step it is (None for entries about the log itself).
            data: a JSON object; must have the keys `REQUIRED[kind]`.
            shots: role ("seen", "judged", "annotated", "after") -> the screenshot, as bytes or as
                the hash `screenshots.put()` returned. Waited for: an entry is never durable
                before the screenshots it names.

        Raises:
            AuditError: a required key is missing, data is not JSON, a screenshot could not be
                stored, the disk refused the write, or the log was changed behind this writer.
        """
        kind = Kind(kind)
        missing = [key for key in REQUIRED[kind] if key not in data]
        if missing:
            raise AuditError(f"a {kind} entry needs data keys {', '.join(missing)}")
        hashes: dict[str, str] = {}
        for role, shot in (shots or {}).items():
            if not E.ROLE_NAME.fullmatch(role):
                raise AuditError(f"screenshot role {role!r} is not a lowercase name like 'after'")
            hashes[role] = self.screenshots.put(shot) if isinstance(shot, bytes) else shot
            if not E.HEX64.fullmatch(hashes[role]):
                raise AuditError(f"screenshot {role} is not a SHA-256 in hex: {shot!r:.80}")
        self.screenshots.wait(hashes.values())
        with self._locked():
            seq = self._head.seq + 1
            fields: dict[str, Any] = {
                "seq": seq,
                "prev": self._head.hash,
                "time": E.now_iso(self._clock()),
                "task": task,
                "thread": thread,
                "kind": kind.value,
                "data": dict(data),
                "shots": hashes,
            }
            try:
                line, digest = E.encode(fields)
            except (TypeError, ValueError) as exc:
                raise AuditError(f"{kind} data is not plain JSON: {exc}") from None
            self._write(line)
            self._head = Head(seq, digest)
            return E.Entry(**{**fields, "kind": kind, "hash": digest})

    def entries(self, task: int | None = None) -> Iterator[Entry]:
        """Every entry in order (only `task`'s when given), parsed; unparseable lines skipped.

        For reading (show, export, the API); `verify` is what checks them. A task's entries
        are found through an index of line offsets per task, built on the first such call and
        extended with whatever was appended since (by any process), so asking for one task's
        steps does not parse the whole log each time.
        """
        if task is None:
            with open(self.path, "rb") as handle:
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        return
                    parsed = E.decode(raw[:-1])
                    if parsed is not None:
                        yield parsed
            return
        with open(self.path, "rb") as handle:
            for offset, length in self._task_lines(handle, task):
                handle.seek(offset)
                parsed = E.decode(handle.read(length)[:-1])
                if parsed is not None and parsed.task == task:
                    yield parsed

    def _task_lines(self, handle: BinaryIO, task: int) -> list[tuple[int, int]]:
        """(offset, length) of each of `task`'s lines, the index brought up to date first."""
        with self._index_lock:
            if os.fstat(handle.fileno()).st_size < self._indexed_to:
                self._index.clear()  # cut behind our back (verify says so): read it again
                self._indexed_to = 0
            handle.seek(self._indexed_to)
            offset = self._indexed_to
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                parts = E.split(raw[:-1])
                fields = E.chain_fields(parts[0]) if parts is not None else None
                if fields is not None and fields["task"] is not None:
                    self._index.setdefault(fields["task"], []).append((offset, len(raw)))
                offset += len(raw)
            self._indexed_to = offset
            return list(self._index.get(task, ()))

    def flush(self) -> None:
        """Wait until every screenshot put so far is durable."""
        self.screenshots.flush()

    def close(self) -> None:
        self.screenshots.close()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- the lock, catching up, repairing -------------------------------------------------

    def _locked(self) -> _Locked:
        return _Locked(self)

    def _catch_up(self) -> None:
        """Under the lock: learn the head from the file if it changed since we last saw it."""
        size = os.fstat(self._fd).st_size
        if size == self._size:
            return
        if size < self._size:
            raise AuditError(
                f"the audit log {self.path} shrank from {self._size} to {size} bytes since this "
                "controller last wrote it; nothing more is written to it. Run `dispatch audit "
                "verify` to see what was removed"
            )
        start, last = _last_line(self._fd, size)
        if _torn(last):
            self._repair(start, last)
            return
        parsed = E.decode(last[:-1])
        assert parsed is not None
        parts = E.split(last[:-1])
        assert parts is not None
        if hashlib.sha256(parts[0]).hexdigest() != parsed.hash:
            raise AuditError(
                f"the last entry of {self.path} (seq {parsed.seq}) does not match its hash: it "
                "was edited. Run `dispatch audit verify`; to carry on, move the log aside"
            )
        self._size, self._head = size, Head(parsed.seq, parsed.hash)

    def _repair(self, offset: int, torn: bytes) -> None:
        """Move a torn last line to `torn/` and record that, so nothing vanishes unrecorded."""
        saved = self.root / TORN_NAME / f"{offset}-{int(self._clock())}.bin"
        saved.parent.mkdir(exist_ok=True)
        with open(saved, "wb") as handle:
            handle.write(torn)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(saved.parent)
        os.ftruncate(self._fd, offset)
        os.fsync(self._fd)
        if offset:
            _, last = _last_line(self._fd, offset)
            parsed = E.decode(last[:-1]) if last.endswith(b"\n") else None
            if parsed is None:
                raise AuditError(
                    f"{self.path} has more than one damaged line at its end (the last at byte "
                    f"{offset}); run `dispatch audit verify` and restore the log from a copy"
                )
            self._head = Head(parsed.seq, parsed.hash)
        else:
            self._head = EMPTY_HEAD
        self._size = offset
        seq = self._head.seq + 1
        fields: dict[str, Any] = {
            "seq": seq,
            "prev": self._head.hash,
            "time": E.now_iso(self._clock()),
            "task": None,
            "thread": None,
            "kind": Kind.LOG_REPAIRED.value,
            "data": {
                "offset": offset,
                "bytes": len(torn),
                "sha256": hashlib.sha256(torn).hexdigest(),
                "saved_as": str(saved.relative_to(self.root)),
            },
            "shots": {},
        }
        line, digest = E.encode(fields)
        self._write(line)
        self._head = Head(seq, digest)

    def _write(self, line: bytes) -> None:
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(28, f"short write ({written} of {len(line)} bytes)")
            os.fdatasync(self._fd)
        except OSError as exc:
            # What was written is unacknowledged: the next open sets it aside as torn.
            self._size = -1
            raise AuditError(
                f"could not write to the audit log {self.path}: {exc.strerror or exc}; free "
                "space on that disk (the action was not performed)"
            ) from None
        self._size += len(line)


class _Locked:
    """The thread lock and the file lock together, and the head brought up to date."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def __enter__(self) -> None:
        log = self.log
        log._lock.acquire()
        if log._fd < 0:
            log._lock.release()
            raise AuditError(f"the audit log {log.path} is closed; open it again")
        try:
            fcntl.flock(log._fd, fcntl.LOCK_EX)
            try:
                log._catch_up()
            except BaseException:
                fcntl.flock(log._fd, fcntl.LOCK_UN)
                raise
        except BaseException:
            log._lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.log._fd, fcntl.LOCK_UN)
        self.log._lock.release()
