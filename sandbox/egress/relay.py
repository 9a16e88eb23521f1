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


# Runs in the sandbox (python3 is in the image). Prints "ready" once listening. One thread and
# one selector for every connection: a task that fills the container's pids limit cannot make
# the relay fail to start a thread and exit, which would free 3128 for the task's own server
# (the relay runs as nobody, so the task cannot kill it). A failure is one connection's, never
# the relay's.
RELAY = r"""
import selectors, socket, sys, time
path, port = sys.argv[1], int(sys.argv[2])
CHUNK = 262144
sel = selectors.DefaultSelector()
peer, pending, done = {}, {}, {}
def close(sock):
    for s in (sock, peer.get(sock)):
        if s is None or s not in peer:
            continue
        for table in (peer, pending, done):
            table.pop(s, None)
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
def update(sock):
    # Read only while the other side has taken everything; write while something waits.
    events = 0
    if not done[sock] and not pending[peer[sock]]:
        events |= selectors.EVENT_READ
    if pending[sock]:
        events |= selectors.EVENT_WRITE
    try:
        key = sel.get_key(sock)
    except KeyError:
        key = None
    if events and key is None:
        sel.register(sock, events)
    elif events and key.events != events:
        sel.modify(sock, events)
    elif not events and key is not None:
        sel.unregister(sock)
def finish_half(sock):
    # `sock` said EOF and all it sent has gone on: pass the EOF along (HTTP tunnels need it).
    other = peer[sock]
    if done[sock] and not pending[other]:
        try:
            other.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if done[other]:
            close(sock)
            return True
    return False
def accept(server):
    conn, _ = server.accept()
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(path)
    except OSError:
        conn.close()
        up.close()
        return
    peer[conn], peer[up] = up, conn
    for s in (conn, up):
        s.setblocking(False)
        pending[s], done[s] = b"", False
    for s in (conn, up):
        update(s)
def readable(sock):
    other = peer[sock]
    data = sock.recv(CHUNK)
    if not data:
        done[sock] = True
        if not finish_half(sock):
            update(sock)
        return
    try:
        sent = other.send(data)
    except BlockingIOError:
        sent = 0
    pending[other] = data[sent:]
    update(sock)
    update(other)
def writable(sock):
    if pending[sock]:
        sent = sock.send(pending[sock])
        pending[sock] = pending[sock][sent:]
    if not pending[sock] and finish_half(peer[sock]):
        return
    update(sock)
    update(peer[sock])
server = socket.create_server(("127.0.0.1", port), backlog=128)
server.setblocking(False)
sel.register(server, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    try:
        ready = sel.select()
    except (OSError, MemoryError):
        time.sleep(0.05)
        continue
    for key, events in ready:
        sock = key.fileobj
        try:
            if sock is server:
                accept(server)
                continue
            if events & selectors.EVENT_WRITE and sock in peer:
                writable(sock)
            if events & selectors.EVENT_READ and sock in peer:
                readable(sock)
        except BlockingIOError:
            pass
        except Exception:
            if sock is server:
                time.sleep(0.05)  # out of descriptors or memory: keep the port, try again
            else:
                close(sock)
"""


def relay_command() -> list[str]:
    return ["python3", "-c", RELAY, str(SOCKET_DIR / SOCKET_NAME), str(PROXY_PORT)]
