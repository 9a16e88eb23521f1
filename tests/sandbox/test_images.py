"""The image builder: finding the apt mirror, detecting changes, and the no-op rebuild."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import ImageBuildFailed
from sandbox.images import apt_mirror, build_hash


def test_mirror_from_deb822_sources_skips_security(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n\n"
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_legacy_sources_list(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://old.example/debian bookworm main\n"
    )
    assert apt_mirror(tmp_path) == "http://old.example/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    with pytest.raises(ImageBuildFailed, match=r"no Debian mirror .* --base"):
        apt_mirror(tmp_path)


def test_build_hash_changes_with_context_and_base(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = build_hash(tmp_path, "sha256:a")
    assert build_hash(tmp_path, "sha256:a") == first
    assert build_hash(tmp_path, "sha256:b") != first
    (tmp_path / "Dockerfile").write_text("FROM y\n")
    assert build_hash(tmp_path, "sha256:a") != first


@pytest.mark.docker
def test_second_build_is_a_no_op(docker_client: object) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller", "images", "build"], capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert b"dispatch/sandbox:latest: up to date" in done.stdout
