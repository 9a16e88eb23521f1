"""Screenshots and other images, stored once by the SHA-256 of their bytes.

A blob's name is its hash, so a record that names a hash (an approval, an audit entry) proves
which image it meant, and the same screenshot referred to twice is stored once. Files are
written to a temporary name and renamed, so a reader never sees half an image; they are
private to the controller's user like the rest of the data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

from controller.errors import NotFound

DIR_NAME = "blobs"
HASH = re.compile(r"[0-9a-f]{64}")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    """Content-addressed files under `root` (`<data_dir>/blobs/ab/abcdef...`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str) -> Path:
        """Where the blob named `sha` lives (it may not exist).

        Raises:
            ValueError: `sha` is not a SHA-256 in lower-case hex.
        """
        if not HASH.fullmatch(sha):
            raise ValueError(f"{sha[:80]!r} is not a SHA-256 in hex")
        return self.root / sha[:2] / sha

    def put(self, data: bytes) -> str:
        """Store `data` (once) and return its SHA-256."""
        sha = digest(data)
        target = self.path(sha)
        if target.exists():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = target.with_name(f".{sha}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        return sha

    def get(self, sha: str) -> bytes:
        """The blob's bytes.

        Raises:
            NotFound: no such blob (never stored, or pruned).
        """
        try:
            return self.path(sha).read_bytes()
        except (FileNotFoundError, ValueError):
            raise NotFound(f"no image {sha[:80]}; it was never stored or has been pruned") from None
