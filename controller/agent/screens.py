"""The screen tools of an agent task: the computer toolset on the sandbox's screen or the host's,
and (when built) the browser, each behind its own `Confirmer`.

`display: "sandbox"` starts the virtual screen inside the task's desktop sandbox
(computer_use.screen.desktop); `display: "host"` drives the X display the `host_display`
setting names (computer_use.screen.x11). Either way every call asks the gate first, and an
approved call is checked against a fresh capture of the same screen just before it runs. The
browser's screen is its tab (computer_use.browser.approval): its requests carry the page and its
URL, and an approved call is checked against the page again, pixels and address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image

from computer_use.approval.gate import Confirmer
from computer_use.screen.base import Screen
from computer_use.screen.computer import X11ComputerToolset
from computer_use.screen.desktop import SandboxDesktop, SandboxScreen
from computer_use.screen.x11 import X11Screen
from sandbox import Network, Sandbox, SandboxError
from sandbox.egress.relay import PROXY_PORT

if TYPE_CHECKING:
    from controller.agent.runner import AgentJob, FolderPolicy, StoreGate

DESKTOP_SIZE = (1280, 800)


def computer_screen(job: AgentJob, box: Sandbox | None) -> Screen:
    """The screen the computer tool drives: the sandbox's desktop or the host display.

    Raises:
        SandboxError: the desktop could not start (the message says why).
    """
    if job.agent.get("display") == "host":
        display = job.settings.host_display
        if display is None:  # refused at submission; the setting may have changed since
            raise SandboxError('display "host" needs the host_display setting, e.g. ":0"')
        return X11Screen(display)
    if box is None:
        raise SandboxError("the desktop sandbox was not started")
    desktop = SandboxDesktop(box, width=DESKTOP_SIZE[0], height=DESKTOP_SIZE[1])
    desktop.start()
    return SandboxScreen(desktop)


def screen_toolsets(
    job: AgentJob, tools: list[str], box: Sandbox | None, policy: FolderPolicy, gate: StoreGate
) -> list[Any]:
    """The computer (and browser) toolsets of `job`, closed when the job ends."""
    toolsets: list[Any] = []
    if "computer" in tools:
        screen = computer_screen(job, box)
        confirm: Confirmer = job._confirmer("computer", policy, gate, pointer=screen.pointer)
        toolset = X11ComputerToolset(screen, confirm=confirm)
        job.closers.append(toolset.close)

        def capture() -> Image.Image:
            return toolset.capture().full_image()

        confirm.capture = capture
        confirm.to_screen = toolset.to_screen
        confirm.panels = toolset.panels
        toolsets.append(toolset)
    if "browser" in tools:
        toolsets.append(browser_toolset(job, box, policy, gate))
    return toolsets


def browser_toolset(
    job: AgentJob, box: Sandbox | None, policy: FolderPolicy, gate: StoreGate
) -> Any:
    """Chromium in the task's desktop sandbox, fenced to the task's allowed domains.

    Raises:
        SandboxError: Playwright is not installed (the `browser` extra), or Chromium did not
            start (the message says why).
    """
    try:
        from computer_use.browser.cdp_bridge import SandboxChromium
        from computer_use.browser.domains import AllowedDomains
        from computer_use.browser.toolset import BrowserFailed, ChromiumBrowser
    except ImportError as exc:
        raise SandboxError(
            f"the browser tool needs Playwright ({exc}); install Dispatch with its browser "
            "extra: pip install 'dispatch[browser]'"
        ) from None
    if box is None:
        raise SandboxError("the desktop sandbox for the browser was not started")
    allowlist = job.task.network == Network.ALLOWLIST.value
    # In allowlist mode the browser goes through the sandbox's egress proxy like every other
    # program (Chromium ignores HTTP_PROXY), and its fence defaults to the same list: what the
    # model can open and what its shell can fetch are one policy.
    named = job.agent.get("allowed_domains") or (
        [entry.rsplit(":", 1)[0] for entry in job.task.network_allow or ()] if allowlist else []
    )
    domains = AllowedDomains.parse(named)
    proxy = (f"--proxy-server=http://127.0.0.1:{PROXY_PORT}", "--disable-quic") if allowlist else ()
    confirm = job._confirmer("browser", policy, gate)
    browser = ChromiumBrowser(
        launcher=SandboxChromium(box, extra_args=proxy), allowed_domains=domains, confirm=confirm
    )
    # Bound to what was seen, as for the computer: the tab is captured before asking and again
    # before acting, and each request names the page's URL.
    browser.bind_confirmer(confirm)
    try:
        browser.start()
    except BrowserFailed as exc:
        raise SandboxError(f"the browser did not start: {exc}") from None
    job.closers.append(browser.close)
    return browser


__all__ = ["computer_screen", "screen_toolsets"]
