"""The Docker backend: one hardened container per sandbox, commands run with `docker exec`.

The container's PID 1 is a tiny init that reaps orphans and, when the spec has a deadline, ends
every process and stops the container at that time, so a sandbox whose controller was killed
still stops. Every command is an exec as the unprivileged sandbox user. The engine runs every
process under Dispatch's seccomp profile from its first instruction (sandbox/seccomp.py: no
ptrace, no setuid/setgid bits); every process, init included, also starts through the image's
`confine` wrapper, a second filter with the same setuid/setgid rules. After each command the
read-write folders are searched on the host for such bits all the same (sandbox/setid.py), and
for git repositories the command made (sandbox/host/gitplant.py).

A timeout signals every process of that user in the container (`kill -1`), which reaches daemons
that left the command's process group too, and cannot reach PID 1, so the sandbox survives for
the next command. If even `kill` cannot run (a fork bomb has used every pid), the container is
restarted.

Network: `none` and `allowlist` both give the container Docker's network mode `none` (loopback
only). In `allowlist` the egress proxy (sandbox/egress/) runs as a child process on this side,
its Unix socket is mounted into the container, and a relay started as another user serves it on
127.0.0.1:3128 with HTTP_PROXY/HTTPS_PROXY pointing there; see sandbox/egress/relay.py for why
not a Docker network. `open` is Docker's default bridge.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docker
import docker.errors
import requests.exceptions
from docker.api.client import APIClient
from docker.types import Mount as DockerMount

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
from sandbox.egress.process import ProxyProcess
from sandbox.egress.record import EgressRecord
from sandbox.egress.relay import RELAY_USER, SOCKET_DIR, SOCKET_NAME, proxy_env, relay_command
from sandbox.errors import (
    EngineUnavailable,
    FileOperationFailed,
    GrantRefused,
    ImageMissing,
    SandboxError,
    SandboxNotRunning,
)
from sandbox.host.gitplant import GitScanIncomplete, Identity, git_entries
from sandbox.host.scan import after_exec, at_stop, git_roots, git_skip
from sandbox.host.setid import SetidScanIncomplete
from sandbox.ownership import sandbox_user
from sandbox.seccomp import profile_json

LABEL = "dispatch.sandbox"
LABEL_PID = "dispatch.pid"
LABEL_PID_START = "dispatch.pid-start"
LABEL_HOST = "dispatch.host"
HOME = Path("/home/sandbox")
TERM_GRACE_S = 1.0
KILL_WAIT_S = 3.0
FILE_CAP_BYTES = 256 * MIB
# Every process of the sandbox starts through this (images/sandbox/confine): a second filter
# refusing setuid/setgid bits, on top of the engine's profile, which has the same rules and is in
# force from exec on (confine's own loads ~20 ms later, a window the engine's profile closes).
# Kept as defence in depth, and because it gives a missing command a shell's exit status (127).
CONFINE = "/usr/local/lib/dispatch/confine"
# How PID 1 ends when the deadline passes: the container's exit status.
DEADLINE_EXIT = 124
# PID 1 reaps orphans and ignores every catchable signal: a namespace's init only receives the
# signals it handles, so a command's `kill 1` cannot end the sandbox. The engine removes it with
# SIGKILL from outside. It makes itself undumpable (PR_SET_DUMPABLE 0): a task of the same user
# could otherwise ptrace it, or write its memory, and so switch the deadline off. Given a
# deadline (epoch seconds, argv[1]: a wall-clock time, so a restarted container keeps it) it
# kills every process of the sandbox user and exits at that time; the kernel then kills
# whatever is left in the namespace, and the container stops.
INIT = """import ctypes, os, signal, sys, time
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
deadline = float(sys.argv[1]) if len(sys.argv) > 1 else None
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    if deadline is None:
        signal.sigwaitinfo({signal.SIGCHLD})
        continue
    left = deadline - time.time()
    if left <= 0:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(DEADLINE_EXIT)
    signal.sigtimedwait({signal.SIGCHLD}, min(left, 60))
""".replace("DEADLINE_EXIT", str(DEADLINE_EXIT))
# cgroup v2, then v1: the kernel counts OOM kills per cgroup.
OOM_COUNTER = (
    "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null"
    " | awk '$1==\"oom_kill\"{print $2; exit}'"
)


def connect() -> docker.DockerClient:
    """Return a client for the engine named by the environment (DOCKER_HOST or the socket).

    Raises:
        EngineUnavailable: with the way to start the engine.
    """
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineUnavailable(
            f"cannot reach the Docker engine at {where} ({_short(exc)}); start it with "
            "`sudo systemctl start docker` (or `sudo dockerd &`), or set DOCKER_HOST"
        ) from None
    return client


_engine_roots: dict[str, Path] = {}


def engine_root(api: APIClient) -> Path | None:
    """Where the engine keeps images and containers (asked once per engine; None if unknown)."""
    if api.base_url not in _engine_roots:
        try:
            root = api.info().get("DockerRootDir")
        except docker.errors.DockerException:
            return None  # not remembered: the next sandbox asks again
        if not root:
            return None
        _engine_roots[api.base_url] = Path(root)
    return _engine_roots[api.base_url]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _process_start(pid: int) -> str:
    """The kernel's start time of a process, so a reused pid is not mistaken for its owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_labels() -> dict[str, str]:
    """Labels naming this process, so leftovers of a crashed one can be recognised."""
    pid = os.getpid()
    return {
        LABEL: "1",
        LABEL_PID: str(pid),
        LABEL_PID_START: _process_start(pid),
        LABEL_HOST: socket.gethostname(),
    }


def _is_orphan(labels: dict[str, str]) -> bool:
    if labels.get(LABEL_HOST) != socket.gethostname():
        return False
    pid = labels.get(LABEL_PID, "")
    if not pid.isdigit():
        return True
    return _process_start(int(pid)) != labels.get(LABEL_PID_START)


def prune_orphans(
    client: docker.DockerClient,
    *,
    everything: bool = False,
    match: Mapping[str, str] | None = None,
) -> list[str]:
    """Remove Dispatch sandboxes whose creating process is gone (or all of them).

    Args:
        everything: remove live sandboxes too, not only orphans.
        match: only consider sandboxes carrying all of these labels.

    Returns the names of the containers removed.
    """
    removed = []
    labels = [LABEL, *(f"{key}={value}" for key, value in (match or {}).items())]
    # The plain list, not `containers.list()`: that inspects each container in turn and fails
    # when one is removed meanwhile (by its own controller finishing a task, say).
    for container in client.api.containers(all=True, filters={"label": labels}):
        if everything or _is_orphan(container.get("Labels") or {}):
            try:
                client.api.remove_container(container["Id"], force=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: its removal is already in progress
                    raise
            removed.append(container["Names"][0].lstrip("/"))
    return removed


class DockerSandbox:
    """A hardened container; see the module docstring for how commands are run and killed."""

    def __init__(
        self,
        spec: SandboxSpec,
        *,
        client: docker.DockerClient | None = None,
        on_egress: Callable[[EgressRecord], None] | None = None,
    ) -> None:
        """Args:
        on_egress: called with each request through the egress proxy (network `allowlist`),
            from another thread, as each ends.
        """
        self.spec = spec
        self._client = client
        # Network `allowlist`: the proxy (made here so a bad allowlist fails before anything
        # starts), its socket's folder, and the relay in the container.
        self.egress: ProxyProcess | None = None
        if spec.network is Network.ALLOWLIST:
            self.egress = ProxyProcess(spec.allow, spec.resolve, on_record=on_egress)
        self._egress_dir: Path | None = None
        self._relay: DockerProcess | None = None
        self._container_id: str | None = None
        self._name = f"dispatch-{uuid.uuid4().hex[:12]}"
        self._user = spec.user or sandbox_user(spec.mounts)
        if 0 in self._user:
            raise GrantRefused(
                f"the sandbox was asked to run as uid:gid {self._user[0]}:{self._user[1]}, and it "
                "never runs as root or in root's group; run it as a normal user"
            )
        self._oom_kills = 0
        # `.git` entries and git folders found at the start (None: not searched yet).
        self._git_known: dict[Path, Identity] | None = None
        # Repositories the task left after its last command, renamed aside by stop().
        self.git_quarantined_at_stop: tuple[Path, ...] = ()
        # Setuid/setgid files a daemon of the task made after the last command, stripped then.
        self.setid_stripped_at_stop: tuple[Path, ...] = ()
        # What those searches could not finish, kept for whoever stops it next (a cancel stops
        # it from another thread, and the runner's own stop() then has nothing left to do).
        self.scan_problem_at_stop: str | None = None
        # Epoch seconds, once started: a setuid file changed since is the task's (nothing of the
        # task's runs before start() returns; the person's files from just before are not).
        self._started_at = 0.0
        self._deadline_at: float | None = None  # epoch seconds, set when the container is made
        self._stopping = threading.Event()
        # start() and stop() may race (a task cancelled while its sandbox starts): the lock
        # makes stop() either prevent the container or remove it, and return only once it is gone.
        self._lifecycle = threading.Lock()

    @property
    def id(self) -> str:
        return self._container_id or self._name

    @property
    def name(self) -> str:
        return self._name

    @property
    def _api(self) -> APIClient:
        if self._client is None:
            self._client = connect()
        return self._client.api

    def container_config(self) -> dict[str, Any]:
        """The create-container request: every hardening setting is visible here."""
        spec, limits = self.spec, self.spec.limits
        uid, gid = self._user
        # Mounts, not binds: a bind's "src:dst:mode" string breaks on folders with ":" in
        # their name, and Docker creates a missing bind source as root instead of failing.
        # Outer folders first, so a read-only sub-mount (a .git, a narrower grant) lies on top.
        mounts = [
            DockerMount(target=str(m.host), source=str(m.host), type="bind", read_only=m.read_only)
            for m in sorted(spec.mounts, key=lambda m: len(m.host.parts))
        ]
        host_config = self._api.create_host_config(
            mounts=mounts,
            tmpfs={
                "/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777",
                str(HOME): f"rw,nosuid,nodev,size={limits.home_mb}m,uid={uid},gid={gid},mode=0700",
            },
            read_only=True,
            cap_drop=["ALL"],
            # The engine's filter, installed before the first instruction of every process:
            # no ptrace, no setuid/setgid bits (sandbox/seccomp.py).
            security_opt=["no-new-privileges:true", "seccomp=" + profile_json()],
            pids_limit=limits.pids,
            mem_limit=limits.memory_mb * MIB,
            memswap_limit=limits.memory_mb * MIB,
            nano_cpus=int(limits.cpus * 1e9),
            network_mode="bridge" if spec.network is Network.OPEN else "none",
            ipc_mode="private",
        )
        workdir = spec.workdir or (spec.mounts[0].host if spec.mounts else HOME)
        command = [CONFINE, "python3", "-c", INIT]
        if self._deadline_at is not None:
            command.append(repr(self._deadline_at))
        environment = {"HOME": str(HOME), "LANG": "C.UTF-8", **spec.env}
        if spec.network is Network.ALLOWLIST:
            environment.update(proxy_env())
            if self._egress_dir is not None:
                host_config["Mounts"] = [
                    *host_config.get("Mounts", []),
                    DockerMount(
                        target=str(SOCKET_DIR),
                        source=str(self._egress_dir),
                        type="bind",
                        read_only=True,
                    ),
                ]
        return {
            "image": spec.image,
            "command": command,
            "name": self._name,
            "user": f"{uid}:{gid}",
            "working_dir": str(workdir),
            "environment": environment,
            "labels": {**owner_labels(), **spec.labels},
            "network_disabled": spec.network is not Network.OPEN,
            "host_config": host_config,
        }

    def start(self) -> None:
        """Create and start the container; on a sandbox already started, nothing.

        Raises:
            GrantRefused: a mount is inside the engine's own state, or was swapped after
                validation.
            ImageMissing: the image is not built.
            EngineUnavailable: the engine cannot be reached.
        """
        self._refuse_engine_state()
        with self._lifecycle:
            if self._stopping.is_set():
                raise SandboxNotRunning(
                    f"sandbox {self._name} was stopped; a stopped sandbox cannot start again, "
                    "create a new one"
                )
            if self._container_id is not None:
                # Started already (`dispatch run` starts a task's sandbox ahead of its
                # runner): a second container would be left behind.
                return
            if self.spec.deadline_s is not None:
                self._deadline_at = time.time() + self.spec.deadline_s
            self._start_egress()
            try:
                self._create_container()
            except BaseException:
                self._stop_egress()  # no container: its proxy goes too
                raise
        try:
            self._verify_mounts()
            self._start_relay()
            # What is there before anything of the task's runs: the repositories it may keep.
            self._git_known = git_entries(git_roots(self.spec), skip=git_skip(self.spec))
            self._started_at = time.time()
        except SandboxError:
            self.stop()
            raise

    def _create_container(self) -> None:
        try:
            created = self._api.create_container(**self.container_config())
            self._container_id = created["Id"]
            self._api.start(self._container_id)
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"sandbox image {self.spec.image!r} is not built; run `dispatch images build`"
            ) from None
        except docker.errors.APIError as exc:
            self._remove()
            if CONFINE in str(exc.explanation or exc):
                raise ImageMissing(
                    f"sandbox image {self.spec.image!r} has no {CONFINE} (it was built by "
                    "an older Dispatch); run `dispatch images build`"
                ) from None
            raise SandboxError(f"could not start the sandbox: {exc.explanation or exc}") from None
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            raise EngineUnavailable(
                f"lost the Docker engine while starting a sandbox ({_short(exc)}); "
                "check that it is running (`docker info`)"
            ) from None

    def watch_egress(self, callback: Callable[[EgressRecord], None]) -> None:
        """Call `callback` with each request through the egress proxy (before start())."""
        if self.egress is not None:
            self.egress.on_record = callback

    @property
    def egress_records(self) -> list[EgressRecord]:
        """Every request through the egress proxy so far (network `allowlist`)."""
        return list(self.egress.records) if self.egress is not None else []

    def _start_egress(self) -> None:
        """Start the proxy on a socket in a fresh folder (network `allowlist` only)."""
        if self.egress is None:
            return
        folder = Path(tempfile.mkdtemp(prefix="dispatch-egress-"))
        # The container's users must reach the socket; the folder holds nothing else.
        folder.chmod(0o755)
        self._egress_dir = folder
        self.egress.start(socket_path=folder / SOCKET_NAME)

    def _start_relay(self) -> None:
        """Serve the proxy on 127.0.0.1 in the container, as a user the task cannot signal."""
        if self.egress is None:
            return
        relay = self.spawn(relay_command(), user=RELAY_USER)
        try:
            line = relay.read_line()
        except SandboxError as exc:
            relay.close()
            raise SandboxError(f"the sandbox's network relay did not start: {exc}") from None
        if line.strip() != b"ready":
            relay.close()
            raise SandboxError(f"the sandbox's network relay did not start: {line!r}")
        self._relay = relay

    def _stop_egress(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.close()
        if self.egress is not None:
            self.egress.stop()
        folder, self._egress_dir = self._egress_dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _refuse_engine_state(self) -> None:
        """Refuse mounts inside the engine's data root, wherever this engine keeps it."""
        if not self.spec.mounts:
            return  # nothing to compare; the engine is not asked where its root is
        root = engine_root(self._api)
        for mount in self.spec.mounts:
            if root is not None and (
                mount.host == root or root in mount.host.parents or mount.host in root.parents
            ):
                raise GrantRefused(
                    f"folder {mount.host} overlaps the Docker engine's data ({root}); "
                    "grant a project folder instead"
                )

    def _verify_mounts(self) -> None:
        """Check each mount is the folder that was validated, not a symlink swapped in since.

        Raises:
            GrantRefused: a mount is some other folder than the one validated.
        """
        checked = [m for m in self.spec.mounts if m.identity is not None]
        if not checked:
            return
        # Plain stat, as the sandbox user: nothing of the task's has run in here yet.
        result = self._exec(["stat", "-c", "%d:%i", "--", *(str(m.host) for m in checked)])
        seen = result.stdout.decode(errors="replace").split()
        for index, mount in enumerate(checked):
            expected = "{}:{}".format(*mount.identity) if mount.identity else ""
            if index >= len(seen) or seen[index] != expected:
                raise GrantRefused(
                    f"folder {mount.host} is not the folder that was checked (it was replaced, "
                    "for example by a symlink, after validation); nothing was run. Check what "
                    "is rewriting that path and grant it again"
                )

    def exec(
        self,
        command: Sequence[str],
        *,
        timeout_s: float | None = None,
        on_output: OutputCallback | None = None,
        workdir: Path | None = None,
        output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES,
    ) -> ExecResult:
        """Run a command, streaming output; a timeout kills every process of the sandbox user."""
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
    ) -> ExecResult:
        """Run a command, without the search for setuid files (Dispatch's own commands)."""
        cid = self._require_running()
        buffers = {s: OutputBuffer(s, output_cap_bytes, on_output) for s in Stream}
        started = time.monotonic()
        exec_id = self._exec_create(cid, command, workdir=workdir)
        timed_out = threading.Event()
        watchdog = None
        if timeout_s is not None:
            watchdog = threading.Timer(timeout_s, self._on_timeout, (exec_id, timed_out))
            watchdog.daemon = True
            watchdog.start()
        try:
            for out, err in self._stream(exec_id):
                if out:
                    buffers[Stream.STDOUT].feed(out)
                if err:
                    buffers[Stream.STDERR].feed(err)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        exit_code = self._exit_code(exec_id)
        outcome = Outcome.EXITED
        if self._stopping.is_set():
            outcome = Outcome.STOPPED
        elif timed_out.is_set():
            outcome = Outcome.TIMED_OUT
        elif exit_code >= 128 and self._deadline_passed():
            outcome, timeout_s = Outcome.TIMED_OUT, self.spec.deadline_s
        elif exit_code == 137 and self._new_oom_kill():
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

    def read_file(self, path: Path) -> bytes:
        """Read a file as the sandbox user sees it."""
        result = self._run(["cat", "--", str(path)])
        if result.exit_code != 0:
            raise FileOperationFailed(_file_error(path, result))
        return result.stdout

    def write_file(self, path: Path, data: bytes) -> None:
        """Write a file as the sandbox user; read-only mounts and the root refuse it."""
        result = self._run(["sh", "-c", 'cat > "$1"', "sh", str(path)], stdin=data)
        if result.exit_code != 0:
            raise FileOperationFailed(_file_error(path, result))

    def stop(self) -> None:
        """Remove the container and everything in it, returning once it is gone.

        Safe to call twice, before start(), or from another thread while a command runs (the
        command then ends with `Outcome.STOPPED`).
        """
        self._stopping.set()
        with self._lifecycle:
            try:
                self._remove()
            finally:
                self._stop_egress()
            if self._git_known is not None:
                # A daemon of the task may have planted one after the last command's search.
                known, self._git_known = self._git_known, None
                try:
                    self.setid_stripped_at_stop, self.git_quarantined_at_stop = at_stop(
                        self.spec, started_at=self._started_at, git_known=known
                    )
                except (SetidScanIncomplete, GitScanIncomplete) as exc:
                    self.scan_problem_at_stop = str(exc)
                    raise

    def _remove(self) -> None:
        # The id is forgotten only once the container is gone: a removal that failed (the
        # engine lost) is retried by the next stop(), or by the prune at start.
        cid = self._container_id
        if cid is None:
            return
        try:
            self._api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # Someone else (a prune) is already removing it: the goal is met.
            if exc.status_code != 409:
                raise SandboxError(f"could not remove sandbox {self._name}: {exc}") from None
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            raise EngineUnavailable(
                f"lost the Docker engine while removing sandbox {self._name} ({_short(exc)}); "
                "`dispatch sandbox prune` removes it once the engine is back"
            ) from None
        self._container_id = None

    def is_running(self) -> bool:
        """Whether the container runs now (asked of the engine; False once it cannot be asked)."""
        cid = self._container_id
        if cid is None:
            return False
        try:
            state = self._api.inspect_container(cid).get("State") or {}
        except (docker.errors.DockerException, requests.exceptions.ConnectionError):
            return False
        return bool(state.get("Running"))

    def _require_running(self) -> str:
        if self._container_id is None:
            raise SandboxNotRunning(f"sandbox {self._name} is not running; call start() first")
        return self._container_id

    def _exec_create(
        self,
        cid: str,
        command: list[str],
        *,
        workdir: Path | None = None,
        stdin: bool = False,
        user: tuple[int, int] | None = None,
    ) -> str:
        uid, gid = user or self._user
        try:
            created = self._api.exec_create(
                cid,
                [CONFINE, *command],
                user=f"{uid}:{gid}",
                workdir=str(workdir) if workdir else None,
                stdin=stdin,
            )
        except docker.errors.NotFound:
            raise SandboxNotRunning(f"sandbox {self._name} is gone (stopped or removed)") from None
        except docker.errors.APIError as exc:
            raise SandboxError(f"could not run the command: {exc.explanation or exc}") from None
        except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
            raise EngineUnavailable(
                f"lost the Docker engine while running a command ({_short(exc)})"
            ) from None
        exec_id: str = created["Id"]
        return exec_id

    def _stream(self, exec_id: str) -> Iterator[tuple[bytes | None, bytes | None]]:
        try:
            yield from self._api.exec_start(exec_id, stream=True, demux=True)
        except requests.exceptions.ConnectionError as exc:
            if not self._stopping.is_set():
                raise EngineUnavailable(
                    f"lost the Docker engine while the command ran ({_short(exc)}); "
                    "check that it is running (`docker info`)"
                ) from None
        except docker.errors.DockerException as exc:
            if not self._stopping.is_set():
                raise SandboxError(
                    f"the sandbox died while the command ran ({_short(exc)})"
                ) from None

    def _exit_code(self, exec_id: str) -> int:
        try:
            info = self._api.exec_inspect(exec_id)
        except requests.exceptions.ConnectionError as exc:
            raise EngineUnavailable(
                f"lost the Docker engine before the command's exit status was known "
                f"({_short(exc)}); check that it is running (`docker info`)"
            ) from None
        except docker.errors.DockerException:
            return 137  # the container went away under the command
        code = info.get("ExitCode")
        return 137 if code is None else int(code)

    def _run(self, command: list[str], stdin: bytes | None = None) -> ExecResult:
        """A short internal command, its input written to stdin when given."""
        if stdin is None:
            return self._exec(command, output_cap_bytes=FILE_CAP_BYTES)
        cid = self._require_running()
        exec_id = self._exec_create(cid, command, stdin=True)
        try:
            sock = self._api.exec_start(exec_id, socket=True)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not write to the sandbox ({_short(exc)})") from None
        raw = getattr(sock, "_sock", sock)
        err = b""
        try:
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
            for kind, chunk in _demux(raw):
                if kind == 2:
                    err += chunk
        except OSError as exc:
            raise SandboxError(f"the sandbox closed the stream while writing ({exc})") from None
        finally:
            sock.close()
        return ExecResult(exit_code=self._exit_code(exec_id), stdout=b"", stderr=err)

    def spawn(
        self, command: Sequence[str], *, user: tuple[int, int] | None = None
    ) -> DockerProcess:
        """Start a long-running command whose stdin and stdout stay connected.

        Args:
            user: uid:gid to run it as instead of the sandbox user, so the task's commands
                cannot signal it (a timeout's `kill -1` reaches only the sandbox user's).
        """
        cid = self._require_running()
        exec_id = self._exec_create(cid, list(command), stdin=True, user=user)
        try:
            sock = self._api.exec_start(exec_id, socket=True)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"could not start {command[0]!r} ({_short(exc)})") from None
        return DockerProcess(sock, name=str(command[0]))

    def _on_timeout(self, exec_id: str, timed_out: threading.Event) -> None:
        timed_out.set()
        if self._signal_all("TERM") and self._wait_exec(exec_id, TERM_GRACE_S):
            return
        if self._signal_all("KILL") and self._wait_exec(exec_id, KILL_WAIT_S):
            return
        # No room for even a `kill` process (pids limit): restart the container instead.
        cid = self._container_id
        if cid is not None:
            with contextlib.suppress(docker.errors.DockerException):
                self._api.restart(cid, timeout=0)

    def _signal_all(self, signal: str) -> bool:
        """Signal every process of the sandbox user but the signaller (and init)."""
        cid = self._container_id
        if cid is None:
            return False
        try:
            exec_id = self._exec_create(cid, ["kill", f"-{signal}", "-1"])
            self._api.exec_start(exec_id)
        except (SandboxError, docker.errors.DockerException):
            return False
        return True

    def _wait_exec(self, exec_id: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if not self._api.exec_inspect(exec_id)["Running"]:
                    return True
            except docker.errors.DockerException:
                return True
            time.sleep(0.05)
        return False

    def _deadline_passed(self) -> bool:
        """Whether the sandbox's deadline has come, so its init is ending everything."""
        return self._deadline_at is not None and time.time() >= self._deadline_at

    def _new_oom_kill(self) -> bool:
        try:
            result = self._exec(["sh", "-c", OOM_COUNTER], timeout_s=10)
            count = int(result.stdout.strip() or 0)
        except (SandboxError, ValueError, docker.errors.DockerException):
            return False
        new, self._oom_kills = count > self._oom_kills, count
        return new

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


class DockerProcess:
    """The streams of a command started by `DockerSandbox.spawn` (Docker's multiplexed socket)."""

    def __init__(self, sock: Any, *, name: str) -> None:
        self._sock = sock
        self._raw = getattr(sock, "_sock", sock)
        self._frames = _demux(self._raw)
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self.name = name
        self.stderr = bytearray()

    def write(self, data: bytes) -> None:
        try:
            self._raw.sendall(data)
        except OSError as exc:
            raise SandboxError(f"{self.name} in the sandbox is gone ({exc})") from None

    def _fill(self) -> None:
        for kind, chunk in self._frames:
            if kind == 2:
                # Kept (bounded) for error messages; never mixed into stdout.
                self.stderr = (self.stderr + chunk)[-8192:]
                continue
            self._buffer += chunk
            return
        tail = self.stderr.decode(errors="replace").strip()[-500:]
        raise SandboxError(f"{self.name} in the sandbox ended" + (f": {tail}" if tail else ""))

    def read_exactly(self, size: int) -> bytes:
        with self._lock:
            while len(self._buffer) < size:
                self._fill()
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    def read_line(self, limit: int = 65536) -> bytes:
        with self._lock:
            while b"\n" not in self._buffer[:limit]:
                if len(self._buffer) >= limit:
                    raise SandboxError(f"{self.name} sent a line longer than {limit} bytes")
                self._fill()
            end = self._buffer.index(b"\n") + 1
            line = bytes(self._buffer[:end])
            del self._buffer[:end]
            return line

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            self._sock.close()


def _demux(raw: Any) -> Iterator[tuple[int, bytes]]:
    """Read Docker's multiplexed stream: 8-byte header (stream, size) then the payload."""

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = raw.recv(n - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    while True:
        header = read(8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:8], "big")
        yield header[0], read(size)


def _file_error(path: Path, result: ExecResult) -> str:
    reason = result.stderr.decode(errors="replace").strip().splitlines()
    detail = reason[-1] if reason else f"exit status {result.exit_code}"
    return f"{path}: {detail}"


__all__ = ["DockerProcess", "DockerSandbox", "connect", "owner_labels", "prune_orphans"]
