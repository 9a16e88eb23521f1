"""The README stays true: every exit code and every `dispatch` command is documented there."""

from __future__ import annotations

import re
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
