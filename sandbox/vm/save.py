"""Saved VM states: boot once, save the running guest, start later sandboxes by restoring it.

A template is a guest booted to the point where its exec agent waits for a host, saved with
libvirt's `save` (70 MiB for 512 MiB of memory). A sandbox restores it under its own name, with
its own overlay disk (backed by the template's, which is never written again), agent socket,
QEMU user and folders. Sandboxes restored from one template at once need their own names and
UUIDs, which libvirt's `restore --xml` checks against the saved definition, so the domain XML in
the save file's header is rewritten instead, in a copy: libvirt leaves 64 KiB of room after it
for that purpose.

The device set of a restored guest must be the template's, so a template has a fixed number of
9p shares (read-only and read-write slots) pointing at an empty folder; a sandbox points the
slots it uses at its grants. QEMU will not save a guest with a 9p share mounted: the template has
none mounted, the agent mounts them after the restore.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"LibvirtQemudSave"
# magic, version, data_len, was_running, compressed, cookieOffset, 14 unused words
HEADER = struct.Struct("=16s5I14I")
RO_SLOTS = 6
RW_SLOTS = 3


class SaveFormatError(Exception):
    """The save file is not one this code can rewrite."""


@dataclass(frozen=True)
class SavedState:
    """A template's files."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.save"

    @property
    def disk(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def ready(self) -> bool:
        return (self.root / "ready").exists() and self.state.exists() and self.disk.exists()

    def mark_ready(self) -> None:
        (self.root / "ready").write_text("1")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing): one builder per template."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_header(path: Path) -> tuple[tuple[int, ...], str, bytes, int]:
    """The header fields, the domain XML, the rest of the data area (cookie), and where the
    QEMU stream starts."""
    with path.open("rb") as file:
        raw = file.read(HEADER.size)
        fields = HEADER.unpack(raw)
        if fields[0] != MAGIC or fields[1] != 2:
            raise SaveFormatError(f"{path} is not a libvirt save file of version 2")
        data_len, cookie_offset = fields[2], fields[5]
        data = file.read(data_len)
    xml_end = data.index(b"\0")
    cookie = b""
    if cookie_offset:
        cookie = data[cookie_offset : data.index(b"\0", cookie_offset) + 1]
    return fields, data[:xml_end].decode(), cookie, HEADER.size + data_len


def write_copy(template: Path, target: Path, xml: str) -> None:
    """Copy a save file with its domain XML replaced (in the room libvirt left for that)."""
    fields, _, cookie, stream_at = read_header(template)
    data_len = fields[2]
    xml_bytes = xml.encode() + b"\0"
    data = xml_bytes + cookie
    if len(data) > data_len:
        raise SaveFormatError("the new domain XML does not fit in the save file's header")
    cookie_offset = len(xml_bytes) if fields[5] else 0
    header = HEADER.pack(*fields[:5], cookie_offset, *fields[6:])
    with template.open("rb") as src, target.open("wb") as dst:
        dst.write(header + data + b"\0" * (data_len - len(data)))
        src.seek(stream_at)
        size = os.fstat(src.fileno()).st_size - stream_at
        offset = stream_at
        while size > 0:
            sent = os.copy_file_range(src.fileno(), dst.fileno(), size, offset)
            if sent == 0:
                break
            offset += sent
            size -= sent


def retarget(
    xml: str,
    *,
    name: str,
    old_dir: Path,
    new_dir: Path,
    shares: Mapping[str, Path],
    user: tuple[int, int],
    metadata: ET.Element,
    boot: Mapping[str, Path],
) -> str:
    """The template's saved domain XML, made into one sandbox's."""
    domain = ET.fromstring(xml)
    domain.find("name").text = name  # type: ignore[union-attr]
    uuid = domain.find("uuid")
    if uuid is not None:
        domain.remove(uuid)  # libvirt makes a new one
    old_meta = domain.find("metadata")
    if old_meta is not None:
        domain.remove(old_meta)
    domain.insert(2, metadata)
    prefix = f"{old_dir}/"
    for element in domain.iter():
        for key, value in element.attrib.items():
            if value.startswith(prefix):
                element.set(key, f"{new_dir}/{value[len(prefix) :]}")
    for tag, path in boot.items():  # <os><kernel>, <os><initrd>: this user's copies
        found = domain.find(f"os/{tag}")
        if found is not None:
            found.text = str(path)
    for disk in domain.iter("disk"):
        # The chain is read from the new overlay itself (it has the template's disk under it).
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    for fs in domain.iter("filesystem"):
        target, source = fs.find("target"), fs.find("source")
        if target is not None and source is not None and target.get("dir") in shares:
            source.set("dir", str(shares[target.get("dir", "")]))
    for label in domain.iter("seclabel"):
        if label.get("model") == "dac" and label.find("label") is not None:
            label.find("label").text = f"+{user[0]}:+{user[1]}"  # type: ignore[union-attr]
            for image in label.findall("imagelabel"):
                label.remove(image)
    return ET.tostring(domain, encoding="unicode")
