"""The `dispatch` command: one group, with subcommands defined in their own modules."""

from __future__ import annotations

import click

from controller import cli_sandbox


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dispatch")
def main() -> None:
    """Dispatch: hand work to an AI agent, run it safely in a sandbox on this machine."""


main.add_command(cli_sandbox.sandbox)
main.add_command(cli_sandbox.images)
