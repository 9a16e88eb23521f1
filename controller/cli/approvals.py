"""`dispatch approvals | approve | deny | memory`: decide the agent's actions and see what it keeps.

Text in approval requests comes from the model (its stated reason, the text it wants to type),
which may have read a hostile page, so it is printed with control characters escaped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from typing import Any
from urllib.parse import quote

import click

from controller.cli.tasks import connect, connection_options, fail
from controller.cli.text import safe, safe_output
from controller.client import ClientError


def _when(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).astimezone().strftime("%H:%M:%S")


def _request(method: str, path: str, connection: dict[str, Any], **kwargs: Any) -> Any:
    with connect(**connection) as client:
        try:
            return client.request(method, path, **kwargs)
        except ClientError as exc:
            fail(exc)


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Decided and expired ones too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
def approvals(show_all: bool, as_json: bool, **connection: Any) -> None:
    """List approval requests (pending ones unless --all), newest first."""
    query = "" if show_all else "?state=pending"
    found = _request("GET", f"/api/v1/approvals{query}", connection)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no approval requests are pending" if not show_all else "no approval requests")
        return
    click.echo(f"{'ID':>5}  {'TASK':>5}  {'STATE':<8}  {'EXPIRES':<8}  ACTION  (REASON)")
    for a in found:
        reason = f"  ({safe(a['model_reason'][:80])})" if a["model_reason"] else ""
        click.echo(
            f"{a['id']:>5}  {a['task_id']:>5}  {a['state']:<8}  {_when(a['expires_at']):<8}  "
            f"{safe(a['description'])}{reason}"
        )


def _decide(
    approval_id: int, decision: str, reason: str | None, connection: dict[str, Any]
) -> None:
    decided = _request(
        "POST",
        f"/api/v1/approvals/{approval_id}/decision",
        connection,
        json={"decision": decision, "reason": reason},
    )
    click.echo(f"approval {approval_id} {decided['state']}: {safe(decided['description'])}")


@click.command()
@click.argument("approval_id", type=int)
@connection_options
def approve(approval_id: int, **connection: Any) -> None:
    """Approve a pending request: the agent performs that action, on that screen."""
    _decide(approval_id, "approve", None, connection)


@click.command()
@click.argument("approval_id", type=int)
@click.option("--reason", help="Told to the model, so it can do something else.")
@connection_options
def deny(approval_id: int, reason: str | None, **connection: Any) -> None:
    """Deny a pending request: the action is not performed and the model is told why."""
    _decide(approval_id, "deny", reason, connection)


@click.group()
def memory() -> None:
    """What the agent remembers between tasks (shared by every thread)."""


def _memory_url(path: str) -> str:
    relative = path.removeprefix("/memories/").lstrip("/")
    if not relative:
        raise click.BadParameter("name a memory file, like notes.md")
    return "/api/v1/memory/" + quote(relative)


@memory.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
def memory_list(as_json: bool, **connection: Any) -> None:
    """List the memory files."""
    found = _request("GET", "/api/v1/memory", connection)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for f in found:
        click.echo(f"{f['size_bytes']:>8}  {_when(f['updated_at'])}  {safe(f['path'])}")


@memory.command("show")
@click.argument("path")
@connection_options
def memory_show(path: str, **connection: Any) -> None:
    """Print a memory file."""
    found = _request("GET", _memory_url(path), connection)
    text = found["content"]
    click.echo(safe_output(text) if sys.stdout.isatty() else text)


@memory.command("edit")
@click.argument("path")
@click.option(
    "--file", "source", type=click.File("r"), help="Take the new text from FILE (- for stdin)."
)
@connection_options
def memory_edit(path: str, source: Any, **connection: Any) -> None:
    """Change a memory file in $EDITOR (or from --file)."""
    if source is not None:
        text = source.read()
    else:
        with connect(**connection) as client:
            try:
                current = client.request("GET", _memory_url(path))["content"]
            except ClientError as exc:
                current = "" if exc.status == 404 else fail(exc)
        with tempfile.NamedTemporaryFile("w+", suffix=".md", delete=False) as handle:
            handle.write(current)
            name = handle.name
        try:
            subprocess.run([os.environ.get("EDITOR", "vi"), name], check=True)
            with open(name, encoding="utf-8") as edited:
                text = edited.read()
        finally:
            os.unlink(name)
    saved = _request("PUT", _memory_url(path), connection, json={"content": text})
    click.echo(f"saved {safe(saved['path'])} ({saved['size_bytes']} bytes)")


@memory.command("rm")
@click.argument("path")
@connection_options
def memory_rm(path: str, **connection: Any) -> None:
    """Delete a memory file (or a folder of them)."""
    _request("DELETE", _memory_url(path), connection)
    click.echo(f"deleted {safe(path)}")
