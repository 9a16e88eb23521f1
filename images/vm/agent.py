#!/usr/bin/python3 -I
"""Dispatch's exec agent, inside a VM: runs commands for the host over a virtio-serial port.

Why not the QEMU guest agent: its guest-exec returns a command's output only once it has
exited (no streaming), keeps all of it in memory, and cannot kill a process tree. This agent
streams output as it comes, stops forwarding at the caller's cap (counting the rest), and runs
each command in a cgroup of its own, so a timeout kills the whole tree with `cgroup.kill` and an
out-of-memory kill is seen in `memory.events`.

Frames both ways: a 4-byte big-endian length, then a JSON object. The agent speaks first
("hello") each time the host connects; a write blocks until a host is connected, and a read
returns nothing once it has gone, when every running command is killed.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

PORT_NAME = "org.dispatch.agent.0"
LIBC = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
CGROUP_ROOT = "/sys/fs/cgroup"
SANDBOX_CGROUP = f"{CGROUP_ROOT}/sandbox"
CHUNK = 64 * 1024
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Channel:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.alive = True

    def send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        data = struct.pack(">I", len(body)) + body
        with self.lock:
            if not self.alive:
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.fd, view) :]
                except OSError:
                    self.alive = False
                    return

    def read_exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = os.read(self.fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def receive(self) -> dict | None:
        header = self.read_exactly(4)
        if header is None:
            return None
        body = self.read_exactly(struct.unpack(">I", header)[0])
        return None if body is None else json.loads(body)


class Agent:
    def __init__(self) -> None:
        self.user = (1000, 1000)
        self.env: dict[str, str] = {}
        self.running: dict[int, str] = {}  # exec id -> its cgroup
        self.killed: set[int] = set()  # exec ids a kill was asked for
        self.lock = threading.Lock()
        self.serial = 0

    # -- setup ---------------------------------------------------------------------------

    def setup(self, request: dict) -> dict:
        uid, gid = request["uid"], request["gid"]
        self.user = (uid, gid)
        self.env = dict(request.get("env") or {})
        sized = MS_NOSUID | MS_NODEV
        mount("tmp", "/tmp", "tmpfs", sized, f"size={request['tmp_mb']}m,mode=1777")
        home = f"size={request['home_mb']}m,mode=0700,uid={uid},gid={gid}"
        mount("home", "/home/sandbox", "tmpfs", sized, home)
        write(f"{CGROUP_ROOT}/cgroup.subtree_control", "+memory +pids")
        os.makedirs(SANDBOX_CGROUP, exist_ok=True)
        write(f"{SANDBOX_CGROUP}/memory.max", str(request["memory_mb"] * 1024 * 1024))
        write(f"{SANDBOX_CGROUP}/memory.swap.max", "0", missing_ok=True)
        write(f"{SANDBOX_CGROUP}/pids.max", str(request["pids"]))
        write(f"{SANDBOX_CGROUP}/cgroup.subtree_control", "+memory +pids")
        if request.get("deadline_s") is not None:
            # The sandbox ends by itself at its deadline, even with no host left to stop it.
            timer = threading.Timer(request["deadline_s"], power_off, (self,))
            timer.daemon = True
            timer.start()
        if request.get("network"):
            # QEMU's user-mode network: fixed addresses, no DHCP client needed.
            run(["ip", "link", "set", "eth0", "up"])
            run(["ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"])
            run(["ip", "route", "add", "default", "via", "10.0.2.2"])
        return {"ev": "done"}

    def mount(self, request: dict) -> dict:
        path = request["path"]
        if not os.path.isdir(path):
            mount(None, "/", None, MS_REMOUNT, None)
            try:
                os.makedirs(path, exist_ok=True)
            finally:
                mount(None, "/", None, MS_REMOUNT | MS_RDONLY, None)
        if os.path.realpath(path) != path:
            raise OSError(f"{path} is not a plain path in the VM (a symlink is on the way)")
        flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if request["read_only"] else 0)
        options = "trans=virtio,version=9p2000.L,msize=524288,access=any"
        mount(request["tag"], path, "9p", flags, options)
        return {"ev": "done"}

    def umount(self, request: dict) -> dict:
        if LIBC.umount2(request["path"].encode(), 0) != 0:
            raise OSError(ctypes.get_errno(), f"umount {request['path']}")
        return {"ev": "done"}

    # -- commands ------------------------------------------------------------------------

    def exec(self, channel: Channel, request: dict) -> None:
        ident = request["id"]
        with self.lock:
            self.serial += 1
            cgroup = f"{SANDBOX_CGROUP}/e{self.serial}"
        os.makedirs(cgroup, exist_ok=True)
        uid, gid = self.user
        # No `confine` here (a container's second seccomp layer): in a VM the files of a
        # read-write folder are made by QEMU, running as the folder's owner, so a setuid bit
        # can only ever name that owner; the host search after each command removes it anyway.
        argv = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--no-new-privs",
            "--",
            *request["argv"],
        ]
        env = {
            "PATH": PATH,
            "HOME": "/home/sandbox",
            "LANG": "C.UTF-8",
            "USER": "sandbox",
            **self.env,
            **(request.get("env") or {}),
        }

        def enter_cgroup() -> None:
            fd = os.open(f"{cgroup}/cgroup.procs", os.O_WRONLY)
            os.write(fd, b"0")
            os.close(fd)

        stdin = request.get("stdin")
        with self.lock:
            self.running[ident] = cgroup
        try:
            process = subprocess.Popen(
                argv,
                cwd=request.get("cwd") or "/home/sandbox",
                env=env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=enter_cgroup,
                start_new_session=True,
            )
        except OSError as exc:
            channel.send(
                {
                    "id": ident,
                    "ev": "exit",
                    "code": 126,
                    "oom": False,
                    "dropped": [0, 0],
                    "error": f"cannot start: {exc}",
                }
            )
            with self.lock:
                self.running.pop(ident, None)
                self.killed.discard(ident)
            remove_cgroup(cgroup)
            return
        with self.lock:
            # A kill that came while the command was starting (a spawn takes a while under
            # emulation) found its cgroup still empty: the command is in it now.
            if ident in self.killed:
                kill_cgroup(cgroup)
        cap = request["cap"]
        dropped = [0, 0]

        def pump(index: int, stream, name: str) -> None:
            sent = 0
            while chunk := stream.read1(CHUNK) if hasattr(stream, "read1") else stream.read(CHUNK):
                room = max(cap - sent, 0)
                if room:
                    kept = chunk[:room]
                    sent += len(kept)
                    channel.send(
                        {
                            "id": ident,
                            "ev": "out",
                            "stream": name,
                            "data": base64.b64encode(kept).decode(),
                        }
                    )
                dropped[index] += len(chunk) - min(room, len(chunk))

        pumps = [
            threading.Thread(target=pump, args=(0, process.stdout, "stdout"), daemon=True),
            threading.Thread(target=pump, args=(1, process.stderr, "stderr"), daemon=True),
        ]
        for thread in pumps:
            thread.start()
        if stdin is not None:
            threading.Thread(
                target=feed, args=(process.stdin, base64.b64decode(stdin)), daemon=True
            ).start()
        code = process.wait()
        # Output still held by a background child of the command: give it a moment, not forever.
        for thread in pumps:
            thread.join(timeout=1.0)
        oom = oom_kills(cgroup) > 0
        with self.lock:
            self.running.pop(ident, None)
            self.killed.discard(ident)
        channel.send(
            {
                "id": ident,
                "ev": "exit",
                "code": 128 - code if code < 0 else code,
                "oom": oom,
                "dropped": dropped,
            }
        )
        remove_cgroup(cgroup)

    def kill(self, request: dict) -> dict:
        with self.lock:
            # Remembered even when the command's thread has not started yet: it checks.
            self.killed.add(request["target"])
            cgroup = self.running.get(request["target"])
            if cgroup is not None:
                kill_cgroup(cgroup)
        return {"ev": "done"}

    def kill_all(self) -> None:
        with self.lock:
            cgroups = list(self.running.values())
        for cgroup in cgroups:
            kill_cgroup(cgroup)

    # -- the connection ------------------------------------------------------------------

    def serve(self, channel: Channel) -> None:
        with self.lock:
            self.killed.clear()  # ids start again with each host
        channel.send({"ev": "hello", "pid": os.getpid()})
        while True:
            request = channel.receive()
            if request is None:
                return
            op = request.get("op")
            if op == "exec":
                threading.Thread(target=self.exec, args=(channel, request), daemon=True).start()
                continue
            handler = {
                "ping": lambda r: {"ev": "pong"},
                "setup": self.setup,
                "mount": self.mount,
                "umount": self.umount,
                "kill": self.kill,
            }.get(op)
            try:
                if handler is None:
                    raise ValueError(f"unknown op {op!r}")
                answer = handler(request)
            except Exception as exc:
                answer = {"ev": "error", "message": str(exc)}
            channel.send({"id": request.get("id"), **answer})


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    """mount(2) itself: a `mount` process costs a good part of a second under emulation."""
    encoded = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    if LIBC.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def power_off(agent: Agent) -> None:
    agent.kill_all()
    kill_cgroup(SANDBOX_CGROUP)
    with open("/proc/sysrq-trigger", "w") as trigger:
        trigger.write("o")


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def write(path: str, value: str, *, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as file:
            file.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass


def oom_kills(cgroup: str) -> int:
    try:
        with open(f"{cgroup}/memory.events") as file:
            for line in file:
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    except OSError:
        pass
    return 0


def kill_cgroup(cgroup: str) -> None:
    with contextlib.suppress(OSError):
        write(f"{cgroup}/cgroup.kill", "1")


def remove_cgroup(cgroup: str) -> None:
    # A background process the command left keeps its cgroup (and lives on, as in a
    # container); a killed tree may take a moment to leave it.
    deadline = time.monotonic() + 1
    while True:
        try:
            os.rmdir(cgroup)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def find_port() -> str:
    """The device of the agent's port (no udev here to make /dev/virtio-ports/ links)."""
    while True:
        try:
            for entry in os.listdir("/sys/class/virtio-ports"):
                with open(f"/sys/class/virtio-ports/{entry}/name") as file:
                    if file.read().strip() == PORT_NAME:
                        return f"/dev/{entry}"
        except OSError:
            pass
        time.sleep(0.05)


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    agent = Agent()
    port = find_port()
    while True:
        fd = os.open(port, os.O_RDWR)
        try:
            agent.serve(Channel(fd))
        except Exception as exc:
            print(f"dispatch agent: {exc}", file=sys.stderr)
        finally:
            agent.kill_all()
            os.close(fd)


if __name__ == "__main__":
    main()
