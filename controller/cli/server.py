"""`dispatch serve | pair | devices | openapi`: run the controller and manage who may use it."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import qrcode

from controller.cli.exit_codes import ExitCode
from controller.cli.tasks import connect, connection_options, fail
from controller.cli.text import safe
from controller.cli.tls import loopback_warning
from controller.client import ClientError
from controller.errors import ConfigError
from controller.local import SERVER_FILE, write_private

if TYPE_CHECKING:
    from controller.settings import Settings


def qr_text(url: str) -> str:
    """The URL as a QR code drawn with block characters, for a terminal."""
    code = qrcode.QRCode(border=1)
    code.add_data(url)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def _bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio only turns Nagle off (TCP_NODELAY) for sockets
    # whose proto says TCP, and with Nagle on, every small response waits for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); choose another "
            "port with --port (or DISPATCH_PORT), or stop what is using it"
        ) from None
    sock.listen(2048)
    return sock


@click.command()
@click.option("--host", help="Address to listen on [env DISPATCH_HOST; default 127.0.0.1].")
@click.option("--port", type=int, help="Port [env DISPATCH_PORT; default 8420].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Database and owner token [env DISPATCH_DATA_DIR; default $XDG_DATA_HOME/dispatch].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file [env DISPATCH_CONFIG; default $XDG_CONFIG_HOME/dispatch/config.toml].",
)
@click.option("--pair/--no-pair", default=True, help="Print a pairing code at start.")
def serve(
    host: str | None, port: int | None, data_dir: Path | None, config_file: Path | None, pair: bool
) -> None:
    """Run the controller: the HTTP API, the queue and the task runner."""
    # Imported here so that client commands (pair, devices, ...) start quickly.
    import uvicorn

    from controller.api.app import create_app
    from controller.api.edge import ensure_descriptors, server_config
    from controller.service import Controller
    from controller.settings import load_settings

    try:
        settings = load_settings(
            {"host": host, "port": port, "data_dir": data_dir}, config=config_file
        )
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # Migration chatter is not news at every start.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        ensure_descriptors(settings.max_connections)
        sock = _bind(settings)
        controller = Controller(settings)
        controller.start()
    except ConfigError as exc:
        click.echo(f"dispatch serve: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    server_file = settings.data_dir / SERVER_FILE
    listen_host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    listen_host = f"[{listen_host}]" if ":" in listen_host else listen_host
    scheme = "https" if settings.tls else "http"
    write_private(
        server_file,
        json.dumps({"url": f"{scheme}://{listen_host}:{settings.port}", "pid": os.getpid()}),
    )
    click.echo(f"Dispatch controller listening on {settings.url}")
    click.echo(f"  data directory: {settings.data_dir}")
    click.echo(
        f"  sandbox backend: {settings.sandbox_backend}; folders granted: {len(settings.folders)}"
    )
    if pair:
        issued = controller.auth.issue_pairing_code()
        url = f"{settings.url}/pair?code={issued.code}"
        click.echo(f"  pair a phone: open {url} (code {issued.code}, valid 10 minutes)")
        click.echo(qr_text(url))
    warning = loopback_warning(settings.url)
    if warning is not None:
        click.echo(warning)
    if not settings.tls:
        click.echo(
            "  no HTTPS: a phone's browser will not install the console or show notifications "
            "over plain HTTP; `dispatch tls init` makes a certificate"
        )
    sys.stdout.flush()
    app = create_app(settings, controller=controller)
    tls_options = (
        {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
        if settings.tls
        else {}
    )
    try:
        uvicorn.Server(server_config(app, settings, **tls_options)).run(sockets=[sock])
    finally:
        server_file.unlink(missing_ok=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
def pair(as_json: bool, server: str | None, token: str | None, data_dir: Path | None) -> None:
    """Print a one-time pairing code, the URL to open on the phone, and its QR code."""
    with connect(server, token, data_dir) as client:
        try:
            issued = client.pairing_code()
        except ClientError as exc:
            fail(exc)
    if as_json:
        click.echo(json.dumps(issued, indent=2))
        return
    click.echo(safe(f"Pairing code: {issued['code']} (single use, expires {issued['expires_at']})"))
    click.echo(f"Open on the phone: {safe(issued['url'])}")
    click.echo(qr_text(issued["url"]))
    warning = loopback_warning(issued["url"])
    if warning is not None:
        for line in warning.splitlines():
            click.echo(safe(line), err=True)


def _device_rows(found: list[dict[str, Any]]) -> list[str]:
    # ROLE, not NAME, says which is the owner: the server gives the owner's role, never a name.
    header = f"{'ID':>4}  {'ROLE':<6}  {'NAME':<24}  {'CREATED':<20}  {'LAST SEEN':<20}  STATE"
    rows = [header]
    for d in found:
        state = "revoked" if d["revoked_at"] else "active"
        rows.append(
            f"{d['id']:>4}  {d['role']:<6}  {safe(d['name'])[:24]:<24}  "
            f"{safe(d['created_at'])[:19]:<20}  {safe(d['last_seen_at'] or '-')[:19]:<20}  {state}"
        )
    return rows


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@connection_options
@click.pass_context
def devices(
    ctx: click.Context,
    as_json: bool,
    server: str | None,
    token: str | None,
    data_dir: Path | None,
) -> None:
    """List paired devices (role, name, created, last seen); `devices revoke ID` revokes one."""
    ctx.obj = {"server": server, "token": token, "data_dir": data_dir}
    if ctx.invoked_subcommand is not None:
        return
    with connect(server, token, data_dir) as client:
        try:
            found = client.devices()
        except ClientError as exc:
            fail(exc)
    click.echo(json.dumps(found, indent=2) if as_json else "\n".join(_device_rows(found)))


@devices.command()
@click.argument("device_id", type=int)
@click.pass_context
def revoke(ctx: click.Context, device_id: int) -> None:
    """Revoke a device's token (it fails from its next request); cancel its queued tasks."""
    with connect(ctx.obj["server"], ctx.obj["token"], ctx.obj["data_dir"]) as client:
        try:
            device = client.revoke(device_id)
        except ClientError as exc:
            fail(exc)
    cancelled = device["cancelled_task_ids"]
    click.echo(f"device {device_id} ({safe(device['name'])}) revoked")
    if cancelled:
        ids = ", ".join(str(i) for i in cancelled)
        click.echo(f"cancelled {len(cancelled)} queued task(s) it had submitted: {ids}")


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output (the repo keeps docs/openapi.json).",
)
def openapi(output: Path | None) -> None:
    """Print the HTTP API's OpenAPI document."""
    from controller.api.app import create_app, openapi_document
    from controller.settings import Settings

    text = json.dumps(openapi_document(create_app(Settings())), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
