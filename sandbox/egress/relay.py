"""The sandbox side of network mode `allowlist`: a loopback port relayed to the proxy's socket.

The container has no network interface but loopback (Docker's network mode `none`): no route,
no DNS, no UDP, nothing to reach the host's services on. The proxy's Unix socket is mounted
into it (read-only folder), and a relay started as another user than the task's (so the task
cannot signal it) listens on 127.0.0.1:3128 and carries each connection to that socket. Tools
find it through HTTP_PROXY/HTTPS_PROXY. If the proxy is gone, the socket refuses and so does the
relay: the sandbox is left with no network, never with an open one.

Why not a Docker `--internal` network with the proxy on the host's side of its bridge: the host
answers on that bridge address on every port it listens on (the controller, a database, ...),
and closing them needs firewall rules that need root. A socket file gives the sandbox exactly
one thing to talk to.
"""

from __future__ import annotations

from pathlib import Path

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# Where the folder holding the proxy's socket is mounted in the container.
SOCKET_DIR = Path("/run/dispatch-egress")
SOCKET_NAME = "proxy.sock"
# nobody:nogroup in the image: neither the task's user nor root.
RELAY_USER = (65534, 65534)
NO_PROXY = "localhost,127.0.0.1,::1"


def proxy_env() -> dict[str, str]:
    """The environment that sends ordinary tools (curl, pip, git, Python) through the proxy."""
    env = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = env[name.lower()] = PROXY_URL
    env["NO_PROXY"] = env["no_proxy"] = NO_PROXY
    return env


# Runs in the sandbox (python3 is in the image). Prints "ready" once listening; each accepted
# connection is carried to the proxy's socket by two threads, one per direction.
RELAY = r"""
import socket, sys, threading
path, port = sys.argv[1], int(sys.argv[2])
def pump(src, dst):
    try:
        while True:
            data = src.recv(262144)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass
def carry(conn):
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(path)
    except OSError:
        conn.close()
        up.close()
        return
    back = threading.Thread(target=pump, args=(up, conn), daemon=True)
    back.start()
    pump(conn, up)
    back.join()
    conn.close()
    up.close()
server = socket.create_server(("127.0.0.1", port), backlog=128)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=carry, args=(conn,), daemon=True).start()
"""


def relay_command() -> list[str]:
    return ["python3", "-c", RELAY, str(SOCKET_DIR / SOCKET_NAME), str(PROXY_PORT)]
