"""Where the browser tool's Chromium runs: the launcher protocol and Debian's Chromium here.

The desktop sandbox's launcher (Chromium inside the sandbox, reached over DevTools) is in
`cdp_bridge`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")
# Chromium flags for every launch: no first-run noise, and WebRTC kept off non-proxied UDP.
CHROMIUM_FLAGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    # A document the fence re-delivers (to add its CSP) loses the address it came from, so
    # Chromium's local-network checks would take every such page for a public one and block
    # its requests to a site on a private address. The fence already limits every request to
    # the named hosts.
    "--disable-features=LocalNetworkAccessChecks",
)


class BrowserFailed(RuntimeError):
    """Chromium could not be started or connected to (the message says which and why)."""


class BrowserLauncher(Protocol):
    """Where Chromium runs: gives a connected Playwright `Browser`, and takes it down."""

    def connect(self, playwright: Playwright) -> Browser:
        """Start (or reach) Chromium and return it connected. Raises BrowserFailed."""

    def close(self) -> None:
        """Stop what `connect` started."""


@dataclass
class LocalChromium:
    """Debian's Chromium on this machine, headless (tests and development; no confinement)."""

    executable: Path = CHROMIUM
    extra_args: Sequence[str] = ()
    _browser: Browser | None = field(default=None, init=False, repr=False)

    def connect(self, playwright: Playwright) -> Browser:
        from playwright.sync_api import Error as PlaywrightError

        if not self.executable.exists():
            raise BrowserFailed(
                f"{self.executable} does not exist; install Debian's chromium package "
                "(`apt-get install chromium`) or pass executable="
            )
        try:
            self._browser = playwright.chromium.launch(
                executable_path=str(self.executable),
                headless=True,
                args=[*CHROMIUM_FLAGS, *self.extra_args],
            )
        except PlaywrightError as exc:
            raise BrowserFailed(f"Chromium did not start: {first_line(exc)}") from None
        return self._browser

    def close(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.close()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
