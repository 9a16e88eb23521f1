"""How `dispatch run` writes its report and artifacts (controller/headless/writes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.headless.writes import UnsafePath, Writer


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """A folder the run's tasks could write, and a file of the host user's outside it."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (home / ".bashrc").write_text("mine\n")
    return work, home


def test_a_symlinked_folder_inside_a_writable_folder_is_refused(
    places: tuple[Path, Path],
) -> None:
    work, home = places
    (work / "out").symlink_to(home)
    with pytest.raises(UnsafePath, match=f"{work}/out is a symlink in {work}"):
        Writer([work]).write(work / "out" / ".bashrc", "evil\n")
    assert (home / ".bashrc").read_text() == "mine\n"


def test_a_symlink_outside_the_writable_folders_is_followed(
    places: tuple[Path, Path], tmp_path: Path
) -> None:
    work, home = places
    (tmp_path / "reports").symlink_to(home)  # the person's own link: no task could make it
    Writer([work]).write(tmp_path / "reports" / "junit.xml", "<testsuite/>\n")
    assert (home / "junit.xml").read_text() == "<testsuite/>\n"


def test_a_link_or_hard_link_at_the_file_is_replaced_not_written_through(
    places: tuple[Path, Path],
) -> None:
    work, home = places
    (work / "a.txt").symlink_to(home / ".bashrc")
    os.link(home / ".bashrc", work / "b.txt")
    writer = Writer([work])
    writer.write(work / "a.txt", "one\n")
    writer.write(work / "b.txt", "two\n")
    assert (home / ".bashrc").read_text() == "mine\n"
    assert not (work / "a.txt").is_symlink() and (work / "a.txt").read_text() == "one\n"
    assert (work / "b.txt").read_text() == "two\n"
    assert list(work.glob(".*partial")) == []


def test_a_fresh_folder_removes_a_link_not_what_it_points_to(places: tuple[Path, Path]) -> None:
    work, home = places
    (work / "audit").symlink_to(home)
    folder = Writer([work]).fresh_folder(work / "audit")
    assert folder.is_dir() and not folder.is_symlink() and list(folder.iterdir()) == []
    assert (home / ".bashrc").read_text() == "mine\n"


def test_missing_folders_are_made_and_a_file_on_the_way_is_refused(tmp_path: Path) -> None:
    writer = Writer([])
    writer.write(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"
    with pytest.raises(UnsafePath, match="is not a folder"):
        writer.write(tmp_path / "a" / "b" / "c.txt" / "d.txt", "x")
