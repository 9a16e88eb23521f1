"""`dispatch sandbox ...` (run one command in a fresh sandbox) and `dispatch images build`."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from controller.cli.exit_codes import ExitCode
from controller.local import local_data_dir
from controller.paths import default_config_dir, default_data_dir
from sandbox import (
    EngineUnavailable,
    GrantRefused,
    ImageMissing,
    Limits,
    Network,
    Outcome,
    SandboxError,
    SandboxSpec,
    Stream,
    prune_vms,
)
from sandbox.base import DEADLINE_GRACE_S, DEFAULT_IMAGE
from sandbox.egress import EgressRecord, PolicyInvalid

DEFAULT_LIMITS = Limits()


def _dispatch_paths() -> tuple[Path, ...]:
    """Dispatch's own data and configuration, wherever this machine's settings put them."""
    paths = [default_data_dir(), default_config_dir(), local_data_dir()]
    config = os.environ.get("DISPATCH_CONFIG")
    if config:
        paths.append(Path(config).expanduser().absolute().parent)
    return tuple(paths)


def _fail(message: str, code: ExitCode) -> None:
    click.echo(f"dispatch: {message}", err=True)
    sys.exit(code)


def _write(stream: Stream, data: bytes) -> None:
    out = sys.stdout.buffer if stream is Stream.STDOUT else sys.stderr.buffer
    out.write(data)
    out.flush()


def _network_config(
    allow: tuple[str, ...], mapped: dict[str, str]
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Presets expanded and network_resolve merged in, from the config file (flags win)."""
    from controller.errors import ConfigError
    from controller.settings import expand_allow, load_settings

    try:
        settings = load_settings()
        return expand_allow(allow, settings), {**settings.network_resolve, **mapped}
    except ConfigError as exc:
        _fail(str(exc), ExitCode.USAGE)
    except PolicyInvalid as exc:
        _fail(f"--allow: {exc}", ExitCode.USAGE)
    raise AssertionError("unreachable")


def _report_refusal(record: EgressRecord) -> None:
    """Say on stderr when the proxy refused something, so a failing download explains itself."""
    if not record.allowed:
        click.echo(
            f"dispatch: network: refused {record.domain}:{record.port} ({record.reason})", err=True
        )


@click.group()
def sandbox() -> None:
    """Run commands in hardened sandboxes, and clean up after crashes."""


@sandbox.command(
    "run",
    context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False},
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="PATH[:ro|:rw]",
    help="A host folder to show inside, at the same path; read-only unless :rw. Repeatable.",
)
@click.option(
    "--network",
    type=click.Choice([n.value for n in Network]),
    default="none",
    show_default=True,
    help="'open' gives the sandbox the network (a warning is printed); 'allowlist' only the "
    "--allow domains, through Dispatch's filtering proxy.",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="DOMAIN[:PORT]",
    help="A domain the command may reach (HTTP on 80, HTTPS on 443, or the port given); "
    "*.example.com allows the names below it; or a preset of config.toml's [network.presets] "
    "(python-packages). Implies --network allowlist. Repeatable.",
)
@click.option(
    "--resolve",
    "resolve",
    multiple=True,
    metavar="NAME=ADDRESS",
    help="Reach NAME at ADDRESS (like curl --resolve); allows that address even if it is "
    "private or this host's. Repeatable; added to config.toml's network_resolve.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Kill every process of the command after this many seconds.",
)
@click.option(
    "--memory-mb",
    type=click.IntRange(min=16),
    default=DEFAULT_LIMITS.memory_mb,
    show_default=True,
    help="Memory limit; exceeding it kills the command.",
)
@click.option(
    "--cpus",
    type=click.FloatRange(min=0.01),
    default=DEFAULT_LIMITS.cpus,
    show_default=True,
    help="CPU limit, in cores.",
)
@click.option(
    "--pids",
    type=click.IntRange(min=8),
    default=DEFAULT_LIMITS.pids,
    show_default=True,
    help="Most processes and threads at once.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    help="Working directory inside (absolute). Default: the first mount, else home.",
)
@click.option(
    "--git-writable",
    is_flag=True,
    help="Let the command write .git folders inside :rw mounts (read-only by default: their "
    "hooks and config run on the host).",
)
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, help="Sandbox image.")
@click.option(
    "--backend",
    type=click.Choice(["docker", "libvirt"]),
    default="docker",
    show_default=True,
    help="'libvirt': a QEMU virtual machine with its own kernel (`dispatch images build --vm`).",
)
@click.argument("command", nargs=-1, required=True)
def run(
    mounts: tuple[str, ...],
    network: str,
    allow: tuple[str, ...],
    resolve: tuple[str, ...],
    timeout_s: float | None,
    memory_mb: int,
    cpus: float,
    pids: int,
    workdir: Path | None,
    git_writable: bool,
    image: str,
    backend: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in a fresh sandbox, stream its output, and exit with its exit code.

    \b
    Example:
      dispatch sandbox run --mount ~/Projects/app:rw -- make -C ~/Projects/app test
    """
    from sandbox import create
    from sandbox.docker import connect, prune_orphans
    from sandbox.mounts import git_mounts, validate_grants
    from sandbox.ownership import check_writable, sandbox_user

    if workdir is not None and not workdir.is_absolute():
        _fail(f"--workdir {workdir} is relative; give an absolute path", ExitCode.USAGE)
    try:
        granted = validate_grants(mounts, protected=_dispatch_paths())
        # No grants here: the person running this names the folders, so the sandbox runs as
        # their owner (never root).
        user = sandbox_user(granted)
        writable = [m.host for m in granted if not m.read_only]
        for folder in writable:
            check_writable(folder, user)
        git = () if git_writable else git_mounts(writable, skip={m.host for m in granted})
    except GrantRefused as exc:
        _fail(f"refused: {exc}", ExitCode.GRANT_REFUSED)
    if allow and network == Network.OPEN.value:
        _fail("--allow limits the network; it cannot go with --network open", ExitCode.USAGE)
    if allow:
        network = Network.ALLOWLIST.value
    mapped = {}
    for item in resolve:
        name, sep, address = item.partition("=")
        if not sep:
            _fail(
                f"--resolve {item!r}: write NAME=ADDRESS, e.g. intranet.test=10.0.0.5",
                ExitCode.USAGE,
            )
        mapped[name] = address
    if network == Network.ALLOWLIST.value:
        allow, mapped = _network_config(allow, mapped)
    if network == Network.OPEN.value:
        click.echo("dispatch: warning: --network open lets the command reach the network", err=True)
    spec = SandboxSpec(
        image=image,
        mounts=(*granted, *git),
        network=Network(network),
        limits=Limits(memory_mb=memory_mb, cpus=cpus, pids=pids),
        workdir=workdir or (granted[0].host if granted else None),
        user=user,
        # A sandbox left behind by a killed `dispatch sandbox run` still stops by itself.
        deadline_s=timeout_s + DEADLINE_GRACE_S if timeout_s is not None else None,
        # --git-writable: the command may make repositories too, none is renamed aside.
        git_writable=tuple(writable) if git_writable else (),
        allow=allow,
        resolve=mapped,
    )
    try:
        options: dict[str, object] = {}
        if backend == "docker":
            client = connect()
            prune_orphans(client)
            options["client"] = client
            options["on_egress"] = _report_refusal
        else:
            prune_vms(everything=False)
        with create(backend, spec, **options) as box:
            result = box.exec(list(command), timeout_s=timeout_s, on_output=_write)
        # What a daemon of the command left after it ended: renamed aside, stripped by stop().
        late = getattr(box, "git_quarantined_at_stop", ())
        late_setid = getattr(box, "setid_stripped_at_stop", ())
        if late or late_setid:
            result = replace(
                result,
                git_quarantined=(*result.git_quarantined, *late),
                setid_stripped=(*result.setid_stripped, *late_setid),
            )
    except PolicyInvalid as exc:
        _fail(str(exc), ExitCode.USAGE)
    except EngineUnavailable as exc:
        _fail(str(exc), ExitCode.ENGINE_UNAVAILABLE)
    except ImageMissing as exc:
        _fail(str(exc), ExitCode.IMAGE_MISSING)
    except SandboxError as exc:
        _fail(str(exc), ExitCode.SANDBOX_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted; the sandbox was removed", ExitCode.INTERRUPTED)
    if result.outcome is Outcome.TIMED_OUT:
        _fail(result.describe(), ExitCode.TIMED_OUT)
    if result.outcome is Outcome.OUT_OF_MEMORY:
        _fail(result.describe(), ExitCode.OUT_OF_MEMORY)
    if result.setid_stripped or result.git_quarantined:
        _fail(result.describe(), ExitCode.SANDBOX_FAILED)
    sys.exit(result.exit_code)


@sandbox.command("prune")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Remove every Dispatch sandbox, including ones still in use.",
)
def prune(everything: bool) -> None:
    """Remove sandboxes left behind by a crashed Dispatch process."""
    from sandbox.docker import connect, prune_orphans

    try:
        removed = prune_orphans(connect(), everything=everything)
    except EngineUnavailable as exc:
        _fail(str(exc), ExitCode.ENGINE_UNAVAILABLE)
    removed += prune_vms(everything=everything)
    for name in removed:
        click.echo(f"removed {name}")
    click.echo(f"{len(removed)} sandbox(es) removed", err=True)


@click.group()
def images() -> None:
    """Build the container images Dispatch runs."""


@images.command("build")
@click.option(
    "--offline",
    is_flag=True,
    help="Do not try a registry: bootstrap the Debian base with debootstrap.",
)
@click.option("--base", help="Build on this base image instead of debian:bookworm-slim.")
@click.option(
    "--vm",
    is_flag=True,
    help="Also build the VM disk image of the libvirt backend (from the sandbox image).",
)
def build(offline: bool, base: str | None, vm: bool) -> None:
    """Build the images that are missing or out of date (a no-op when nothing changed)."""
    from sandbox.docker import connect
    from sandbox.images import build_all

    def progress(line: str) -> None:
        click.echo(line, err=True)

    try:
        client = connect()
        outcomes = build_all(client, offline=offline, base=base, progress=progress)
        if vm:
            from sandbox.vm.image import build_vm

            built_vm = build_vm(client, offline=offline, base=base, progress=progress)
    except EngineUnavailable as exc:
        _fail(str(exc), ExitCode.ENGINE_UNAVAILABLE)
    except SandboxError as exc:
        _fail(str(exc), ExitCode.SANDBOX_FAILED)
    for outcome in outcomes:
        click.echo(
            f"{outcome.tag}: {'built' if outcome.built else 'up to date'} (base {outcome.base})"
        )
    if vm:
        click.echo(f"VM image {built_vm.path}: {'built' if built_vm.built else 'up to date'}")
