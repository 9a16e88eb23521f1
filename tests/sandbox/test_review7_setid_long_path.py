"""Review 7 (hostile; failed before its fix).

a setuid file whose full path is longer than PATH_MAX is skipped without a word.

walk() lists a folder whose own path is still short enough to open, so a file in it with a long
name is yielded; strip_setid then `os.lstat`s the full path, gets ENAMETOOLONG, and `continue`s:
the file keeps its bit and strip_setid returns () without raising SetidScanIncomplete.
A task builds such a tree with relative paths (mkdir x; cd x; ...), which have no length limit.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from sandbox.host.setid import SetidScanIncomplete, strip_setid


def test_review7_setuid_file_past_path_max(tmp_path: Path) -> None:
    root = tmp_path / "rw"
    root.mkdir()
    since = time.time()
    fd = os.open(root, os.O_RDONLY)
    depth = 0
    while len(str(root)) + depth * 201 < 3900:  # folder path stays openable
        os.mkdir("d" * 200, dir_fd=fd)
        inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, depth = inner, depth + 1
    name = "s" * 250  # folder + "/" + name > 4096
    file_fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o755, dir_fd=fd)
    os.fchmod(file_fd, 0o4755)
    os.close(file_fd)
    try:
        try:
            stripped = strip_setid([root], since=since)
        except SetidScanIncomplete:
            return  # said so: acceptable
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        assert not mode & stat.S_ISUID, f"setuid bit kept; strip_setid returned {stripped!r}"
    finally:
        os.close(fd)
