"""The host-side search for setuid/setgid files after a command (the second line)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from sandbox.setid import strip_setid


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
