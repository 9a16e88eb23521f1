"""The VM image: the sandbox image's files, Debian's kernel and an exec agent, as a disk.

`dispatch images build --vm` builds `images/vm/Dockerfile` on the sandbox image (so the VM has the
same packages, the same non-root user and the same `confine` as a container, from the same
debootstrap base when offline), exports that filesystem into an ext4 disk (`mkfs.ext4 -d`, no
loop device, no mount) converted to qcow2, and keeps the kernel beside it uncompressed
(`vmlinux`), which QEMU boots directly (PVH) without firmware or decompression: a few seconds
faster under emulation. Every sandbox boots a copy-on-write overlay of that disk; the disk itself
is never written. A second build is a no-op while the exported image is the same.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from sandbox.base import DEFAULT_IMAGE
from sandbox.errors import ImageBuildFailed, ImageMissing
from sandbox.images import ImageDef, Progress, build_all, build_image

VM_ROOTFS_IMAGE = ImageDef("vm", "dispatch/vm-rootfs:latest", on=DEFAULT_IMAGE)
XZ_MAGIC = b"\xfd7zXZ\x00"
# Room above the files for what the guest writes to its root (mount points, little else).
SPARE_MB = 256
# Raised when the way the disk is made from the exported files changes: rebuilds it.
RECIPE = 2


def default_vm_dir() -> Path:
    """Where VM images and sandbox overlays live: readable by the QEMU process's own user."""
    if os.geteuid() == 0:
        return Path("/var/lib/dispatch/vm")
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "dispatch" / "vm"


@dataclass(frozen=True)
class VmImage:
    """The files of a built VM image."""

    root: Path

    @property
    def disk(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.img"

    @property
    def stamp(self) -> Path:
        return self.root / "image.json"

    def source_id(self) -> str | None:
        """The id of the exported container image, or None when not (completely) built."""
        try:
            return str(json.loads(self.stamp.read_text())["source"])
        except (OSError, ValueError, KeyError):
            return None

    def recipe(self) -> int | None:
        try:
            return int(json.loads(self.stamp.read_text())["recipe"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def require(self) -> None:
        """Raises ImageMissing when the image is not built."""
        if self.source_id() is None or not all(
            p.exists() for p in (self.disk, self.kernel, self.initrd)
        ):
            raise ImageMissing(
                f"the VM image is not built (nothing complete in {self.root}); run "
                "`dispatch images build --vm`"
            )


@dataclass(frozen=True)
class VmBuildOutcome:
    path: Path
    built: bool


def build_vm(
    client: docker.DockerClient,
    *,
    vm_dir: Path | None = None,
    offline: bool = False,
    base: str | None = None,
    progress: Progress = print,
) -> VmBuildOutcome:
    """Build the VM image (and the container images it starts from) unless it is up to date.

    Raises:
        ImageBuildFailed: a tool is missing or a step failed.
    """
    for tool in ("mkfs.ext4", "qemu-img"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            raise ImageBuildFailed(
                f"{tool} is not installed; run `apt-get install e2fsprogs qemu-utils`"
            )
    if os.geteuid() != 0:
        raise ImageBuildFailed(
            "building the VM image keeps the files' owners, which needs root; run it with sudo"
        )
    build_all(client, offline=offline, base=base, progress=progress)
    rootfs = build_image(client, VM_ROOTFS_IMAGE, base=DEFAULT_IMAGE, progress=progress)
    source = client.images.get(rootfs.tag).id
    image = VmImage(vm_dir or default_vm_dir())
    if image.source_id() == source and image.recipe() == RECIPE:
        image.require()
        progress(f"VM image in {image.root} is up to date")
        return VmBuildOutcome(image.root, built=False)
    image.root.mkdir(parents=True, exist_ok=True)
    for parent in (image.root, *image.root.parents):
        if parent == Path("/"):
            break
        # The QEMU process runs as another user and must reach the image.
        parent.chmod(parent.stat().st_mode | 0o011)
    with tempfile.TemporaryDirectory(prefix="dispatch-vm-", dir=image.root) as tmp:
        work = Path(tmp)
        files = work / "rootfs"
        _export(client, rootfs.tag, files, progress)
        # QEMU's user-mode network answers DNS here (the export has Docker's placeholder).
        resolv = files / "etc" / "resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text("nameserver 10.0.2.3\n")
        boot = files / "boot"
        kernels = sorted(boot.glob("vmlinuz-*"))
        initrds = sorted(boot.glob("initrd.img-*"))
        if not kernels or not initrds:
            raise ImageBuildFailed(f"{rootfs.tag} has no kernel or initramfs in /boot")
        progress(f"unpacking the kernel {kernels[-1].name} for direct boot")
        (work / "vmlinux").write_bytes(vmlinux_from(kernels[-1].read_bytes()))
        shutil.copyfile(initrds[-1], work / "initrd.img")
        size_mb = _du_mb(files) * 5 // 4 + SPARE_MB
        progress(f"making a {size_mb} MiB ext4 disk from the files")
        raw = work / "disk.raw"
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", "dispatch-root", "-d", str(files), str(raw),
             f"{size_mb}M"],
        )  # fmt: skip
        progress("converting the disk to qcow2")
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")])
        for name in ("disk.qcow2", "vmlinux", "initrd.img"):
            (work / name).chmod(0o444)
            os.replace(work / name, image.root / name)
        # Saved states of the old disk would restore a guest whose files are gone.
        shutil.rmtree(image.root / "saved", ignore_errors=True)
        shutil.rmtree(image.root / "boot", ignore_errors=True)
        image.stamp.write_text(
            json.dumps({"source": source, "recipe": RECIPE, "kernel": kernels[-1].name})
        )
    progress(f"VM image built in {image.root}")
    return VmBuildOutcome(image.root, built=True)


def vmlinux_from(vmlinuz: bytes) -> bytes:
    """The uncompressed ELF kernel inside a compressed `vmlinuz` (Debian's are xz)."""
    start = vmlinuz.find(XZ_MAGIC)
    if start < 0:
        raise ImageBuildFailed("the kernel is not xz-compressed; cannot unpack vmlinux")
    # The xz stream is followed by other data, which the decompressor leaves unread.
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
    if not elf.startswith(b"\x7fELF"):
        raise ImageBuildFailed("the unpacked kernel is not an ELF file")
    return elf


def _export(client: docker.DockerClient, tag: str, into: Path, progress: Progress) -> None:
    progress(f"exporting the files of {tag}")
    into.mkdir()
    container = client.containers.create(tag, command=["true"])
    try:
        tarball = into.parent / "rootfs.tar"
        with tarball.open("wb") as out:
            for chunk in container.export():
                out.write(chunk)
        _run(["tar", "-C", str(into), "--numeric-owner", "-xpf", str(tarball)])
        tarball.unlink()
    except docker.errors.DockerException as exc:
        raise ImageBuildFailed(f"exporting {tag} failed: {exc}") from None
    finally:
        container.remove(force=True)


def _du_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildFailed(f"`{' '.join(command[:2])}` failed: {done.stderr.strip()[-800:]}")


__all__ = [
    "VM_ROOTFS_IMAGE",
    "VmBuildOutcome",
    "VmImage",
    "build_vm",
    "default_vm_dir",
    "vmlinux_from",
]
