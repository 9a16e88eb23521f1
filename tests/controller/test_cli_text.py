"""What the CLI prints that others wrote: escaped for a terminal; and finding the local controller
by --data-dir alone.

A paired device names itself and a task prints what it likes; neither may drive the owner's
terminal (clear it, retitle it, reorder a line with a bidi override, fake a row with a newline).
"""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import LiveServer, wait_until
from sqlalchemy import update

from controller.cli import main
from controller.cli.exit_codes import ExitCode
from controller.cli.text import UNSAFE, safe, safe_output
from controller.client import Client
from controller.store.models import Device

REPO = Path(__file__).parents[2]
# Clears the screen, then reverses what follows; the newline would fake a row of the table.
HOSTILE = "\x1b[2J\u202eevil\nFAKE ROW"
# A device name as a database from before pairing's hidden-character check may hold: U+009B is a
# one-character CSI on some terminals.
HOSTILE_NAME = "\x9b2J\u202eevil"
# Retitles the window, clears the screen, reverses, and overwrites the line with a lone CR.
HOSTILE_OUTPUT = "\x1b]0;pwned\x07\x1b[2J\u202eevil\r\nok\tdone\rX\n"


def cli(server: LiveServer, *args: str) -> Result:
    env = {"DISPATCH_SERVER": server.url, "DISPATCH_TOKEN": server.token}
    return CliRunner().invoke(main, list(args), env=env)


def test_safe_escapes_controls_and_bidi_and_keeps_the_rest() -> None:
    assert safe(HOSTILE) == "\\x1b[2J\\u202eevil\\x0aFAKE ROW"
    assert safe("\x00\x7f\x9b\u061c\u200e\u200f\u202a\u2066\u2069\t") == (
        "\\x00\\x7f\\x9b\\u061c\\u200e\\u200f\\u202a\\u2066\\u2069\\x09"
    )
    assert safe("café ✓ 日本 ~/Projects") == "café ✓ 日本 ~/Projects"
    assert safe_output(HOSTILE_OUTPUT) == (
        "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\r\nok\tdone\\x0dX\n"
    )


def test_tasks_and_devices_print_what_others_wrote_escaped(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as client:
        client.submit(["printf", HOSTILE])
        code = client.pairing_code()["code"]
    paired = httpx.post(
        f"{live_server.url}/api/v1/pair", json={"code": code, "device_name": "renamed below"}
    ).json()
    with live_server.controller.db.write() as session:
        session.execute(
            update(Device).where(Device.id == paired["device_id"]).values(name=HOSTILE_NAME)
        )

    listed = cli(live_server, "tasks")
    assert listed.exit_code == 0, listed.output
    assert "printf \\x1b[2J\\u202eevil\\x0aFAKE ROW" in listed.stdout
    devices = cli(live_server, "devices")
    assert devices.exit_code == 0, devices.output
    assert "\\x9b2J\\u202eevil" in devices.stdout
    revoked = cli(live_server, "devices", "revoke", str(paired["device_id"]))
    assert revoked.exit_code == 0, revoked.output
    assert "(\\x9b2J\\u202eevil) revoked" in revoked.stdout
    for result in (listed, devices, revoked):
        assert not UNSAFE.search(result.stdout.replace("\n", "")), result.stdout
        assert result.stdout.count("\n") == len(result.stdout.splitlines())

    # JSON is for programs: it carries the text exactly (escaped by JSON itself).
    tasks = json.loads(cli(live_server, "tasks", "--json").stdout)
    assert tasks[0]["command"] == ["printf", HOSTILE]
    names = [d["name"] for d in json.loads(cli(live_server, "devices", "--json").stdout)]
    assert HOSTILE_NAME in names


def run_on_terminal(*args: str) -> str:
    """Run `dispatch ARGS` with stdout on a pseudo-terminal; what the terminal received."""
    leader, follower = pty.openpty()
    tty.setraw(follower)  # no newline translation: the bytes exactly as written
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"}
    try:
        process = subprocess.run(
            [sys.executable, "-m", "controller", *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.close(follower)
    assert process.returncode == 0, process.stderr
    received = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side is closed and all was read
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    return received.decode("utf-8")


def test_logs_escape_a_tasks_output_on_a_terminal_and_pass_it_through_a_pipe(
    live_server: LiveServer,
) -> None:
    with Client(live_server.url, live_server.token) as client:
        task = client.submit(["printf", HOSTILE_OUTPUT])
        wait_until(
            lambda: client.task(task["id"])["status"] == "succeeded", 30, "the task to finish"
        )
    connection = ["--server", live_server.url, "--token", live_server.token]
    command = ["logs", str(task["id"]), *connection]

    shown = run_on_terminal(*command)
    assert shown == safe_output(HOSTILE_OUTPUT)
    assert "\x1b" not in shown and "\u202e" not in shown
    assert run_on_terminal(*command, "--raw") == HOSTILE_OUTPUT
    piped = subprocess.run(
        [sys.executable, "-m", "controller", *command],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"},
        timeout=120,
        check=True,
    )
    assert piped.stdout.decode("utf-8") == HOSTILE_OUTPUT


# --- --data-dir -----------------------------------------------------------------------------


@pytest.fixture
def serve_elsewhere(workspace: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """`dispatch serve --data-dir X` with no DISPATCH_* in the environment; (X, that env)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data_dir = workspace / "elsewhere" / "dispatch-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env.update(
        PYTHONPATH=str(REPO),
        XDG_DATA_HOME=str(workspace / "xdg-data"),  # the default data dir: empty
        XDG_CONFIG_HOME=str(workspace / "xdg-config"),
    )
    log = workspace / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--no-pair",
            ],
            env={**env, "DISPATCH_SANDBOX_BACKEND": "fake"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"dispatch serve exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 60, "dispatch serve --data-dir to answer")
        yield data_dir, env
    finally:
        process.terminate()
        process.wait(30)
        print(f"--- {log} ---\n{log.read_text()[-3000:]}")


def dispatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_client_commands_find_the_controller_by_data_dir(
    serve_elsewhere: tuple[Path, dict[str, str]],
) -> None:
    data_dir, env = serve_elsewhere
    paired = dispatch(env, "pair", "--data-dir", str(data_dir), "--json")
    assert paired.returncode == 0, paired.stderr
    issued: dict[str, Any] = json.loads(paired.stdout)
    assert issued["url"].endswith(f"/pair?code={issued['code']}")
    for args in (["tasks", "--json"], ["devices", "--json"]):
        listed = dispatch(env, *args, "--data-dir", str(data_dir))
        assert listed.returncode == 0, listed.stderr
    owner = json.loads(listed.stdout)[0]
    # `devices` takes it before its subcommand, as it takes --server and --token.
    refused = dispatch(env, "devices", "--data-dir", str(data_dir), "revoke", str(owner["id"]))
    assert refused.returncode == ExitCode.REFUSED and "owner token" in refused.stderr
    # Without it, the default data directory has no owner token, and the error says what to do.
    lost = dispatch(env, "pair")
    assert lost.returncode == ExitCode.UNAUTHORIZED
    assert "--data-dir" in lost.stderr
