"""The libvirt backend: one QEMU virtual machine per sandbox, with its own kernel.

Each sandbox boots the VM image (`dispatch images build --vm`, sandbox/vm/image.py) through a
copy-on-write overlay of its own, the kernel loaded directly. The domain is defined from data
built here with `xml.etree` (`domain_xml`): KVM when the host's libvirt offers it, plain QEMU
emulation (TCG) otherwise; no network device unless the spec asks for the network; memory and
vCPUs as the limits say; nothing of the host shared but the granted folders, each a virtio-9p
device mounted in the guest at the same absolute path, read-only at the device unless granted
read-write. QEMU runs as the sandbox user (the owner of the granted folders, never root: a
libvirt per-domain DAC label), so files the guest makes in a read-write folder belong to that
owner, and the escape of a guest reaches no more than a container's processes could.

Commands run through Dispatch's exec agent in the guest (images/vm/agent.py: why not the QEMU
guest agent is said there), over a virtio-serial channel whose host end is a unix socket: output
streams as it comes, each command runs in a cgroup of its own whose `cgroup.kill` ends its whole
tree on a timeout, and an OOM kill in that cgroup is reported as such. Inside the guest the
commands run as the sandbox user, with no_new_privs, on a read-only root with a sized tmpfs for
/tmp and the home folder, as in a container (without `confine`: see images/vm/agent.py).

`stop()` destroys and undefines the domain and removes its overlay and socket. Domains carry
metadata naming the process that made them, so `prune_orphans` finds a crashed controller's.

Beside this module: the domain as data (vm/domain.py), the host end of the agent's channel
(vm/agent.py), saved states (vm/save.py), the disk image (vm/image.py), and removing what a
crashed controller left (vm/prune.py).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import libvirt

from sandbox.base import (
    DEFAULT_OUTPUT_CAP_BYTES,
    MIB,
    ExecResult,
    Network,
    Outcome,
    OutputBuffer,
    OutputCallback,
    SandboxSpec,
    Stream,
)
from sandbox.docker import LABEL_HOST, LABEL_PID, LABEL_PID_START, owner_labels
from sandbox.errors import (
    EngineUnavailable,
    FileOperationFailed,
    GrantRefused,
    SandboxError,
    SandboxNotRunning,
)
from sandbox.host.gitplant import GitScanIncomplete, Identity, git_entries
from sandbox.host.scan import after_exec, at_stop, git_roots, git_skip
from sandbox.host.setid import SetidScanIncomplete
from sandbox.mounts import folder_identity
from sandbox.ownership import sandbox_user
from sandbox.vm.agent import AgentLink, until_exit
from sandbox.vm.domain import KERNEL_ARGS, METADATA_NS, DomainPlan, domain_xml, metadata_element
from sandbox.vm.image import VmImage, default_vm_dir
from sandbox.vm.prune import NAME_PREFIX, prune_orphans, remove_domain
from sandbox.vm.save import (
    RO_SLOTS,
    RW_SLOTS,
    SavedState,
    locked,
    read_header,
    retarget,
    write_copy,
)

# libvirt prints every error to stderr unless told otherwise; they arrive here as exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

DEFAULT_URI = "qemu:///system"
HOME = Path("/home/sandbox")
# The guest kernel, the agent and the page cache live beside the sandbox's own memory limit.
GUEST_OVERHEAD_MB = 192
# The limit itself is the cgroup's inside the guest; a VM of at least this size lets smaller
# limits share one saved state.
VM_MEMORY_FLOOR_MB = 512
# Under emulation on a busy 2-core machine a boot takes seconds; far more means it is stuck.
BOOT_TIMEOUT_S = 120.0
# A guest under working KVM answers within a few seconds; one that does not is not running.
KVM_PROBE_S = 25.0
ACCEL_FILE = "accel.json"
FILE_CAP_BYTES = 256 * MIB
START_LIBVIRTD = (
    "start it: `sudo systemctl start libvirtd`, or where systemd does not run, "
    "`sudo sh -c 'virtlogd -d; libvirtd -d'` (packages libvirt-daemon-system, qemu-system-x86)"
)


def connect(uri: str = DEFAULT_URI) -> libvirt.virConnect:
    """Open a connection to libvirtd.

    Raises:
        EngineUnavailable: libvirtd does not answer, with how to start it.
    """
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise EngineUnavailable(
            f"libvirtd cannot be reached at {uri} ({_short(exc)}); {START_LIBVIRTD}"
        ) from None


def virt_type(conn: libvirt.virConnect) -> str:
    """'kvm' when libvirt can run KVM guests here (a working /dev/kvm), else 'qemu' (TCG)."""
    caps = ET.fromstring(conn.getCapabilities())
    if not any(arch.get("name") == "x86_64" for arch in caps.iter("arch")):
        raise EngineUnavailable(
            "libvirt finds no QEMU for x86_64 guests; install it (`apt-get install "
            "qemu-system-x86`), then restart libvirtd"
        )
    for guest in caps.iter("guest"):
        arch = guest.find("arch")
        if (
            arch is not None
            and arch.get("name") == "x86_64"
            and any(d.get("type") == "kvm" for d in arch.iter("domain"))
        ):
            return "kvm"
    return "qemu"


class LibvirtSandbox:
    """A QEMU virtual machine; see the module docstring for what is shared and how."""

    def __init__(
        self,
        spec: SandboxSpec,
        *,
        uri: str = DEFAULT_URI,
        vm_dir: Path | None = None,
        connection: libvirt.virConnect | None = None,
        accel: str | None = None,
        use_saved: bool = True,
    ) -> None:
        self.spec = spec
        self._uri = uri
        self._conn = connection
        self._image = VmImage(vm_dir or default_vm_dir())
        self._name = f"{NAME_PREFIX}{uuid.uuid4().hex[:12]}"
        self._run_dir = self._image.root / "run" / self._name
        self._user = spec.user or sandbox_user(spec.mounts)
        if 0 in self._user:
            raise GrantRefused(
                f"the sandbox was asked to run as uid:gid {self._user[0]}:{self._user[1]}, and it "
                "never runs as root or in root's group; run it as a normal user"
            )
        self._domain: libvirt.virDomain | None = None
        self._link: AgentLink | None = None
        self._git_known: dict[Path, Identity] | None = None
        self.git_quarantined_at_stop: tuple[Path, ...] = ()
        # Setuid/setgid files a daemon of the task made after the last command, stripped then.
        self.setid_stripped_at_stop: tuple[Path, ...] = ()
        # What those searches could not finish, kept for whoever stops it next (a cancel stops
        # it from another thread, and the runner's own stop() then has nothing left to do).
        self.scan_problem_at_stop: str | None = None
        # Epoch seconds, once started: a setuid file changed since is the task's (nothing of the
        # task's runs before start() returns; the person's files from just before are not).
        self._started_at = 0.0
        self._deadline_at: float | None = None
        if accel not in (None, "kvm", "qemu"):
            raise ValueError(f"accel {accel!r}: choose 'kvm', 'qemu' (emulation) or None (detect)")
        self._accel = accel
        # Restore a saved booted guest instead of booting (once the accelerator is known).
        self._use_saved = use_saved
        self.virt: str | None = None  # 'kvm' or 'qemu' (TCG emulation) once started
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()

    @property
    def id(self) -> str:
        return self._name

    @property
    def name(self) -> str:
        return self._name

    # -- lifecycle -------------------------------------------------------------------------

    def plan(self, virt: str) -> DomainPlan:
        limits = self.spec.limits
        vcpus = max(1, math.ceil(limits.cpus))
        quota = None if limits.cpus >= vcpus else int(limits.cpus / vcpus * 100_000)
        ordered = sorted(self.spec.mounts, key=lambda m: len(m.host.parts))
        read_only = [m for m in ordered if m.read_only]
        writable = [m for m in ordered if not m.read_only]
        if len(read_only) <= RO_SLOTS and len(writable) <= RW_SLOTS:
            # The fixed slots of a saved template (sandbox/vm/save.py).
            tags = {id(m): f"r{i}" for i, m in enumerate(read_only)}
            tags.update({id(m): f"w{i}" for i, m in enumerate(writable)})
            empty = self._image.root / "empty"
            shares = tuple(
                [(f"r{i}", read_only[i].host if i < len(read_only) else empty, True)
                 for i in range(RO_SLOTS)]
                + [(f"w{i}", writable[i].host if i < len(writable) else empty, False)
                   for i in range(RW_SLOTS)]
            )  # fmt: skip
            mounts = tuple((tags[id(m)], m) for m in ordered)
        else:
            mounts = tuple((f"g{i}", m) for i, m in enumerate(ordered))
            shares = tuple((tag, m.host, m.read_only) for tag, m in mounts)
        return DomainPlan(
            name=self._name,
            virt=virt,
            memory_mb=max(limits.memory_mb, VM_MEMORY_FLOOR_MB) + GUEST_OVERHEAD_MB,
            vcpus=vcpus,
            cpu_quota_us=quota,
            kernel=self._boot_dir() / "vmlinux",
            initrd=self._boot_dir() / "initrd.img",
            overlay=self._run_dir / "disk.qcow2",
            agent_socket=self._run_dir / "agent.sock",
            console_log=self._run_dir / "console.log",
            shares=shares,
            mounts=mounts,
            # Only "open" gets a network device; "allowlist" is refused at start().
            network=self.spec.network is Network.OPEN,
            user=self._user,
            metadata={
                **owner_labels(),
                **{f"spec.{k}": v for k, v in self.spec.labels.items()},
                "run-dir": str(self._run_dir),
            },
        )

    def _boot_dir(self) -> Path:
        """The kernel and initramfs, copied once per QEMU user.

        libvirt relabels the kernel for each domain's user and refuses a second domain of
        another user while the first holds it, so each user has copies of its own.
        """
        uid, gid = self._user
        image = (self._image.source_id() or "none").rpartition(":")[2][:12]
        return self._image.root / "boot" / image / f"{uid}-{gid}"

    def _ensure_boot_files(self) -> None:
        # What unused 9p slots show (cold boots have the slots of a saved state too).
        (self._image.root / "empty").mkdir(mode=0o555, exist_ok=True)
        folder = self._boot_dir()
        if (folder / "initrd.img").exists():
            return
        folder.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        partial = folder.with_name(f"{folder.name}.{uuid.uuid4().hex[:8]}")
        partial.mkdir(mode=0o755)
        shutil.copyfile(self._image.kernel, partial / "vmlinux")
        shutil.copyfile(self._image.initrd, partial / "initrd.img")
        for file in partial.iterdir():
            file.chmod(0o444)
        try:
            partial.rename(folder)
        except OSError:  # another sandbox made them meanwhile
            shutil.rmtree(partial, ignore_errors=True)

    def start(self) -> None:
        """Boot the VM and wait for its agent.

        Raises:
            ImageMissing: the VM image is not built.
            EngineUnavailable: libvirtd cannot be reached.
            GrantRefused: a granted folder was swapped after validation.
        """
        self._check_stopping()
        if self.spec.network is Network.ALLOWLIST:
            # Its egress proxy is wired for containers only; a VM must not get an open network.
            raise SandboxError(
                'the libvirt backend does not do network "allowlist" yet; use the docker '
                'backend for it, or network "none"'
            )
        self._image.require()
        self._check_identities()
        self._check_reachable()
        try:
            self._ensure_boot_files()
        except OSError as exc:
            raise SandboxError(f"could not copy the VM's kernel ({exc})") from None
        if self._conn is None:
            self._conn = connect(self._uri)
        self.virt = self._accel or self._known_accel()
        saved = None
        if self.virt is not None and self._use_saved:
            plan = self.plan(self.virt)
            if not any(tag.startswith("g") for tag, _, _ in plan.shares):
                saved = self._template(plan)
        with self._lifecycle:
            self._check_stopping()
            if self.spec.deadline_s is not None:
                self._deadline_at = time.time() + self.spec.deadline_s
            if self.virt is not None:
                plan = self._restore(saved) if saved is not None else self._boot(self.virt)
        try:
            if self.virt is None:
                plan = self._probe_kvm()
            else:
                self._verify_mounts(plan)
                self._link = self._connect_agent(plan, BOOT_TIMEOUT_S)
            self._prepare_guest(plan)
            self._git_known = git_entries(git_roots(self.spec), skip=git_skip(self.spec))
            self._started_at = time.time()
        except SandboxError:
            self.stop()
            raise

    def _template(self, plan: DomainPlan) -> SavedState:
        """The saved state sandboxes like this one restore, made (once) if missing."""
        assert self._conn is not None
        key = hashlib.sha256(
            json.dumps(
                [self._image.source_id(), plan.virt, plan.memory_mb, plan.vcpus, plan.network,
                 [(tag, ro) for tag, _, ro in plan.shares], KERNEL_ARGS]
            ).encode()
        ).hexdigest()[:16]  # fmt: skip
        saved = SavedState(self._image.root / "saved" / key)
        with locked(saved.root.parent / f"{key}.lock"):
            if saved.ready:
                return saved
            shutil.rmtree(saved.root, ignore_errors=True)
            saved.root.mkdir(parents=True)
            os.chown(saved.root, *plan.user)
            empty = self._image.root / "empty"
            template = replace(
                plan,
                name=f"{NAME_PREFIX}template-{uuid.uuid4().hex[:12]}",
                overlay=saved.disk,
                agent_socket=saved.root / "agent.sock",
                console_log=saved.root / "console.log",
                shares=tuple((tag, empty, ro) for tag, _, ro in plan.shares),
                mounts=(),
                metadata=owner_labels(),
            )
            self._overlay(saved.disk, plan.user)
            try:
                domain = self._conn.createXML(domain_xml(template), 0)
            except libvirt.libvirtError as exc:
                raise SandboxError(
                    f"could not boot the VM to save its state ({_short(exc)})"
                ) from None
            try:
                # Connected once and let go: the agent then waits for the next host to connect,
                # in the state every restored sandbox starts from.
                self._connect_agent(template, BOOT_TIMEOUT_S).close()
                domain.save(str(saved.state))
            except (SandboxError, libvirt.libvirtError) as exc:
                remove_domain(domain)
                raise SandboxError(
                    f"could not save the booted VM's state ({_short(exc)})"
                ) from None
            saved.disk.chmod(0o444)
            saved.mark_ready()
        return saved

    def _restore(self, saved: SavedState) -> DomainPlan:
        """Start this sandbox from a saved state (under the lifecycle lock)."""
        assert self._conn is not None and self.virt is not None
        plan = self.plan(self.virt)
        _, xml, _, _ = read_header(saved.state)
        mine = retarget(
            xml,
            name=self._name,
            old_dir=saved.root,
            new_dir=self._run_dir,
            shares={tag: folder for tag, folder, _ in plan.shares},
            user=plan.user,
            metadata=metadata_element(plan.metadata),
            boot={"kernel": plan.kernel, "initrd": plan.initrd},
        )
        state = self._run_dir / "state.save"
        try:
            self._run_dir.mkdir(parents=True, mode=0o700)
            os.chown(self._run_dir, *plan.user)
            self._overlay(saved.disk, plan.user, into=plan.overlay)
            write_copy(saved.state, state, mine)
            self._conn.restoreFlags(str(state), None, 0)
            self._domain = self._conn.lookupByName(self._name)
        except libvirt.libvirtError as exc:
            self._remove()
            raise SandboxError(
                f"could not restore the VM ({_short(exc)}); `rm -r {saved.root}` makes the next "
                "sandbox boot and save it again"
            ) from None
        except OSError as exc:
            self._remove()
            raise SandboxError(f"could not prepare the VM's files ({exc})") from None
        finally:
            state.unlink(missing_ok=True)
        return plan

    def _probe_kvm(self) -> DomainPlan:
        """Boot under KVM, or under emulation if that fails; remember which worked.

        libvirt offers KVM whenever /dev/kvm exists; whether a guest really runs under it
        (nested virtualisation, the device's permissions) only a boot can tell.
        """
        try:
            with self._lifecycle:
                self._check_stopping()
                plan = self._boot("kvm")
            self._verify_mounts(plan)
            self._link = self._connect_agent(plan, KVM_PROBE_S)
            self.virt = "kvm"
        except GrantRefused:
            raise
        except SandboxError:
            with self._lifecycle:
                self._remove()
                self._check_stopping()
                plan = self._boot("qemu")
            self._verify_mounts(plan)
            self._link = self._connect_agent(plan, BOOT_TIMEOUT_S)
            self.virt = "qemu"
        self._record_accel(self.virt)
        return plan

    def _boot(self, virt: str) -> DomainPlan:
        """Define and start the domain (under the lifecycle lock)."""
        assert self._conn is not None
        plan = self.plan(virt)
        try:
            self._make_overlay(plan)
            self._domain = self._conn.defineXML(domain_xml(plan))
            self._domain.create()
        except libvirt.libvirtError as exc:
            self._remove()
            raise SandboxError(
                f"could not start the VM ({_short(exc)}); its console log: {plan.console_log}"
            ) from None
        except OSError as exc:
            self._remove()
            raise SandboxError(f"could not prepare the VM's files ({exc})") from None
        return plan

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise SandboxNotRunning(
                f"sandbox {self._name} was stopped; a stopped sandbox cannot start again, "
                "create a new one"
            )

    def _known_accel(self) -> str | None:
        """'qemu' when libvirt offers no KVM; a verdict from an earlier boot since the host's
        last restart; None when only a boot can tell."""
        assert self._conn is not None
        if virt_type(self._conn) != "kvm":
            return "qemu"
        try:
            known = json.loads((self._image.root / ACCEL_FILE).read_text())
        except (OSError, ValueError):
            return None
        if known.get("boot_id") != _boot_id() or known.get("virt") not in ("kvm", "qemu"):
            return None
        return str(known["virt"])

    def _record_accel(self, virt: str) -> None:
        with contextlib.suppress(OSError):
            (self._image.root / ACCEL_FILE).write_text(
                json.dumps({"boot_id": _boot_id(), "virt": virt})
            )

    def _make_overlay(self, plan: DomainPlan) -> None:
        self._run_dir.mkdir(parents=True, mode=0o700)
        os.chown(self._run_dir, *plan.user)
        self._overlay(plan.overlay, plan.user)

    def _overlay(self, path: Path, user: tuple[int, int], *, into: Path | None = None) -> None:
        """A copy-on-write disk over the image's (or, with `into`, at `into` over `path`)."""
        backing, target = (path, into) if into is not None else (self._image.disk, path)
        _qemu_img(
            "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(target),
        )  # fmt: skip
        os.chown(target, *user)
        os.chmod(target, 0o600)

    def _check_identities(self) -> None:
        """Refuse before anything starts if a grant is no longer the folder validated.

        QEMU opens the folders later; `_verify_mounts` checks what it opened.
        """
        for mount in self.spec.mounts:
            if mount.identity is None:
                continue
            try:
                same = folder_identity(mount.host) == mount.identity
            except GrantRefused:  # a part of the path is a symlink now
                same = False
            if not same:
                raise GrantRefused(
                    f"folder {mount.host} is not the folder that was checked (it was replaced "
                    "after validation); nothing was run. Check what is rewriting that path and "
                    "grant it again"
                )

    def _check_reachable(self) -> None:
        """Refuse a grant that QEMU, running as the sandbox user, could not open.

        QEMU's own error for that is cryptic ("Please use readonly=on instead"), so the path is
        walked here with the mode bits (ACLs aside) of each folder above the grant.
        """
        uid, gid = self._user
        for mount in self.spec.mounts:
            for folder in reversed(mount.host.parents):
                try:
                    info = folder.stat()
                except OSError:
                    continue
                if info.st_uid == uid:
                    allowed = info.st_mode & stat.S_IXUSR
                elif info.st_gid == gid:
                    allowed = info.st_mode & stat.S_IXGRP
                else:
                    allowed = info.st_mode & stat.S_IXOTH
                if not allowed:
                    raise GrantRefused(
                        f"folder {mount.host} cannot be shared with a VM: its QEMU runs as uid "
                        f"{uid} (the folder's owner), who cannot enter {folder}; let that user "
                        f"in (`chmod o+x {folder}`), move the folder, or use the docker backend"
                    )

    def _verify_mounts(self, plan: DomainPlan) -> None:
        """Check that QEMU holds open each folder that was validated, not one swapped in since.

        Raises:
            GrantRefused: an exported folder is some other folder than the one validated.
        """
        checked = [m for _, m in plan.mounts if m.identity is not None]
        if not checked:
            return
        held = self._qemu_open_dirs()
        for mount in checked:
            if mount.identity not in held:
                raise GrantRefused(
                    f"folder {mount.host} is not the folder that was checked (it was replaced, "
                    "for example by a symlink, after validation); nothing was run. Check what "
                    "is rewriting that path and grant it again"
                )

    def _qemu_open_dirs(self) -> set[tuple[int, int]]:
        pid_file = Path("/run/libvirt/qemu") / f"{self._name}.pid"
        try:
            pid = int(pid_file.read_text().strip())
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (OSError, ValueError) as exc:
            raise GrantRefused(
                f"cannot check which folders the VM's QEMU process opened ({exc}); run "
                "Dispatch as root or as the user QEMU runs as"
            ) from None
        held = set()
        for fd in fds:
            with contextlib.suppress(OSError):
                info = fd.stat()
                held.add((info.st_dev, info.st_ino))
        return held

    def _connect_agent(self, plan: DomainPlan, timeout_s: float) -> AgentLink:
        deadline = time.monotonic() + timeout_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(plan.agent_socket))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline or self._stopping.is_set():
                    raise SandboxError(
                        f"the VM's agent socket {plan.agent_socket} never opened"
                    ) from None
                time.sleep(0.02)
        link = AgentLink(sock)
        try:
            link.wait_hello(max(deadline - time.monotonic(), 1.0))
        except SandboxError as exc:
            link.close()
            raise SandboxError(f"{exc}; the VM's console: {self._console_tail(plan)}") from None
        return link

    def _console_tail(self, plan: DomainPlan) -> str:
        try:
            lines = plan.console_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no console log)"
        return " | ".join(lines[-5:]) or "(empty)"

    def _prepare_guest(self, plan: DomainPlan) -> None:
        link = self._require_link()
        limits = self.spec.limits
        uid, gid = self._user
        left = None if self._deadline_at is None else max(self._deadline_at - time.time(), 0.0)
        link.call(
            "setup",
            uid=uid,
            gid=gid,
            tmp_mb=limits.tmp_mb,
            home_mb=limits.home_mb,
            memory_mb=limits.memory_mb,
            pids=limits.pids,
            network=plan.network,
            deadline_s=left,
            env={"HOME": str(HOME), "LANG": "C.UTF-8", **self.spec.env},
        )
        for tag, mount in plan.mounts:
            link.call("mount", tag=tag, path=str(mount.host), read_only=mount.read_only)

    def stop(self) -> None:
        """Destroy and undefine the VM, remove its overlay; safe to call twice or from another
        thread while a command runs (the command then ends with `Outcome.STOPPED`)."""
        self._stopping.set()
        with self._lifecycle:
            self._remove()
            if self._git_known is not None:
                known, self._git_known = self._git_known, None
                try:
                    self.setid_stripped_at_stop, self.git_quarantined_at_stop = at_stop(
                        self.spec, started_at=self._started_at, git_known=known
                    )
                except (SetidScanIncomplete, GitScanIncomplete) as exc:
                    self.scan_problem_at_stop = str(exc)
                    raise

    def _remove(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._domain is not None:
            remove_domain(self._domain)
            self._domain = None
        shutil.rmtree(self._run_dir, ignore_errors=True)

    # -- commands --------------------------------------------------------------------------

    def exec(
        self,
        command: Sequence[str],
        *,
        timeout_s: float | None = None,
        on_output: OutputCallback | None = None,
        workdir: Path | None = None,
        output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES,
    ) -> ExecResult:
        """Run a command, streaming output; a timeout kills the command's whole process tree."""
        if not command:
            raise ValueError("command is empty; pass at least the program to run")
        result = self._exec(
            list(command),
            timeout_s=timeout_s,
            on_output=on_output,
            workdir=workdir,
            output_cap_bytes=output_cap_bytes,
        )
        # None: stop() came meanwhile, and searches itself once the sandbox is gone.
        return after_exec(result, self.spec, started_at=self._started_at, git_known=self._git_known)

    def _exec(
        self,
        command: list[str],
        *,
        timeout_s: float | None = None,
        on_output: OutputCallback | None = None,
        workdir: Path | None = None,
        output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES,
        stdin: bytes | None = None,
    ) -> ExecResult:
        link = self._require_link()
        buffers = {s: OutputBuffer(s, output_cap_bytes, on_output) for s in Stream}
        started = time.monotonic()
        cwd = (
            workdir or self.spec.workdir or (self.spec.mounts[0].host if self.spec.mounts else HOME)
        )
        ident, replies = link.open()
        timed_out = threading.Event()
        watchdog = None
        exit_message: dict[str, Any] | None = None
        try:
            link.send(
                {
                    "op": "exec",
                    "id": ident,
                    "argv": command,
                    "cwd": str(cwd),
                    "cap": output_cap_bytes,
                    "stdin": None if stdin is None else base64.b64encode(stdin).decode(),
                }
            )
            if timeout_s is not None:
                watchdog = threading.Timer(timeout_s, self._on_timeout, (ident, timed_out))
                watchdog.daemon = True
                watchdog.start()
            for message in until_exit(replies):
                if message.get("ev") == "out":
                    stream = Stream(message["stream"])
                    buffers[stream].feed(base64.b64decode(message["data"]))
                elif message.get("ev") == "exit":
                    exit_message = message
        finally:
            if watchdog is not None:
                watchdog.cancel()
            link.forget(ident)
        outcome = Outcome.EXITED
        if exit_message is None:
            if not self._stopping.is_set() and not self._deadline_passed():
                raise SandboxError(f"the VM of sandbox {self._name} went away during a command")
            exit_code = 137
        else:
            exit_code = int(exit_message["code"])
            for stream, dropped in zip(Stream, exit_message.get("dropped", (0, 0)), strict=False):
                buffers[stream].dropped += int(dropped)
            if exit_message.get("error"):
                buffers[Stream.STDERR].feed(f"dispatch: {exit_message['error']}\n".encode())
        if self._stopping.is_set():
            outcome = Outcome.STOPPED
        elif timed_out.is_set():
            outcome = Outcome.TIMED_OUT
        elif exit_code >= 128 and self._deadline_passed():
            outcome, timeout_s = Outcome.TIMED_OUT, self.spec.deadline_s
        elif exit_message is not None and exit_message.get("oom"):
            outcome = Outcome.OUT_OF_MEMORY
        return ExecResult(
            exit_code=exit_code,
            stdout=buffers[Stream.STDOUT].finish(),
            stderr=buffers[Stream.STDERR].finish(),
            outcome=outcome,
            stdout_truncated=buffers[Stream.STDOUT].truncated,
            stderr_truncated=buffers[Stream.STDERR].truncated,
            duration_s=time.monotonic() - started,
            timeout_s=timeout_s,
            memory_limit_mb=self.spec.limits.memory_mb,
        )

    def _on_timeout(self, ident: int, timed_out: threading.Event) -> None:
        timed_out.set()
        link = self._link
        if link is not None:
            with contextlib.suppress(SandboxError):
                link.call("kill", target=ident)

    def read_file(self, path: Path) -> bytes:
        """Read a file as the sandbox user sees it."""
        result = self._exec(["cat", "--", str(path)], output_cap_bytes=FILE_CAP_BYTES)
        if result.exit_code != 0:
            raise FileOperationFailed(_file_error(path, result))
        return result.stdout

    def write_file(self, path: Path, data: bytes) -> None:
        """Write a file as the sandbox user; read-only grants and the root refuse it."""
        result = self._exec(["sh", "-c", 'cat > "$1"', "sh", str(path)], stdin=data)
        if result.exit_code != 0:
            raise FileOperationFailed(_file_error(path, result))

    def _deadline_passed(self) -> bool:
        return self._deadline_at is not None and time.time() >= self._deadline_at

    def _require_link(self) -> AgentLink:
        link = self._link
        if link is None or self._stopping.is_set():
            raise SandboxNotRunning(f"sandbox {self._name} is not running; call start() first")
        return link

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _qemu_img(*args: str) -> None:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"qemu-img {args[0]} failed: {done.stderr.strip()}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _file_error(path: Path, result: ExecResult) -> str:
    reason = result.stderr.decode(errors="replace").strip().splitlines()
    detail = reason[-1] if reason else f"exit status {result.exit_code}"
    return f"{path}: {detail}"


__all__ = [
    "LABEL_HOST",
    "LABEL_PID",
    "LABEL_PID_START",
    "METADATA_NS",
    "AgentLink",
    "DomainPlan",
    "LibvirtSandbox",
    "connect",
    "domain_xml",
    "metadata_element",
    "prune_orphans",
    "virt_type",
]
