"""The browser in the desktop sandbox: Chromium runs there (no network), driven over the bridge."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from anthropic.tools import BetaToolsetCallContext, ToolError

from computer_use.browser.cdp_bridge import BROWSER_HOME, SandboxChromium
from computer_use.browser.domains import AllowedDomains
from computer_use.browser.launch import BrowserFailed
from computer_use.browser.toolset import ChromiumBrowser
from sandbox import Sandbox, SandboxSpec
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

pytestmark = [pytest.mark.docker, pytest.mark.browser]

SITE = "/tmp/site"
LOG = "/tmp/site.log"


def call(browser: ChromiumBrowser, member: str, **input: object) -> tuple[str, bool]:
    try:
        blocks = browser.call(BetaToolsetCallContext(), member, input)
    except ToolError as exc:
        return str(exc), True
    return "\n".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text"), False


def chromium_processes(box: Sandbox) -> list[str]:
    listing = box.exec(["ps", "-eo", "comm"]).stdout.decode().split()
    return [name for name in listing if name.startswith("chrom")]


@pytest.fixture
def box(make_sandbox: MakeSandbox) -> Iterator[Sandbox]:
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE))
    # A web server INSIDE the sandbox, as the task's user: the only way to reach it is from there.
    page = "<title>Inside</title><h1>Served from the sandbox</h1><button>Ok</button>"
    box.write_file(Path("/tmp/index.html"), page.encode())
    server = box.spawn(
        [
            "sh",
            "-c",
            f"mkdir -p {SITE} && cp /tmp/index.html {SITE}/ && cd {SITE} && "
            f"exec python3 -m http.server 8000 --bind 127.0.0.1 2>{LOG}",
        ]
    )
    deadline = time.monotonic() + 30
    while not box.exec(["curl", "-sf", "--max-time", "2", "http://127.0.0.1:8000/"]).ok:
        if time.monotonic() > deadline:
            pytest.fail("the web server in the sandbox did not start")
        time.sleep(0.2)
    yield box
    server.close()


def listening_ports(box: Sandbox) -> set[int]:
    """TCP ports listening in the sandbox, from /proc (state 0A is LISTEN)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in box.read_file(Path(table)).decode().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.parametrize("transport", ["pipe", "port"])
def test_a_page_served_inside_the_sandbox_is_read_through_the_bridge(
    box: Sandbox, transport: Literal["pipe", "port"]
) -> None:
    launcher = SandboxChromium(
        box,
        transport=transport,
        extra_args=("--host-resolver-rules=MAP site.test 127.0.0.1, MAP other.test 127.0.0.1",),
    )
    browser = ChromiumBrowser(
        launcher=launcher,
        allowed_domains=AllowedDomains.parse(["site.test"]),
        confirm=lambda c: True,
    )
    with browser:
        assert chromium_processes(box), "Chromium should run inside the sandbox"
        text, error = call(browser, "navigate", url="http://site.test:8000/")
        assert not error and text.startswith(
            "Navigated to http://site.test:8000/ — Inside (HTTP 200)"
        )
        assert call(browser, "get_page_text")[0] == "Served from the sandbox\nOk"
        assert 'button "Ok" [ref_' in call(browser, "read_page")[0]
        refused, error = call(browser, "navigate", url="http://other.test:8000/secret")
        assert error and "is not on this task's allowed domains (allowed: site.test)" in refused
        if transport == "port":
            # Once Playwright is connected the bridge takes no more connections.
            assert launcher.bridge_port is not None
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", launcher.bridge_port), timeout=5).close()
        else:
            # No DevTools port in the sandbox: the task's own commands cannot drive the browser.
            assert listening_ports(box) == {8000}
    log = box.read_file(Path(LOG)).decode()
    assert '"GET / HTTP/1.1" 200' in log and "/secret" not in log
    deadline = time.monotonic() + 20
    while chromium_processes(box):
        if time.monotonic() > deadline:
            pytest.fail(
                f"Chromium still runs in the sandbox after close: {chromium_processes(box)}"
            )
        time.sleep(0.2)


def test_the_browser_keeps_its_profile_from_the_task(box: Sandbox) -> None:
    browser = ChromiumBrowser(
        launcher=SandboxChromium(box), allowed_domains=AllowedDomains.parse([]), confirm=None
    )
    with browser:
        assert chromium_processes(box)
        # The task's user can read the log (for error messages), not the profile (cookies,
        # history) nor write anything Chromium or its Python helper would read.
        listing = box.exec(["ls", f"{BROWSER_HOME}/profile"])
        assert listing.exit_code != 0 and b"Permission denied" in listing.stderr
        assert not box.exec(["touch", f"{BROWSER_HOME}/planted"]).ok


def test_a_browser_folder_the_task_made_first_stops_the_browser(box: Sandbox) -> None:
    # Planted before the browser starts: its profile and HOME would be the task's to shape.
    assert box.exec(["mkdir", "-m", "0777", "-p", f"{BROWSER_HOME}/profile"]).ok
    browser = ChromiumBrowser(
        launcher=SandboxChromium(box, start_timeout_s=10),
        allowed_domains=AllowedDomains.parse([]),
        confirm=None,
    )
    with pytest.raises(BrowserFailed):
        browser.start()
    assert not chromium_processes(box)
