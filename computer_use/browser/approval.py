"""The browser's side of the approval gate: which page a call acts on, shown and kept to.

`ChromiumBrowser` gives its `Confirmer` what the computer tool gives its own:

- `capture()`: the tab the call acts on, as Chromium's compositor draws it (DevTools
  `Page.captureScreenshot`), so a request carries the page the person judges, the annotation
  marks where a click lands on it, and the gate compares it again just before the action;
- `to_screen(member, input)`: the model's coordinates (screenshot pixels, which are viewport
  pixels) in capture pixels, and for an element target (`ref_7`) the centre of its box, where
  Playwright will click, as `coordinate`: the card marks it and the gate compares around it;
- the tab's URL, read live from the browser process when the call is confirmed: the policy
  judges it (`domain` rules apply to a click on a page, not only to the URL a `navigate` opens),
  and `PageGate` writes it on every request (`screen_input["tab_url"]` and the description), so
  the card says which site the click lands on.

The URL is also bound: an approval is for a page at one address. If the tab's URL changed
between the request and the action (a redirect, a `pushState`, a page that looks the same on
another host; a new `#fragment` alone does not count), the call is confirmed again, with the
policy judging the new address and a new request replacing the approved one. What is left open:
as for the screen, the last check and the action are milliseconds apart, not atomic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urldefrag

from computer_use.approval.annotate import shorten
from computer_use.approval.gate import ApprovalGate, ApprovalOutcome, ApprovalRequest, OutcomeKind

# How much of a URL the one-line description shows; `screen_input["tab_url"]` keeps it whole.
DESCRIBED_URL_CHARS = 200
# Re-confirmations after an approved page moved to another address, before refusing.
MAX_URL_REASKS = 3
# Coordinate fields of the browser's inputs: `{"type": "coordinate", "x", "y"}` targets.
POINT_KEYS = ("from", "target")


def on_page(description: str, member: str, url: str | None) -> str:
    """`Click at (10, 20)` → `Click at (10, 20) on https://example.com/`; a `navigate` leaves
    its page (`Open https://b.example/ from https://a.example/`)."""
    page = "a blank tab" if url in (None, "", "about:blank") else shorten(url, DESCRIBED_URL_CHARS)
    return f"{description} {'from' if member == 'navigate' else 'on'} {page}"


def same_page(a: str | None, b: str | None) -> bool:
    """Whether two URLs name the same document: a `#fragment` alone (a SPA's anchor, a video's
    timestamp) loads nothing new and moves no host, so it does not void an approval."""
    return (urldefrag(a).url if a else a) == (urldefrag(b).url if b else b)


def scaled(input: Mapping[str, Any], scale: float) -> dict[str, Any]:
    """The input with its coordinate targets multiplied by `scale` (viewport → capture pixels)."""
    out = dict(input)
    for key in POINT_KEYS:
        target = out.get(key)
        if isinstance(target, Mapping) and target.get("type") == "coordinate":
            x, y = target.get("x"), target.get("y")
            if isinstance(x, int | float) and isinstance(y, int | float):
                out[key] = {**target, "x": round(x * scale), "y": round(y * scale)}
    return out


@dataclasses.dataclass
class PageBinding:
    """What one confirmation was about: the page's address as judged, then as approved."""

    judged_url: str | None
    approved: list[tuple[int | None, str | None]] = dataclasses.field(default_factory=list)
    moved: tuple[int | None, str] | None = None


class PageGate:
    """An `ApprovalGate` that writes the tab's URL on each request and remembers what was
    approved, so the toolset can hold the action to that page.

    Args:
        gate: the controller's gate.
        page_url: the live URL of the tab being judged (None when unknown).
    """

    def __init__(self, gate: ApprovalGate, page_url: Callable[[], str | None]) -> None:
        self.gate = gate
        self.page_url = page_url
        self.binding: PageBinding | None = None

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        url = self.page_url()
        binding = self.binding
        changes: dict[str, Any] = {
            "screen_input": {**req.screen_input, "tab_url": url},
            "description": on_page(req.description, req.member, url),
        }
        if binding is not None and binding.moved is not None and req.replaces is None:
            # A re-confirmation because the approved page moved: it replaces that approval.
            changes["replaces"], changes["replaced_because"] = binding.moved
            binding.moved = None
        outcome = self.gate.request(dataclasses.replace(req, **changes))
        if binding is not None and outcome.kind is OutcomeKind.APPROVED:
            binding.approved.append((outcome.request_id, url))
        return outcome


__all__ = ["MAX_URL_REASKS", "PageBinding", "PageGate", "on_page", "same_page", "scaled"]
