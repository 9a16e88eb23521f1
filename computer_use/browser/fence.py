"""The browser's domain fence on the wire: every request Chromium makes, checked before it leaves.

`RequestFence` enables the DevTools `Fetch` domain on the *browser* target, so each request of
every tab, popup, iframe and worker is paused and continued only if `AllowedDomains` allows its
URL; each redirect hop arrives as a request of its own. A refused document request is failed as
`Aborted`, which cancels the navigation without an error page: the tab keeps its page. `Fetch`
does not pause WebSocket handshakes, so documents and worker scripts are re-delivered with a CSP
`connect-src` naming the same hosts. Refusals are kept so the toolset can tell the model.
"""

from __future__ import annotations

import base64
import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from computer_use.browser.domains import AllowedDomains

if TYPE_CHECKING:
    from playwright.sync_api import Browser, CDPSession

# Responses that can carry a CSP for scripts: documents (pages, iframes) and worker scripts
# (which Chromium's DevTools reports as "Other").
CSP_CARRIERS = frozenset({"Document", "Other"})


@dataclass(frozen=True)
class Refusal:
    """A request the fence stopped."""

    url: str
    reason: str
    document: bool
    frame_id: str


class RequestFence:
    """Pauses every request of the browser (CDP `Fetch` on the browser target) and lets through
    only those `AllowedDomains` allows; redirect hops arrive here as requests of their own."""

    def __init__(self, domains: AllowedDomains) -> None:
        self.domains = domains
        self.csp = domains.connect_src()
        self.refusals: list[Refusal] = []
        self.allowed_count = 0
        self._session: CDPSession | None = None
        self._lock = threading.Lock()

    def attach(self, browser: Browser) -> None:
        session = browser.new_browser_cdp_session()
        session.on("Fetch.requestPaused", self._paused)
        patterns = [
            {"urlPattern": "*", "requestStage": "Request"},
            {"urlPattern": "*", "requestStage": "Response"},
        ]
        session.send("Fetch.enable", {"patterns": patterns})
        self._session = session

    def _paused(self, event: dict[str, Any]) -> None:
        session = self._session
        if session is None:
            return
        request_id = event["requestId"]
        if "responseStatusCode" in event or "responseErrorReason" in event:
            self._answered(session, event)
            return
        url = str(event.get("request", {}).get("url", ""))
        reason = self.domains.refusal(url)
        document = event.get("resourceType") == "Document"
        with contextlib.suppress(Exception):  # the request may be gone (tab closed)
            if reason is None:
                self.allowed_count += 1
                session.send("Fetch.continueRequest", {"requestId": request_id})
                return
            with self._lock:
                self.refusals.append(Refusal(url, reason, document, str(event.get("frameId", ""))))
            # `Aborted` cancels a navigation without an error page: the tab keeps its page.
            error = "Aborted" if document else "BlockedByClient"
            session.send("Fetch.failRequest", {"requestId": request_id, "errorReason": error})

    def _answered(self, session: CDPSession, event: dict[str, Any]) -> None:
        """A response on its way in. Documents and worker scripts are delivered again with the
        fence's CSP `connect-src` added, so that neither a page nor a worker can open a
        WebSocket (which `Fetch` does not pause) to a host off the list. Chromium honours a CSP
        header only on a fulfilled response, not on one continued with edited headers, so those
        bodies pass through here; every other response continues untouched."""
        request_id = event["requestId"]
        try:
            status = int(event.get("responseStatusCode", 0))
            if (
                "responseErrorReason" in event
                or event.get("resourceType") not in CSP_CARRIERS
                or 300 <= status < 400  # a redirect: its next hop is paused as a request
            ):
                session.send("Fetch.continueRequest", {"requestId": request_id})
                return
            body = session.send("Fetch.getResponseBody", {"requestId": request_id})
            data = body.get("body", "")
            if not body.get("base64Encoded"):
                data = base64.b64encode(str(data).encode()).decode("ascii")
            headers = [
                *event.get("responseHeaders", []),
                {"name": "Content-Security-Policy", "value": self.csp},
            ]
            answer: dict[str, Any] = {
                "requestId": request_id,
                "responseCode": event["responseStatusCode"],
                "responseHeaders": headers,
                "body": data,
            }
            if event.get("responseStatusText"):
                answer["responsePhrase"] = event["responseStatusText"]
            session.send("Fetch.fulfillRequest", answer)
        except Exception:
            # Never leave a response paused: one that cannot carry the CSP is not delivered.
            with contextlib.suppress(Exception):
                session.send(
                    "Fetch.failRequest", {"requestId": request_id, "errorReason": "BlockedByClient"}
                )

    def mark(self) -> int:
        with self._lock:
            return len(self.refusals)

    def since(self, mark: int) -> list[Refusal]:
        with self._lock:
            return self.refusals[mark:]
