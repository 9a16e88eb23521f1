"""Folder-grant validation: the one gate between a person's disk and the sandbox."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from sandbox import GrantRefused, Mount
from sandbox.mounts import git_mounts, parse_grant, validate_grants, validate_mount
from sandbox.ownership import DEFAULT_USER, check_writable, parse_user, sandbox_user


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake home with the credential folders a person has."""
    home = tmp_path / "home"
    for sub in (".ssh", ".gnupg", ".aws", ".config/gcloud", ".docker", ".kube", "Projects/app"):
        (home / sub).mkdir(parents=True)
    return home


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/a", ("/a", True)),
        ("/a:ro", ("/a", True)),
        ("/a:rw", ("/a", False)),
        ("/odd:name/x", ("/odd:name/x", True)),
        ("~/p:rw", ("~/p", False)),
    ],
)
def test_parse_grant(text: str, expected: tuple[str, bool]) -> None:
    assert parse_grant(text) == expected


@pytest.mark.parametrize("text", ["/a:rx", ":rw", "/a:RW"])
def test_parse_grant_refuses_bad_modes(text: str) -> None:
    with pytest.raises(GrantRefused, match=r"PATH\[?"):
        parse_grant(text)


def test_valid_folder_is_resolved_and_read_only_by_default(home: Path) -> None:
    mount = validate_mount(home / "Projects" / "app", home=home)
    assert mount == Mount(host=(home / "Projects" / "app").resolve(), read_only=True)


def test_symlinked_grant_mounts_the_resolved_folder(home: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(home / "Projects")
    assert validate_mount(tmp_path / "alias", home=home).host == (home / "Projects").resolve()


def test_relative_and_dotted_paths_are_resolved(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home / "Projects")
    assert validate_mount("app/../app", home=home).host == (home / "Projects" / "app").resolve()


@pytest.mark.parametrize(
    "sensitive",
    ["/", "/proc", "/sys", "/dev", "/etc", "/etc/ssl", "/run", "/var/run", "/var/lib/docker"],
)
def test_system_paths_are_refused(sensitive: str, home: Path) -> None:
    if not Path(sensitive).exists():
        pytest.skip(f"{sensitive} does not exist on this machine")
    with pytest.raises(GrantRefused, match="sensitive path"):
        validate_mount(sensitive, home=home)


@pytest.mark.parametrize("sub", [".ssh", ".gnupg", ".aws", ".config/gcloud", ".docker", ".kube"])
def test_credential_folders_are_refused(sub: str, home: Path) -> None:
    with pytest.raises(GrantRefused, match="is the sensitive path"):
        validate_mount(home / sub, home=home)


def test_missing_credential_folder_is_refused_as_sensitive(tmp_path: Path) -> None:
    with pytest.raises(GrantRefused, match="sensitive"):
        validate_mount(tmp_path / ".ssh", home=tmp_path)


def test_parents_of_sensitive_paths_are_refused(home: Path) -> None:
    for parent in (home, home / ".config"):
        with pytest.raises(GrantRefused, match="contains the sensitive path"):
            validate_mount(parent, home=home)
    with pytest.raises(GrantRefused, match="contains the sensitive path"):
        validate_mount("/var", home=home)


def test_symlink_to_sensitive_folder_is_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "innocent").symlink_to(home / ".ssh")
    with pytest.raises(GrantRefused, match=r"resolves to .*\.ssh"):
        validate_mount(tmp_path / "innocent", home=home)
    (tmp_path / "etc-alias").symlink_to("/etc")
    with pytest.raises(GrantRefused, match="resolves to /etc"):
        validate_mount(tmp_path / "etc-alias", home=home)


def test_docker_socket_folder_is_refused_via_symlink(home: Path, tmp_path: Path) -> None:
    (tmp_path / "sock-dir").symlink_to("/var/run")
    with pytest.raises(GrantRefused, match="sensitive"):
        validate_mount(tmp_path / "sock-dir", home=home)


def test_dispatch_own_directories_are_refused(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "data" / "dispatch"
    data.mkdir(parents=True)
    with pytest.raises(GrantRefused, match="sensitive"):
        validate_mount(data, home=home, protected=[data])
    with pytest.raises(GrantRefused, match="contains"):
        validate_mount(tmp_path / "data", home=home, protected=[data])


def test_missing_folder_and_file_are_refused_with_fix(home: Path) -> None:
    with pytest.raises(GrantRefused, match="does not exist; create it"):
        validate_mount(home / "nope", home=home)
    (home / "Projects" / "file.txt").write_text("x")
    with pytest.raises(GrantRefused, match="not a folder; grant the folder that contains it"):
        validate_mount(home / "Projects" / "file.txt", home=home)


def test_allowed_roots_bound_grants(home: Path, tmp_path: Path) -> None:
    roots = [home / "Projects"]
    assert validate_mount(home / "Projects" / "app", home=home, allowed_roots=roots)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(GrantRefused, match="outside the allowed folders"):
        validate_mount(tmp_path / "elsewhere", home=home, allowed_roots=roots)
    # A symlink inside a root that points outside it does not get out.
    (home / "Projects" / "escape").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(GrantRefused, match="outside the allowed folders"):
        validate_mount(home / "Projects" / "escape", home=home, allowed_roots=roots)


def test_same_folder_twice_keeps_the_wider_mode(home: Path) -> None:
    app = str(home / "Projects" / "app")
    (mount,) = validate_grants([app, f"{app}:rw", f"{app}:ro"], home=home)
    assert not mount.read_only


def test_sandbox_user_is_owner_of_read_write_folders(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    os.chown(a, 5000, 5001)
    os.chown(b, 6000, 6000)
    assert sandbox_user([Mount(a, read_only=False), Mount(b)]) == (5000, 5001)
    assert sandbox_user([Mount(b)]) == (6000, 6000)
    with pytest.raises(GrantRefused, match="different owners"):
        sandbox_user([Mount(a, read_only=False), Mount(b, read_only=False)])


def test_sandbox_user_refuses_root_owned_read_write_folder(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to own a folder as root")
    with pytest.raises(GrantRefused, match=r"owned by root.*chown"):
        sandbox_user([Mount(tmp_path, read_only=False)])
    assert sandbox_user([]) == DEFAULT_USER


def test_a_grant_the_sandbox_scratch_space_would_hide_is_refused(home: Path) -> None:
    # /tmp inside the sandbox is its own tmpfs: a grant of /tmp would silently show nothing.
    with pytest.raises(GrantRefused, match="scratch space /tmp"):
        validate_mount("/tmp", home=Path("/nonexistent-home"))
    assert validate_mount(home / "Projects", home=home)  # folders inside /tmp are fine


def test_git_folders_and_files_are_found_but_not_symlinks_or_skipped_mounts(
    tmp_path: Path,
) -> None:
    root = tmp_path / "work"
    (root / "repo" / ".git" / "hooks").mkdir(parents=True)
    (root / "repo" / "vendor" / "lib").mkdir(parents=True)
    (root / "repo" / "vendor" / "lib" / ".git").write_text("gitdir: ../../.git/modules/lib\n")
    (root / "other").mkdir()
    (root / "other" / ".git").symlink_to(tmp_path)  # a symlink: mounting it would show its target
    (root / "inner" / ".git").mkdir(parents=True)  # inside a nested mount: handled on its own
    found = git_mounts([root], skip={root, root / "inner"})
    # Each .git read-only, and its work tree and the folders above it pinned (mounted onto
    # themselves read-write) so they cannot be moved aside.
    assert [(m.host, m.read_only) for m in found] == [
        (root / "repo" / ".git", True),
        (root / "repo", False),
        (root / "repo" / "vendor" / "lib" / ".git", True),
        (root / "repo" / "vendor" / "lib", False),
        (root / "repo" / "vendor", False),
    ]
    assert all(m.identity is not None for m in found)
    assert git_mounts([root], git_writable=lambda _: True) == ()


def test_a_read_write_folder_inside_git_or_too_large_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git" / "hooks").mkdir(parents=True)
    with pytest.raises(GrantRefused, match=r"inside a git folder.*git_writable = true"):
        git_mounts([tmp_path / "repo" / ".git" / "hooks"])
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    with pytest.raises(GrantRefused, match=r"more than 3 folders.*narrower folder"):
        git_mounts([tmp_path], max_folders=3)
    assert [m.host for m in git_mounts([tmp_path], max_folders=5)] == [
        tmp_path / "repo" / ".git",
        tmp_path / "repo",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [("root", "is root"), ("0:0", "is root"), ("5:0", "is root"), ("nobody-here-xyz", "no user")],
)
def test_sandbox_user_setting_never_names_root_or_nobody(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_user(text)


def test_sandbox_user_setting_reads_names_and_numbers() -> None:
    assert parse_user("4321:4322") == (4321, 4322)
    entry = next(u for u in pwd.getpwall() if u.pw_uid != 0 and u.pw_gid != 0)
    assert parse_user(entry.pw_name) == (entry.pw_uid, entry.pw_gid)


def test_a_folder_the_user_cannot_write_is_refused_with_owner_and_fix(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give folders to other users")
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, 5555, 5555)
    with pytest.raises(GrantRefused) as refused:
        check_writable(folder, (4321, 4321))
    message = str(refused.value)
    assert str(folder) in message and "uid 5555" in message and "mode 0700" in message
    assert "chown -R 4321:4321" in message and "sandbox_user" in message
    check_writable(folder, (5555, 5555))  # its owner can
    os.chmod(folder, 0o770)
    check_writable(folder, (4321, 5555))  # its group can
    os.chmod(folder, 0o1777)
    check_writable(folder, (4321, 4321))  # anyone can
