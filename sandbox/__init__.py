"""Isolation backends behind one small interface.

    from sandbox import create, SandboxSpec, Mount
    with create("docker", SandboxSpec(mounts=(Mount(Path("/src")),))) as box:
        result = box.exec(["ls", "/src"], timeout_s=10)

Backends are chosen by name and imported lazily, so a missing optional dependency only matters
when that backend is asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from sandbox.base import (
    DEFAULT_IMAGE,
    DEFAULT_OUTPUT_CAP_BYTES,
    ExecResult,
    Limits,
    Mount,
    Network,
    Outcome,
    Process,
    Sandbox,
    SandboxSpec,
    Spawner,
    Stream,
)
from sandbox.errors import (
    BackendUnavailable,
    EngineUnavailable,
    FileOperationFailed,
    GrantRefused,
    ImageBuildFailed,
    ImageMissing,
    SandboxError,
    SandboxNotRunning,
)

# name -> (module, class, pip extra that provides its dependency)
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "docker": ("sandbox.docker", "DockerSandbox", None),
    "fake": ("sandbox.fake", "FakeSandbox", None),
    "libvirt": ("sandbox.libvirt", "LibvirtSandbox", "libvirt"),
}


def create(backend: str, spec: SandboxSpec, **options: Any) -> Sandbox:
    """Return an unstarted sandbox of the named backend.

    Raises:
        BackendUnavailable: the name is unknown or its extra is not installed.
    """
    try:
        module_name, class_name, extra = BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise BackendUnavailable(
            f"unknown sandbox backend {backend!r}; choose one of: {known}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'dispatch[{extra}]'" if extra else "reinstall dispatch"
        raise BackendUnavailable(
            f"sandbox backend {backend!r} cannot load ({exc}); {hint}"
        ) from exc
    factory = getattr(module, class_name)
    sandbox: Sandbox = factory(spec, **options)
    return sandbox


def prune_vms(*, everything: bool = False) -> list[str]:
    """Remove VMs of the libvirt backend whose controller died (all of ours with `everything`);
    nothing when that backend is not installed or libvirtd is not running. Returns their names."""
    try:
        from sandbox.libvirt import connect as connect_libvirt
        from sandbox.libvirt import prune_orphans
    except ImportError:
        return []
    if not Path("/run/libvirt/libvirt-sock").exists():
        return []
    try:
        conn = connect_libvirt()
    except EngineUnavailable:
        return []
    try:
        removed: list[str] = prune_orphans(conn, everything=everything)
        return removed
    finally:
        conn.close()


__all__ = [
    "BACKENDS",
    "DEFAULT_IMAGE",
    "DEFAULT_OUTPUT_CAP_BYTES",
    "BackendUnavailable",
    "EngineUnavailable",
    "ExecResult",
    "FileOperationFailed",
    "GrantRefused",
    "ImageBuildFailed",
    "ImageMissing",
    "Limits",
    "Mount",
    "Network",
    "Outcome",
    "Process",
    "Sandbox",
    "SandboxError",
    "SandboxNotRunning",
    "SandboxSpec",
    "Spawner",
    "Stream",
    "create",
    "prune_vms",
]
