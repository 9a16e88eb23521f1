"""A VM sandbox's libvirt domain, as data: `DomainPlan` values in, domain XML out.

Every device a sandbox's VM has is listed in `domain_xml`; nothing is pasted into a string.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandbox.base import Mount

METADATA_NS = "https://dispatch.invalid/xmlns/sandbox"
AGENT_PORT = "org.dispatch.agent.0"
KERNEL_ARGS = (
    "console=ttyS0 root=/dev/vda ro rootfstype=ext4 init=/usr/local/lib/dispatch/init "
    "panic=-1 quiet 8250.nr_uarts=1 cryptomgr.notests=1 "
    "initcall_blacklist=init_kprobe_trace,load_system_certificate_list,crypto_kdf108_init,"
    "init_encrypted"
)


@dataclass(frozen=True)
class DomainPlan:
    """Everything the domain XML is made of, as plain values."""

    name: str
    virt: str
    memory_mb: int
    vcpus: int
    cpu_quota_us: int | None
    kernel: Path
    initrd: Path
    overlay: Path
    agent_socket: Path
    console_log: Path
    # (9p tag, host folder, read-only): the devices; unused slots show an empty folder.
    shares: tuple[tuple[str, Path, bool], ...]
    mounts: tuple[tuple[str, Mount], ...]  # (9p tag, mount): what the guest mounts where
    network: bool
    user: tuple[int, int]
    metadata: Mapping[str, str]


def domain_xml(plan: DomainPlan) -> str:
    """The libvirt domain definition of one sandbox; every device is listed here."""
    domain = ET.Element("domain", type=plan.virt)
    ET.SubElement(domain, "name").text = plan.name
    domain.append(metadata_element(plan.metadata))
    ET.SubElement(domain, "memory", unit="MiB").text = str(plan.memory_mb)
    ET.SubElement(domain, "vcpu").text = str(plan.vcpus)
    if plan.cpu_quota_us is not None:
        tune = ET.SubElement(domain, "cputune")
        ET.SubElement(tune, "period").text = "100000"
        ET.SubElement(tune, "quota").text = str(plan.cpu_quota_us)
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(plan.kernel)
    ET.SubElement(os_, "initrd").text = str(plan.initrd)
    ET.SubElement(os_, "cmdline").text = KERNEL_ARGS
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    if plan.virt == "kvm":
        ET.SubElement(domain, "cpu", mode="host-passthrough")
    ET.SubElement(domain, "clock", offset="utc")
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(domain, event).text = "destroy"
    devices = ET.SubElement(domain, "devices")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    source = ET.SubElement(disk, "source", file=str(plan.overlay))
    # The overlay is made with the right owner; its backing image is shared, read-only, and
    # readable by all: libvirt need not relabel either.
    ET.SubElement(source, "seclabel", model="dac", relabel="no")
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    for tag, folder, read_only in plan.shares:
        # squash: the guest's chown attempts are ignored, so files keep QEMU's owner.
        fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="squash")
        ET.SubElement(fs, "driver", type="path")
        ET.SubElement(fs, "source", dir=str(folder))
        ET.SubElement(fs, "target", dir=tag)
        if read_only:
            ET.SubElement(fs, "readonly")
    channel = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(channel, "source", mode="bind", path=str(plan.agent_socket))
    ET.SubElement(channel, "target", type="virtio", name=AGENT_PORT)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(plan.console_log))
    if plan.network:
        nic = ET.SubElement(devices, "interface", type="user")
        ET.SubElement(nic, "model", type="virtio")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    uid, gid = plan.user
    label = ET.SubElement(domain, "seclabel", type="static", model="dac", relabel="yes")
    ET.SubElement(label, "label").text = f"+{uid}:+{gid}"
    return ET.tostring(domain, encoding="unicode")


def metadata_element(labels: Mapping[str, str]) -> ET.Element:
    """The domain's <metadata>: the labels that let a prune find a crashed process's VMs."""
    metadata = ET.Element("metadata")
    meta = ET.SubElement(metadata, f"{{{METADATA_NS}}}sandbox")
    for key, value in sorted(labels.items()):
        ET.SubElement(meta, f"{{{METADATA_NS}}}label", name=key).text = value
    return metadata
