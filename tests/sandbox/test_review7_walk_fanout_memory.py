"""Review 7 (hostile; failed before its fix).

walk() keeps the full path of every pending folder, ~18x the memory of the
os.walk it replaced, for a task-made tree of many folders deep under long names.

Each listed folder pushes `os.path.join(folder, name)` for all of its subfolders at once
(sandbox/host/walk.py:47-50), before the max_folders limit is met; with a folder path near
PATH_MAX that is ~4 KB a subfolder, against the bare name os.walk 3.11 held. Measured with
HostWalk: 100,000 subfolders -> maxrss 803 MB (new) vs 44 MB (os.walk); a few million empty
folders (~4 KB of disk each) run the host process out of memory during the after-command search.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from sandbox.host.walk import HostWalk, walk


def _tree(base: Path, count: int) -> None:
    fd = os.open(base, os.O_RDONLY)
    depth = 0
    while len(str(base)) + (depth + 1) * 201 < 3700:
        os.mkdir("p" * 200, dir_fd=fd)
        inner = os.open("p" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, depth = inner, depth + 1
    for index in range(count):
        os.mkdir(f"{index:0>240}", dir_fd=fd)
    os.close(fd)


def _peak(walker) -> int:
    tracemalloc.start()
    try:
        for _ in walker():
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_review7_walk_memory_with_a_wide_deep_tree(tmp_path: Path) -> None:
    _tree(tmp_path, 20_000)
    new = _peak(lambda: HostWalk(200_000).folders([tmp_path]))
    old = _peak(lambda: os.walk(tmp_path))
    assert new < 4 * old, f"walk peak {new >> 20} MiB vs os.walk {old >> 20} MiB"
    assert walk  # the function under review
