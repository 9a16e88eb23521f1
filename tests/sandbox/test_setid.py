"""The host-side search for setuid/setgid files after a command (the second line)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.host.setid import SetidScanIncomplete, strip_setid


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_new_setid_files_lose_their_bits_and_are_reported(tmp_path: Path) -> None:
    since = time.time()
    for name, bits in (("suid", 0o4755), ("sgid", 0o2750), ("plain", 0o755)):
        (tmp_path / name).write_text(name)
        os.chmod(tmp_path / name, bits)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "both").write_text("x")
    os.chmod(tmp_path / "deep" / "er" / "both", 0o6711)
    found = strip_setid([tmp_path], since=since)
    assert sorted(found) == sorted(
        [tmp_path / "suid", tmp_path / "sgid", tmp_path / "deep" / "er" / "both"]
    )
    assert (mode(tmp_path / "suid"), mode(tmp_path / "sgid")) == (0o755, 0o750)
    assert (mode(tmp_path / "deep" / "er" / "both"), mode(tmp_path / "plain")) == (0o711, 0o755)


def test_older_files_symlinks_folders_and_skipped_mounts_are_left_alone(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "readonly").mkdir(parents=True)
    outside.mkdir()
    (outside / "target").write_text("x")
    os.chmod(outside / "target", 0o4755)
    (root / "link").symlink_to(outside / "target")
    (root / "readonly" / "tool").write_text("x")
    os.chmod(root / "readonly" / "tool", 0o4755)
    os.chmod(root / "readonly", 0o2775)  # a setgid folder is not a setgid program
    (root / "mine").write_text("x")
    os.chmod(root / "mine", 0o4755)
    # Everything above was there before the command started.
    assert strip_setid([root], since=time.time() + 60) == ()
    assert strip_setid([root], since=0, skip={root / "readonly"}) == (root / "mine",)
    assert mode(outside / "target") == 0o4755  # the symlink was not followed
    assert mode(root / "readonly" / "tool") == 0o4755
    assert mode(root / "readonly") == 0o2775


def _as_owner(func: Callable[[], None]) -> int:
    """Run `func` in a child as the folder's owner (root reads every folder); its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        code = 1
        try:
            os.setgid(4321)
            os.setuid(4321)
            func()
            code = 0
        except SetidScanIncomplete as exc:
            code = 3 if "chmod u+rx" in str(exc) and exc.stripped else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_an_unreadable_folder_fails_the_search_loudly(workspace: Path) -> None:
    # A task hides a setuid file in a folder it then makes unreadable: the search must not
    # pass over it in silence, and still strip what it can reach.
    root = workspace / "rw"
    (root / "hidden").mkdir(parents=True)
    since = time.time()
    for path in (root / "hidden" / "tool", root / "seen"):
        path.write_text("x")
    for path in (root, root / "hidden", root / "hidden" / "tool", root / "seen"):
        os.chown(path, 4321, 4321)  # before the chmod: chown clears the setuid bit
    for path in (root / "hidden" / "tool", root / "seen"):
        os.chmod(path, 0o4755)
    os.chmod(root / "hidden", 0)
    assert _as_owner(lambda: print(strip_setid([root], since=since))) == 3
    assert mode(root / "seen") == 0o755


def test_a_folder_beyond_the_limit_fails_the_search(tmp_path: Path) -> None:
    for index in range(5):
        (tmp_path / f"d{index}").mkdir()
    with pytest.raises(SetidScanIncomplete, match=r"more than 3 folders.*grant a smaller folder"):
        strip_setid([tmp_path], since=time.time(), max_folders=3)
