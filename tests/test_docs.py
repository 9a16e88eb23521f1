"""The README stays true: every exit code and every `dispatch` command is documented there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
from click.testing import CliRunner

from controller.cli import main
from controller.cli.exit_codes import ExitCode

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "dispatch") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


def test_every_exit_code_is_in_the_readme_table() -> None:
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README, re.MULTILINE))
    for code in ExitCode:
        assert str(code.value) in table, f"exit code {code.value} ({code.name}) missing from README"


def test_every_command_is_documented_and_has_help() -> None:
    runner = CliRunner()
    for path, _command in _commands(main):
        assert f"`{path}" in README or f"{path} " in README, f"{path} is not in README.md"
        result = runner.invoke(main, [*path.split()[1:], "--help"])
        assert result.exit_code == 0, f"{path} --help failed: {result.output}"
        assert "Usage:" in result.output


def test_every_run_exit_code_is_in_the_readme() -> None:
    from controller.headless.runner import RunExit

    table = README.split("| `dispatch run` exit | meaning |", 1)[1].split("\n\n", 1)[0]
    shown = set(re.findall(r"^\| (\d+) \|", table, re.MULTILINE))
    shown |= set(re.findall(r"\((\d+): SIG", table))
    for code in RunExit:
        assert str(code.value) in shown, f"dispatch run exit {code.value} ({code.name}) missing"


def test_make_installs_every_package_it_names() -> None:
    """Every package list the Makefile defines reaches the apt line `make` runs.

    A list defined below its use in a `:=` assignment expands to nothing there: the libvirt
    packages were silently left out of `make setup` on fresh machines that way.
    """
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["make", "-p", "-n", "-f", str(root / "Makefile"), "-C", str(root), "system"],
        capture_output=True,
        text=True,
        check=True,
    )
    values = dict(
        re.match(r"^(\w+) :?= (.*)$", line).groups()  # type: ignore[union-attr]
        for line in done.stdout.splitlines()
        if re.match(r"^[A-Z_]+_PACKAGES :?= ", line)
    )
    installed = set(values.pop("APT_PACKAGES").split())
    assert values, "the Makefile defines no other package lists; update this test"
    for name, packages in values.items():
        missing = set(packages.split()) - installed
        assert not missing, f"{name} is defined but not installed by `make system`: {missing}"
    assert {"libvirt-daemon-system", "qemu-system-x86", "docker.io", "chromium"} <= installed
