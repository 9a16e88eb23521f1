"""The `dispatch` command: one group whose subcommands live in their own modules.

Subcommands are imported only when used, so `dispatch sandbox run` does not pay for loading the
web stack (FastAPI, SQLAlchemy, httpx) on every call.
"""

from __future__ import annotations

import gc
import importlib

import click

# command name -> "module:attribute"
COMMANDS = {
    "sandbox": "controller.cli.sandbox:sandbox",
    "images": "controller.cli.sandbox:images",
    "serve": "controller.cli.server:serve",
    "pair": "controller.cli.server:pair",
    "devices": "controller.cli.server:devices",
    "openapi": "controller.cli.server:openapi",
    "tls": "controller.cli.tls:tls",
    "submit": "controller.cli.tasks:submit",
    "tasks": "controller.cli.tasks:tasks",
    "logs": "controller.cli.tasks:logs",
    "cancel": "controller.cli.tasks:cancel",
    "retry": "controller.cli.tasks:retry",
    "approvals": "controller.cli.approvals:approvals",
    "approve": "controller.cli.approvals:approve",
    "deny": "controller.cli.approvals:deny",
    "memory": "controller.cli.approvals:memory",
    "run": "controller.cli.run:run",
    "audit": "controller.cli.audit:audit",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dispatch")
def main() -> None:
    """Dispatch: hand work to an AI agent, run it safely in a sandbox on this machine."""


def entry() -> None:
    """The `dispatch` process (tests call `main` in their own process instead).

    At the end, everything still allocated is frozen for the collector: the interpreter's
    shutdown then frees it without searching it for cycles first. Searching what SQLAlchemy
    and pydantic leave behind took 130 ms, a fifth of a `dispatch run` of one command.
    """
    try:
        main()
    finally:
        gc.freeze()
