"""Removing the VMs and overlays a crashed or killed controller left behind.

Each domain carries metadata naming the process that made it (see vm/domain.py); one whose
process is gone is an orphan.
"""

from __future__ import annotations

import contextlib
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import libvirt

from sandbox.docker import _is_orphan
from sandbox.vm.domain import METADATA_NS
from sandbox.vm.image import default_vm_dir

NAME_PREFIX = "dispatch-"
# An overlay folder younger than this may belong to a sandbox starting right now.
RUN_DIR_GRACE_S = 600.0


def remove_domain(domain: libvirt.virDomain) -> None:
    """Destroy (if running) and undefine a domain; gone already is fine."""
    with contextlib.suppress(libvirt.libvirtError):
        domain.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)


def domain_labels(domain: libvirt.virDomain) -> dict[str, str] | None:
    """The metadata Dispatch put on a domain, or None if it is not one of Dispatch's."""
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError:
        return None
    root = ET.fromstring(text)
    return {item.get("name", ""): item.text or "" for item in root}


def prune_orphans(
    conn: libvirt.virConnect,
    *,
    everything: bool = False,
    match: Mapping[str, str] | None = None,
    vm_dir: Path | None = None,
) -> list[str]:
    """Remove Dispatch VMs whose creating process is gone (or all of them), with their files.

    Returns the names of the domains removed.
    """
    removed = []
    for domain in conn.listAllDomains():
        labels = domain_labels(domain)
        if labels is None or not domain.name().startswith(NAME_PREFIX):
            continue
        if any(labels.get(f"spec.{k}") != v for k, v in (match or {}).items()):
            continue
        if everything or _is_orphan(labels):
            remove_domain(domain)
            run_dir = labels.get("run-dir")
            if run_dir and Path(run_dir).name == domain.name():
                shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(domain.name())
    if not match:
        removed += _prune_run_dirs(conn, vm_dir or default_vm_dir(), everything=everything)
    return removed


def _prune_run_dirs(conn: libvirt.virConnect, vm_dir: Path, *, everything: bool) -> list[str]:
    """Overlays of VMs that are gone (one that stopped at its deadline, say)."""
    names = {domain.name() for domain in conn.listAllDomains()}
    removed = []
    for run_dir in sorted((vm_dir / "run").glob(f"{NAME_PREFIX}*")):
        if run_dir.name in names:
            continue
        try:
            # A sandbox starting right now has a folder and no domain yet.
            if not everything and time.time() - run_dir.stat().st_mtime < RUN_DIR_GRACE_S:
                continue
        except OSError:
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir.name)
    return removed
