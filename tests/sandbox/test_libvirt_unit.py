"""The libvirt backend's pure parts: the domain XML, the save-file rewrite, the kernel unpack."""

from __future__ import annotations

import lzma
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from sandbox import ImageBuildFailed, Mount, Network, SandboxError, SandboxSpec
from sandbox.libvirt import METADATA_NS, LibvirtSandbox, domain_xml, metadata_element
from sandbox.vm.image import vmlinux_from
from sandbox.vm.save import HEADER, MAGIC, read_header, retarget, write_copy

OWNER = (4321, 4321)


def plan_of(spec: SandboxSpec, tmp_path: Path, virt: str = "qemu") -> ET.Element:
    box = LibvirtSandbox(spec, vm_dir=tmp_path)
    return ET.fromstring(domain_xml(box.plan(virt)))


def test_no_network_device_unless_asked(tmp_path: Path) -> None:
    closed = plan_of(SandboxSpec(user=OWNER), tmp_path)
    assert closed.find("devices/interface") is None
    opened = plan_of(SandboxSpec(user=OWNER, network=Network.OPEN), tmp_path)
    assert opened.find("devices/interface").get("type") == "user"  # type: ignore[union-attr]
    # An allow list is not an open network: no device, and start() refuses it outright.
    listed = SandboxSpec(user=OWNER, network=Network.ALLOWLIST, allow=("pypi.org",))
    assert plan_of(listed, tmp_path).find("devices/interface") is None
    with pytest.raises(SandboxError, match="allowlist"):
        LibvirtSandbox(listed, vm_dir=tmp_path).start()


def test_shares_carry_their_mode_and_qemu_runs_as_the_sandbox_user(tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    spec = SandboxSpec(mounts=(Mount(ro), Mount(rw, read_only=False)), user=OWNER)
    domain = plan_of(spec, tmp_path)
    shares = {
        fs.find("source").get("dir"): fs.find("readonly") is not None  # type: ignore[union-attr]
        for fs in domain.iter("filesystem")
    }
    assert shares[str(ro)] is True and shares[str(rw)] is False
    # Unused slots of the saved template show an empty folder, never anything of the host's.
    assert set(shares) == {str(ro), str(rw), str(tmp_path / "empty")}
    label = domain.find("seclabel")
    assert label is not None and label.get("model") == "dac"
    assert label.findtext("label") == "+4321:+4321"


def test_limits_and_emulation_mode(tmp_path: Path) -> None:
    from sandbox import Limits

    spec = SandboxSpec(user=OWNER, limits=Limits(memory_mb=900, cpus=1.5))
    domain = plan_of(spec, tmp_path)
    assert domain.get("type") == "qemu"
    assert domain.findtext("memory") == str(900 + 192)
    assert domain.findtext("vcpu") == "2"
    assert domain.findtext("cputune/quota") == "75000"
    assert domain.find("cpu") is None
    assert plan_of(spec, tmp_path, virt="kvm").find("cpu") is not None


def _save_file(path: Path, xml: str, stream: bytes) -> None:
    data = xml.encode() + b"\0" + b"<cookie/>\0"
    data_len = len(data) + 64 * 1024
    header = HEADER.pack(MAGIC, 2, data_len, 1, 0, len(xml) + 1, *([0] * 14))
    path.write_bytes(header + data + b"\0" * (data_len - len(data)) + stream)


def test_save_file_copy_gets_the_new_xml_and_keeps_the_stream(tmp_path: Path) -> None:
    template = tmp_path / "t.save"
    stream = bytes(range(256)) * 4096
    _save_file(template, "<domain><name>t</name></domain>", stream)
    copy = tmp_path / "c.save"
    write_copy(template, copy, "<domain><name>a-longer-name</name></domain>")
    fields, xml, cookie, stream_at = read_header(copy)
    assert xml == "<domain><name>a-longer-name</name></domain>"
    assert cookie == b"<cookie/>\0"
    assert fields[5] == len(xml) + 1  # the cookie's offset moved with the XML
    assert copy.read_bytes()[stream_at:] == stream
    assert read_header(template)[3] == stream_at


def test_retarget_makes_the_template_xml_one_sandboxes(tmp_path: Path) -> None:
    old, new = Path("/vm/saved/k"), Path("/vm/run/dispatch-x")
    saved = f"""<domain type='qemu'><name>dispatch-template-1</name><uuid>u</uuid>
      <metadata><old/></metadata>
      <os><kernel>/vm/boot/a/1-1/vmlinux</kernel><initrd>/vm/boot/a/1-1/initrd.img</initrd></os>
      <devices>
        <disk><source file='{old}/disk.qcow2'/><backingStore type='file'/></disk>
        <filesystem><source dir='/vm/empty'/><target dir='w0'/></filesystem>
        <channel><source mode='bind' path='{old}/agent.sock'/></channel>
      </devices>
      <seclabel model='dac'><label>+1:+1</label><imagelabel>+1:+1</imagelabel></seclabel>
    </domain>"""
    result = ET.fromstring(
        retarget(
            saved,
            name="dispatch-x",
            old_dir=old,
            new_dir=new,
            shares={"w0": Path("/home/me/app")},
            user=OWNER,
            metadata=metadata_element({"dispatch.pid": "7"}),
            boot={"kernel": Path("/k"), "initrd": Path("/i")},
        )
    )
    assert result.findtext("name") == "dispatch-x"
    assert result.find("uuid") is None
    assert result.find(f"metadata/{{{METADATA_NS}}}sandbox") is not None
    assert result.find("metadata/old") is None
    assert result.find("devices/disk/source").get("file") == f"{new}/disk.qcow2"  # type: ignore[union-attr]
    assert result.find("devices/disk/backingStore") is None
    assert result.find("devices/filesystem/source").get("dir") == "/home/me/app"  # type: ignore[union-attr]
    assert result.find("devices/channel/source").get("path") == f"{new}/agent.sock"  # type: ignore[union-attr]
    assert (result.findtext("os/kernel"), result.findtext("os/initrd")) == ("/k", "/i")
    assert result.findtext("seclabel/label") == "+4321:+4321"
    assert result.find("seclabel/imagelabel") is None


def test_vmlinux_is_unpacked_from_the_xz_stream_inside_vmlinuz() -> None:
    elf = b"\x7fELF" + bytes(5000)
    vmlinuz = b"MZ-boot-stub" * 10 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert vmlinux_from(vmlinuz) == elf
    with pytest.raises(ImageBuildFailed, match="not xz"):
        vmlinux_from(b"MZ" + struct.pack("<I", 1))


def test_missing_vm_image_names_the_build_command(tmp_path: Path) -> None:
    from sandbox import ImageMissing

    box = LibvirtSandbox(SandboxSpec(user=OWNER), vm_dir=tmp_path)
    with pytest.raises(ImageMissing, match=r"dispatch images build --vm"):
        box.start()


def test_unreachable_libvirtd_says_how_to_start_it(tmp_path: Path) -> None:
    from sandbox import EngineUnavailable
    from sandbox.libvirt import connect

    with pytest.raises(EngineUnavailable, match=r"libvirtd -d"):
        connect(f"qemu:///system?socket={tmp_path}/no-such.sock")


def test_missing_binding_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from sandbox import BackendUnavailable, create

    monkeypatch.setitem(sys.modules, "libvirt", None)  # what `import libvirt` sees without it
    monkeypatch.delitem(sys.modules, "sandbox.libvirt")
    with pytest.raises(BackendUnavailable, match=r"pip install 'dispatch\[libvirt\]'"):
        create("libvirt", SandboxSpec(user=OWNER))
