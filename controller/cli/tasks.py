"""`dispatch submit | tasks | logs | cancel | retry`: the controller's API from a terminal.

The server and token come from --server/--token, then DISPATCH_SERVER/DISPATCH_TOKEN, then the
local controller (its URL and owner token in the data directory, which --data-dir names as it
does for `dispatch serve`), so on the controller's own machine no pairing is needed. The owner
token only ever goes to that local controller; a server named explicitly needs --token. Text the
controller sends is printed through `cli.text`, so it cannot drive the terminal. Exit codes are
in controller/exit_codes.py and the README.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click

from controller.cli.exit_codes import ExitCode
from controller.cli.text import safe, safe_output
from controller.client import Client, ClientError

F = TypeVar("F", bound=Callable[..., Any])


TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def task_exit_code(task: dict[str, Any]) -> int:
    """How `submit --wait` exits for a finished task."""
    status, outcome, code = task["status"], task.get("outcome"), task.get("exit_code")
    if status == "succeeded":
        return ExitCode.OK
    if status == "cancelled":
        return ExitCode.INTERRUPTED
    if status == "interrupted":
        return ExitCode.TASK_INTERRUPTED
    if outcome == "timed_out":
        return ExitCode.TIMED_OUT
    if outcome == "out_of_memory":
        return ExitCode.OUT_OF_MEMORY
    if code is None:
        return ExitCode.SANDBOX_FAILED
    return int(code) & 0xFF or ExitCode.REFUSED


def fail(exc: ClientError) -> NoReturn:
    click.echo(f"dispatch: {safe(exc.message)}", err=True)
    if exc.code in ("no_token", "unauthorized") or exc.status == 401:
        sys.exit(ExitCode.UNAUTHORIZED)
    if exc.code == "unreachable":
        sys.exit(ExitCode.UNREACHABLE)
    if exc.code == "folder_not_granted":
        sys.exit(ExitCode.GRANT_REFUSED)
    sys.exit(ExitCode.REFUSED)


def connection_options(func: F) -> F:
    """--server, --token and --data-dir, passed as `server`, `token` and `data_dir`."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="The local controller's data directory, as given to `dispatch serve` (for its URL "
        "and owner token) [env DISPATCH_DATA_DIR; default $XDG_DATA_HOME/dispatch].",
    )(func)
    func = click.option(
        "--token",
        metavar="TOKEN",
        help="Device token [env DISPATCH_TOKEN; default: this machine's owner token, for the "
        "local controller only].",
    )(func)
    func = click.option(
        "--server",
        metavar="URL",
        help="Controller URL [env DISPATCH_SERVER; default: the local controller].",
    )(func)
    return func


def connect(server: str | None, token: str | None, data_dir: Path | None = None) -> Client:
    try:
        return Client.connect(server, token, data_dir=data_dir)
    except ClientError as exc:
        fail(exc)


def parse_folder(text: str) -> tuple[str, str]:
    """`PATH[:ro|:rw]` -> (absolute path, mode); read-only unless `:rw`."""
    path, sep, mode = text.rpartition(":")
    if not sep or mode not in ("ro", "rw"):
        path, mode = text, "ro"
    if not path:
        raise click.BadParameter(f"{text!r} names no folder; use PATH[:ro|:rw]")
    # Relative paths mean "from here"; `~` is left for the controller's machine to expand.
    if not path.startswith("~"):
        path = os.path.abspath(path)
    return path, mode


def print_output(event_data: dict[str, Any], raw: bool = False) -> None:
    """Task output to our stdout or stderr; escaped for a terminal unless `raw`.

    Output read by a program (a pipe, a file) is passed through as the task wrote it.
    """
    stream: TextIO = sys.stderr if event_data["stream"] == "stderr" else sys.stdout
    text = event_data["text"]
    stream.write(text if raw or not stream.isatty() else safe_output(text))
    stream.flush()


STEP_RESULT_CHARS = 600


def step_lines(step: dict[str, Any]) -> list[str]:
    """An agent step as lines a person reads: the model's words, its calls, their results.

    Everything in a step came from the model or from a page it read, so all of it is escaped.
    """
    head = f"[step {step['index']}]"
    if step["kind"] == "retry":
        return [f"{head} {safe(step['text'])}"]
    lines = []
    if step["kind"] == "model":
        if step["text"]:
            lines.append(f"{head} model: {safe_output(step['text'])}")
        for call in step["tool_calls"]:
            name = f"{call['toolset']}.{call['name']}" if call.get("toolset") else call["name"]
            shown = json.dumps(call["input"], ensure_ascii=False)[:STEP_RESULT_CHARS]
            lines.append(f"{head} calls {safe(name)} {safe(shown)}")
        if not lines:
            lines.append(f"{head} model: (no text)")
        return lines
    for result in step["results"]:
        kind = "refused/failed" if result["is_error"] else "result"
        text = result["text"]
        cut = (
            f" [... {len(text) - STEP_RESULT_CHARS} more chars]"
            if len(text) > STEP_RESULT_CHARS
            else ""
        )
        images = "".join(f" [screenshot {sha[:12]}]" for sha in result.get("images", []))
        lines.append(f"{head} {kind}: {safe_output(text[:STEP_RESULT_CHARS])}{cut}{images}")
    return lines


def print_step(step: dict[str, Any]) -> None:
    for line in step_lines(step):
        click.echo(line)


RAW_OPTION = click.option(
    "--raw",
    is_flag=True,
    help="Print the task's output as it is, escape sequences too, even on a terminal.",
)


def follow(client: Client, task_id: int, raw: bool = False) -> dict[str, Any]:
    """Print a task's output as it streams; return the task once it has finished.

    While it waits in the queue for a reason (the sandbox engine is unreachable, say), the reason
    goes to stderr, so a wait that lasts says why.
    """
    said = None
    for event in client.events(task_id=task_id, after=0):
        if event.kind == "task.output":
            print_output(event.data["data"], raw)
        elif event.kind == "task.step":
            print_step(event.data["data"])
        elif event.kind == "task.network" and not event.data["data"]["allowed"]:
            request = event.data["data"]
            click.echo(
                safe(f"dispatch: network: refused {request['domain']}:{request['port']} "
                     f"({request['reason']})"),
                err=True,
            )  # fmt: skip
        elif event.kind == "task.state":
            state = event.data["data"]
            if state["status"] in TERMINAL:
                break
            reason = state.get("reason")
            if state["status"] == "queued" and reason and reason != said:
                click.echo(f"task {task_id}: {safe(reason)}", err=True)
                said = reason
    return client.task(task_id)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--thread", default="default", show_default=True, help="Thread to queue it in.")
@click.option(
    "--folder",
    "folders",
    multiple=True,
    metavar="PATH[:ro|:rw]",
    help="A granted folder to mount (read-only unless :rw); repeatable.",
)
@click.option("--network", type=click.Choice(["none", "open"]), default="none", show_default=True)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="DOMAIN[:PORT]|PRESET",
    help="Give the task restricted internet: only this domain (HTTP on 80, HTTPS on 443, or "
    "the port given; *.example.com for the names below it) or the controller's network preset "
    "(python-packages); repeatable.",
)
@click.option(
    "--vm",
    is_flag=True,
    help="Run it in a QEMU virtual machine with its own kernel (the libvirt backend) instead of "
    "a container.",
)
@click.option("--timeout", "timeout_s", type=float, help="Seconds before it is killed.")
@click.option("--wait", is_flag=True, help="Stream the output and exit with the task's code.")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@click.option("--agent", "prompt", metavar="PROMPT", help="Queue an agent task with this prompt.")
@click.option(
    "--tool",
    "tools",
    multiple=True,
    type=click.Choice(["bash", "edit", "computer", "browser", "memory"]),
    help="A tool the agent may use; repeatable (default: bash, edit).",
)
@click.option("--display", type=click.Choice(["sandbox", "host"]), default="sandbox")
@click.option("--max-steps", type=int, default=30, show_default=True, help="Model turns at most.")
@click.option("--model", help="The model to use [default: the controller's `model` setting].")
@click.option(
    "--allow-domain",
    "allowed_domains",
    multiple=True,
    metavar="NAME",
    help="A domain the agent's browser may open (example.com, *.example.com); repeatable.",
)
@RAW_OPTION
@connection_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def submit(
    thread: str,
    folders: tuple[str, ...],
    network: str,
    allow: tuple[str, ...],
    vm: bool,
    timeout_s: float | None,
    wait: bool,
    as_json: bool,
    prompt: str | None,
    tools: tuple[str, ...],
    display: str,
    max_steps: int,
    model: str | None,
    allowed_domains: tuple[str, ...],
    raw: bool,
    server: str | None,
    token: str | None,
    data_dir: Path | None,
    command: tuple[str, ...],
) -> None:
    """Queue a task: `dispatch submit [OPTIONS] -- COMMAND...`, or an agent task:
    `dispatch submit --agent PROMPT [--tool NAME]...`."""
    if (prompt is None) == (not command):
        raise click.UsageError("give either -- COMMAND... or --agent PROMPT, not both or neither")
    grants = [parse_folder(f) for f in folders]
    if allow and network == "open":
        raise click.UsageError("--allow limits the network; it cannot go with --network open")
    chosen: str | dict[str, Any] = {"allow": list(allow)} if allow else network
    agent = None
    if prompt is not None:
        agent = {
            "prompt": prompt,
            "tools": list(tools or ("bash", "edit")),
            "display": display,
            "max_steps": max_steps,
            "model": model,
            "allowed_domains": list(allowed_domains),
        }
    with connect(server, token, data_dir) as client:
        try:
            task = client.submit(
                command,
                thread=thread,
                folders=grants,
                network=chosen,
                timeout_s=timeout_s,
                agent=agent,
                isolation="vm" if vm else "container",
            )
            if not wait:
                click.echo(json.dumps(task, indent=2) if as_json else f"task {task['id']} queued")
                return
            try:
                task = follow(client, task["id"], raw)
            except KeyboardInterrupt:
                click.echo(
                    f"\ndispatch: stopped waiting; task {task['id']} goes on "
                    f"(`dispatch cancel {task['id']}` stops it)",
                    err=True,
                )
                sys.exit(ExitCode.INTERRUPTED)
        except ClientError as exc:
            fail(exc)
    if as_json:
        click.echo(json.dumps(task, indent=2))
    elif task["status"] != "succeeded":
        click.echo(
            f"dispatch: task {task['id']} {task['status']}: {safe(str(task['reason']))}", err=True
        )
    elif task.get("final_answer"):
        click.echo(f"answer: {safe_output(task['final_answer'])}")
    sys.exit(task_exit_code(task))


def _when(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.option("--thread-id", type=int, help="Only this thread's tasks.")
@click.option("--status", type=click.Choice((*TERMINAL, "queued", "running")))
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
def tasks(
    thread_id: int | None,
    status: str | None,
    limit: int,
    as_json: bool,
    server: str | None,
    token: str | None,
    data_dir: Path | None,
) -> None:
    """List tasks, newest first."""
    with connect(server, token, data_dir) as client:
        try:
            found = client.tasks(thread_id=thread_id, status=status, limit=limit)
        except ClientError as exc:
            fail(exc)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(
        f"{'ID':>6}  {'STATUS':<11}  {'EXIT':>4}  {'THREAD':>6}  {'CREATED':<19}  {'BY':<12}  "
        "COMMAND"
    )
    for t in found:
        code = "-" if t["exit_code"] is None else str(t["exit_code"])
        line = safe(" ".join(t["command"]))
        click.echo(
            safe(f"{t['id']:>6}  {t['status']:<11}  {code:>4}  {t['thread_id']:>6}  ")
            + f"{_when(t['created_at']):<19}  {safe(_by(t['submitted_by'])):<12}  {line[:60]}"
        )


def _by(submitter: dict[str, Any] | None) -> str:
    """Who submitted a task: `owner` by role, else the device's name and id."""
    if submitter is None:
        return "-"
    if submitter["role"] == "owner":
        return "owner"
    return f"{submitter['name'][:8]}#{submitter['device_id']}"


@click.command()
@click.argument("task_id", type=int)
@click.option("--follow", "-f", "follow_", is_flag=True, help="Keep printing until it finishes.")
@click.option(
    "--network",
    "network",
    is_flag=True,
    help="Print the task's network requests (allowlist mode) instead of its output.",
)
@click.option("--json", "as_json", is_flag=True, help="With --network: print JSON.")
@RAW_OPTION
@connection_options
def logs(
    task_id: int,
    follow_: bool,
    network: bool,
    as_json: bool,
    raw: bool,
    server: str | None,
    token: str | None,
    data_dir: Path | None,
) -> None:
    """Print a task's output (stdout to stdout, stderr to stderr).

    On a terminal, control characters other than line breaks and tabs are shown escaped, so a
    task cannot drive the terminal; --raw prints them as they are. Piped output is unchanged.
    """
    with connect(server, token, data_dir) as client:
        try:
            if network:
                found = client.request("GET", f"/api/v1/tasks/{task_id}/network")
                if as_json:
                    click.echo(json.dumps(found, indent=2))
                else:
                    print_network(found)
                return
            if follow_:
                follow(client, task_id, raw)
                return
            task = client.task(task_id)
            for chunk in task["output"]:
                print_output(chunk, raw)
            for step in task.get("steps", []):
                print_step(step)
            if task.get("final_answer"):
                click.echo(f"answer: {safe_output(task['final_answer'])}")
        except ClientError as exc:
            fail(exc)


def print_network(found: dict[str, Any]) -> None:
    """One line per request: time, verdict, method, domain:port, bytes each way, reason."""
    if found["network"] != "allowlist":
        click.echo(f"task {found['task_id']} has network {found['network']}: nothing is logged")
        return
    click.echo(f"allowed: {safe(', '.join(found['allow']))}")
    click.echo(
        f"{'TIME':<19}  {'VERDICT':<7}  {'METHOD':<7}  {'DESTINATION':<32}  {'UP':>9}  {'DOWN':>9}"
    )
    for r in found["requests"]:
        verdict = "allowed" if r["allowed"] else "refused"
        where = safe(f"{r['domain']}:{r['port']}")
        line = (
            f"{_when(r['at']):<19}  {verdict:<7}  {safe(r['method']):<7}  {where:<32}  "
            f"{r['bytes_up']:>9}  {r['bytes_down']:>9}"
        )
        if r["reason"]:
            line += f"  {safe(r['reason'])}"
        click.echo(line)
    click.echo(f"{len(found['requests'])} requests, {found['refused']} refused")


@click.command()
@click.argument("task_id", type=int)
@connection_options
def cancel(task_id: int, server: str | None, token: str | None, data_dir: Path | None) -> None:
    """Cancel a queued task, or kill a running one."""
    with connect(server, token, data_dir) as client:
        try:
            task = client.cancel(task_id)
        except ClientError as exc:
            fail(exc)
    click.echo(f"task {task_id} {safe(task['status'])}")


@click.command()
@click.argument("task_id", type=int)
@connection_options
def retry(task_id: int, server: str | None, token: str | None, data_dir: Path | None) -> None:
    """Queue a finished (failed, cancelled, interrupted) task again, as a new task."""
    with connect(server, token, data_dir) as client:
        try:
            task = client.retry(task_id)
        except ClientError as exc:
            fail(exc)
    click.echo(f"task {task['id']} queued (retry of {task_id})")
