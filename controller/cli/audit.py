"""`dispatch audit verify | show | export`: check the audit log and read a task's steps, offline.

These read the data directory's `audit/` folder directly, with no controller running (a
controller may be running: the log is only ever appended to, so reading it is safe).

Exit codes:
    0   intact (verify), or done (show, export)
    1   not intact: the one-line message names the first bad entry and what is wrong with it;
        for show and export, also: no entry for that task
    2   bad usage: wrong flags, a malformed --head, no audit log in the data directory
    75  the log's last line is torn (a crash during an append, never acknowledged); the
        controller sets it aside and records that when it next starts: run verify again then
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import click

from computer_use.audit.chain import AUDIT_FOLDER, LOG_NAME, AuditLog
from computer_use.audit.entry import Head
from computer_use.audit.export import NoSuchTask, export_task, verify_export
from computer_use.audit.report import ProblemKind, Report
from computer_use.audit.timeline import steps, text
from computer_use.audit.verify import verify
from controller.cli.exit_codes import ExitCode
from controller.cli.text import safe, safe_output
from controller.errors import ConfigError

NOT_INTACT = 1
TORN_TAIL = 75


def _stop(message: str, code: int) -> NoReturn:
    click.echo(f"dispatch audit: {safe(message)}", err=True)
    sys.exit(code)


def _audit_dir(data_dir: Path | None) -> Path:
    from controller.settings import load_settings

    try:
        settings = load_settings({"data_dir": data_dir})
    except ConfigError as exc:
        _stop(str(exc), ExitCode.USAGE)
    folder = settings.data_dir / AUDIT_FOLDER
    if not (folder / LOG_NAME).exists():
        _stop(
            f"no audit log at {folder / LOG_NAME}; pass the controller's --data-dir "
            "(or DISPATCH_DATA_DIR)",
            ExitCode.USAGE,
        )
    return folder


def _head(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Head | None:
    if value is None:
        return None
    try:
        return Head.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The controller's data directory [env DISPATCH_DATA_DIR; default "
    "$XDG_DATA_HOME/dispatch].",
)


@click.group()
def audit() -> None:
    """The audit log: every step of every task, hash-chained; check it, read it, export it."""


def _finish(report: Report, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(safe(report.summary()))
        for action in report.unfinished:
            click.echo(
                safe(
                    f"  unfinished: entry {action.seq}, task {action.task}: {action.description} "
                    "(proposed, no result recorded)"
                )
            )
    if report.problem is None:
        sys.exit(ExitCode.OK)
    sys.exit(TORN_TAIL if report.problem.kind is ProblemKind.TORN else NOT_INTACT)


@audit.command("verify")
@click.option("--task", type=int, help="Check this task's screenshots (the chain is always whole).")
@click.option(
    "--head",
    callback=_head,
    metavar="SEQ:HASH",
    help="A head published earlier: fail if the log was cut or rewritten since.",
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Verify an export folder on its own, without the data directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@data_dir_option
def verify_command(
    task: int | None,
    head: Head | None,
    export_dir: Path | None,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    """Check that no entry or screenshot was edited, removed, inserted, reordered or cut."""
    if export_dir is not None:
        try:
            report = verify_export(export_dir, head=head)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            _stop(f"{export_dir} is not an audit export ({exc})", ExitCode.USAGE)
    else:
        report = verify(_audit_dir(data_dir), task=task, head=head)
    _finish(report, as_json)


@audit.command("show")
@click.argument("task", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
@data_dir_option
def show(task: int, as_json: bool, data_dir: Path | None) -> None:
    """Print a task's steps: what the model did, what was asked and decided, what ran."""
    log = AuditLog(_audit_dir(data_dir))
    found = steps(log.entries(task))
    if not found:
        _stop(f"the audit log has no entry for task {task}", NOT_INTACT)
    if as_json:
        click.echo(json.dumps([step.to_json() for step in found], indent=2))
        return
    click.echo(safe_output(text(found)))


@audit.command("export")
@click.argument("task", type=int)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A new (or empty) folder to write the export to.",
)
@data_dir_option
def export(task: int, out: Path, data_dir: Path | None) -> None:
    """Write a task's entries, screenshots, chain proof and an offline index.html to --out."""
    try:
        report = export_task(_audit_dir(data_dir), task, out)
    except NoSuchTask as exc:
        _stop(str(exc), NOT_INTACT)
    except FileExistsError as exc:
        _stop(str(exc), ExitCode.USAGE)
    click.echo(safe(f"exported task {task} to {out}: open {out / 'index.html'}"))
    _finish(report, as_json=False)
