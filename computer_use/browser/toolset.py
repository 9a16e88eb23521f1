"""The browser tool: the SDK's browser toolset driving Chromium through Playwright.

`ChromiumBrowser` implements every member of `BetaAbstractBrowserToolset20260801` that makes
sense for one Chromium (navigation and history, screenshots and zoom, mouse and keyboard,
element references from an accessibility outline, forms, tabs). `file_upload`, `read_console`,
`read_network` and `javascript_exec` are not implemented, so the SDK declares them disabled:
uploads and scripts reach outside what a person approves on a screenshot, and console and
network logs are page-controlled text the outline already covers.

The domain fence. The task's `allowed_domains` (`allowed_domains.AllowedDomains`) are enforced
on every request Chromium makes by `browser_fence.RequestFence` (the DevTools `Fetch` domain on
the browser target: each redirect hop is paused as a request of its own). Playwright's own
`context.route` is not used because it does not see redirect hops (Playwright continues them
itself; tried with Playwright 1.65, the off-list host received the hop). The SDK's `url_policy`
refuses the model's own `navigate` with a sentence before anything is sent; a navigation the
page starts is refused on the wire, the tab stays where it was, and the model is told with the
call's result. Service workers are blocked; downloads are refused. Requests wait while Python is
not pumping Playwright's events (between calls), so a page that navigates on its own is held,
never let through. Not covered here (so covered by where Chromium runs, the desktop sandbox,
which has no network or an egress allowlist): WebRTC, DNS prefetch and preconnect.

Screenshots: the viewport is set to a size the model takes as it is (at most 1568 px on a side
and 1.15 megapixels, device scale 1), so screenshot pixels are viewport pixels and coordinates
need no mapping.

Approvals (`browser.approval`): the SDK calls `confirm` with the tab the call targets as of its
last report; this toolset hands it on with the tab's URL read live from the browser, offers
`capture()` (that tab through DevTools `Page.captureScreenshot`) and `to_screen()` for the
`Confirmer`, and a gate that writes the URL on each request (`bind_confirmer()` sets all three).
After an approval, a tab whose URL changed is confirmed again before the call runs.

Playwright's sync API is bound to the thread that started it: start, call and close the toolset
from one thread (the tool runner's), outside any asyncio loop.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
from typing import TYPE_CHECKING, Any, Literal

from anthropic.tools import (
    BetaAbstractBrowserToolset20260801,
    BetaBrowserNavigateResult,
    BetaBrowserState,
    BetaConfirmCallable,
    BetaDialogDismissed,
    BetaNavigationRefused,
    BetaScreenshotResult,
    BetaToolsetCallContext,
    BetaURLContext,
    ToolError,
)
from anthropic.types.beta import (
    BetaBrowserCloseTabInput,
    BetaBrowserDoubleClickInput,
    BetaBrowserFindInput,
    BetaBrowserFormInputInput,
    BetaBrowserGetPageTextInput,
    BetaBrowserHoldKeyInput,
    BetaBrowserHoverInput,
    BetaBrowserKeyInput,
    BetaBrowserLeftClickDragInput,
    BetaBrowserLeftClickInput,
    BetaBrowserLeftMouseDownInput,
    BetaBrowserLeftMouseUpInput,
    BetaBrowserListTabsInput,
    BetaBrowserMiddleClickInput,
    BetaBrowserMouseMoveInput,
    BetaBrowserNavigateInput,
    BetaBrowserNewTabInput,
    BetaBrowserReadPageInput,
    BetaBrowserRightClickInput,
    BetaBrowserScreenshotInput,
    BetaBrowserScrollInput,
    BetaBrowserScrollToInput,
    BetaBrowserStateTabEntryParam,
    BetaBrowserSwitchTabInput,
    BetaBrowserTripleClickInput,
    BetaBrowserTypeInput,
    BetaBrowserWaitInput,
    BetaBrowserZoomInput,
)
from PIL import Image

from computer_use.approval.gate import ApprovalGate, Confirmer
from computer_use.browser import page as browser_page
from computer_use.browser.approval import (
    MAX_URL_REASKS,
    PageBinding,
    PageGate,
    same_page,
    scaled,
)
from computer_use.browser.domains import AllowedDomains, typed_url
from computer_use.browser.fence import Refusal, RequestFence
from computer_use.browser.launch import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    BrowserFailed,
    BrowserLauncher,
    LocalChromium,
    first_line,
)

if TYPE_CHECKING:
    from anthropic.tools import BetaConfirmContext
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        CDPSession,
        Locator,
        Page,
        Playwright,
    )

MAX_IMAGE_EDGE_PX = 1568
MAX_IMAGE_PIXELS = 1_150_000
DEFAULT_VIEWPORT = (1280, 800)
# Lossless (the gate compares pixels), encoded for speed rather than size: the capture is on the
# path from the model's call to the request and from the approval to the action.
CAPTURE_PARAMS = {"format": "png", "optimizeForSpeed": True}
# A capture Chromium refuses is tried again this many times in all, waiting a little longer each.
CAPTURE_ATTEMPTS = 4
CAPTURE_RETRY_S = 0.1
# CSS pixels to screen pixels: 1, so screenshots, captures and the model's coordinates agree.
DEVICE_SCALE = 1
ACTION_TIMEOUT_S = 10.0
NAVIGATION_TIMEOUT_S = 30.0
MAX_WAIT_S = 30.0
MAX_TABS = 50
# After an input, the page's own script gets this long to react (navigate, open a popup) so the
# consequence is reported with the call that caused it rather than the next one.
SETTLE_S = 0.15
SCROLL_NOTCH_PX = 100


class ChromiumBrowser(BetaAbstractBrowserToolset20260801):
    """The SDK's browser toolset on one Chromium, fenced to the task's allowed domains.

    Use it as a context manager (or call `start()` and `close()`): it starts Chromium through
    `launcher`, one browser context (no service workers, no downloads) and one empty tab.
    """

    def __init__(
        self,
        *,
        launcher: BrowserLauncher,
        allowed_domains: AllowedDomains,
        confirm: BetaConfirmCallable | None,
        viewport: tuple[int, int] = DEFAULT_VIEWPORT,
        action_timeout_s: float = ACTION_TIMEOUT_S,
        navigation_timeout_s: float = NAVIGATION_TIMEOUT_S,
    ) -> None:
        """Args:
        launcher: where Chromium runs (`LocalChromium`, `cdp_bridge.SandboxChromium`).
        allowed_domains: the task's fence; the default of a task (no rules) allows nothing.
        confirm: the approval gate, called by the SDK before every member call.
        viewport: width and height in CSS pixels; screenshots have exactly this size.

        Raises:
            ValueError: the viewport would give screenshots larger than the model takes.
        """
        width, height = viewport
        if not (
            0 < width <= MAX_IMAGE_EDGE_PX
            and 0 < height <= MAX_IMAGE_EDGE_PX
            and width * height <= MAX_IMAGE_PIXELS
        ):
            raise ValueError(
                f"a {width}x{height} viewport gives screenshots the model cannot take (at most "
                f"{MAX_IMAGE_EDGE_PX} px a side and {MAX_IMAGE_PIXELS} pixels); use 1280x800"
            )
        self._confirm = confirm
        super().__init__(
            confirm=self._confirm_on_page if confirm is not None else None,
            url_policy=self._check_typed_url,
        )
        self.launcher = launcher
        self.domains = allowed_domains
        self.viewport = (width, height)
        self.action_timeout_s = action_timeout_s
        self.navigation_timeout_s = navigation_timeout_s
        self.fence = RequestFence(allowed_domains)
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None
        self._tabs: dict[str, Page] = {}
        self._target_ids: dict[str, str] = {}
        self._active: str | None = None
        self._ids = itertools.count(1)
        self._opening_own_tab = False
        self._popups_opened: list[str] = []
        self._dialogs: list[BetaDialogDismissed] = []
        self._reported = 0  # refusals already told to the model
        self._sessions: dict[str, CDPSession] = {}
        self._judged: str | None = None  # the tab of the call being confirmed
        self._page_gate: PageGate | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> ChromiumBrowser:
        """Start Chromium, the fence and one empty tab. Raises BrowserFailed."""
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright

        if self._context is not None:
            return self
        self._playwright = sync_playwright().start()
        try:
            self._browser = self.launcher.connect(self._playwright)
            self.fence.attach(self._browser)
            width, height = self.viewport
            self._context = self._browser.new_context(
                viewport={"width": width, "height": height},
                device_scale_factor=DEVICE_SCALE,
                service_workers="block",
                accept_downloads=False,
            )
            self._context.set_default_timeout(self.action_timeout_s * 1000)
            self._context.set_default_navigation_timeout(self.navigation_timeout_s * 1000)
            self._context.on("page", self._on_page)
            self._opening_own_tab = True
            try:
                page = self._context.new_page()
            finally:
                self._opening_own_tab = False
            self._active = self._id_of(page)
        except (PlaywrightError, BrowserFailed) as exc:
            self._teardown()
            if isinstance(exc, BrowserFailed):
                raise
            raise BrowserFailed(f"the browser failed to start: {first_line(exc)}") from None
        except BaseException:
            self._teardown()
            raise
        return self

    def __enter__(self) -> ChromiumBrowser:
        super().__enter__()
        return self.start()

    def close(self) -> None:
        super().close()
        self._teardown()

    def _teardown(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            with contextlib.suppress(Exception):
                context.close()
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.close()
        self.launcher.close()
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            with contextlib.suppress(Exception):
                playwright.stop()
        self._tabs.clear()
        self._sessions.clear()
        self._active = None

    # --- tabs -----------------------------------------------------------------------------

    def _on_page(self, page: Page) -> None:
        tab_id = f"tab_{next(self._ids)}"
        self._tabs[tab_id] = page
        page.on("dialog", self._on_dialog)
        page.on("close", lambda closed: self._forget(closed))
        if not self._opening_own_tab:
            self._popups_opened.append(tab_id)

    def _on_dialog(self, dialog: Any) -> None:
        self._dialogs.append(BetaDialogDismissed(kind=dialog.type, message=dialog.message[:500]))
        with contextlib.suppress(Exception):
            dialog.dismiss()

    def _forget(self, page: Page) -> None:
        for tab_id, known in list(self._tabs.items()):
            if known is page:
                del self._tabs[tab_id]
                self._target_ids.pop(tab_id, None)
                self._sessions.pop(tab_id, None)
                if self._active == tab_id:
                    self._active = next(reversed(self._tabs), None)

    def _id_of(self, page: Page) -> str:
        for tab_id, known in self._tabs.items():
            if known is page:
                return tab_id
        raise BrowserFailed("a tab the browser opened was not registered")

    def _page(self, tab_id: str | None) -> Page:
        if self._context is None:
            raise ToolError("the browser is not running; the task must start it first")
        if tab_id is None:
            if self._active is None:
                raise ToolError("no tab is open; call new_tab first")
            return self._tabs[self._active]
        page = self._tabs.get(tab_id)
        if page is None:
            raise ToolError(f"there is no tab {tab_id!r}; list_tabs shows the open tabs")
        return page

    def _target_info(self) -> dict[str, tuple[str, str]]:
        """Each tab's (url, title) from the browser process, not the page: a page stuck in a
        script loop cannot hold up the report."""
        infos: dict[str, tuple[str, str]] = {}
        if self._browser is None or self._context is None:
            return infos
        for tab_id, page in self._tabs.items():
            if tab_id not in self._target_ids:
                with contextlib.suppress(Exception):
                    session = self._context.new_cdp_session(page)
                    info = session.send("Target.getTargetInfo")["targetInfo"]
                    self._target_ids[tab_id] = info["targetId"]
                    session.detach()
        with contextlib.suppress(Exception):
            session = self._browser.new_browser_cdp_session()
            targets = session.send("Target.getTargets")["targetInfos"]
            session.detach()
            by_target = {t["targetId"]: (t.get("url", ""), t.get("title", "")) for t in targets}
            for tab_id, target_id in self._target_ids.items():
                if target_id in by_target:
                    infos[tab_id] = by_target[target_id]
        return infos

    def _entries(self) -> list[BetaBrowserStateTabEntryParam]:
        infos = self._target_info()
        entries: list[BetaBrowserStateTabEntryParam] = []
        for tab_id, page in self._tabs.items():
            url, title = infos.get(tab_id, (page.url, ""))
            if title == url:  # Chromium titles an untitled page with its URL
                title = ""
            if url == "about:blank":
                url = ""
            entries.append(
                {"tab_id": tab_id, "title": title, "url": url, "active": tab_id == self._active}
            )
        return entries

    def _entry(self, tab_id: str) -> BetaBrowserStateTabEntryParam:
        return next(e for e in self._entries() if e["tab_id"] == tab_id)

    def _browser_state(self, context: BetaToolsetCallContext) -> BetaBrowserState:
        changes: list[Any] = []
        self._target_info()  # learns the target ids of popups opened since the last call
        refused_frames = {r.frame_id for r in self.fence.since(0) if r.document}
        for tab_id in self._popups_opened:
            page = self._tabs.get(tab_id)
            if page is None:
                continue
            if len(self._tabs) > MAX_TABS:
                # A page opening popups in a loop: the API takes at most 100 tabs.
                with contextlib.suppress(Exception):
                    page.close()
                continue
            # A popup whose first page was refused would stay a blank tab: closed instead.
            target = self._target_ids.get(tab_id)
            if page.url == "about:blank" and target in refused_frames:
                with contextlib.suppress(Exception):
                    page.close()
                continue
            changes.append({"type": "tab_opened", "tab_id": tab_id})
        self._popups_opened.clear()
        if any(r.document for r in self._unreported()):
            changes.append(BetaNavigationRefused())
        self._reported = self.fence.mark()
        changes.extend(self._dialogs)
        self._dialogs.clear()
        return BetaBrowserState(tabs=self._entries(), state_changes=changes)

    def _unreported(self) -> list[Refusal]:
        return self.fence.since(self._reported)

    # --- approvals (see browser.approval) ------------------------------------------------

    def bind_confirmer(self, confirm: Confirmer) -> None:
        """Bind `confirm` (this toolset's hook) to the page: it captures the tab before asking
        and again before acting, marks where the action lands, and names the page's URL."""
        confirm.capture = self.capture
        confirm.to_screen = self.to_screen
        confirm.gate = self.page_gate(confirm.gate)

    def page_gate(self, gate: ApprovalGate) -> PageGate:
        """`gate`, writing the judged tab's URL on each request."""
        self._page_gate = PageGate(gate, lambda: self.tab_url(self._judged))
        return self._page_gate

    def tab_url(self, tab_id: str | None = None) -> str | None:
        """The tab's URL as the browser process has it now (the active tab by default)."""
        tab = tab_id if tab_id in self._tabs else self._active
        if tab is None:
            return None
        url = self._target_info().get(tab, (self._tabs[tab].url, ""))[0]
        return url or None

    def capture(self) -> Image.Image:
        """The tab being confirmed (else the active one) as Chromium draws it, in RGB.

        Raises:
            ToolError: the browser is not running or has no tab.
            playwright.sync_api.Error: DevTools did not answer (the gate then fails closed).
        """
        from playwright.sync_api import Error as PlaywrightError

        tab = self._judged if self._judged in self._tabs else self._active
        page = self._page(tab)
        assert tab is not None and self._context is not None
        for attempt in range(CAPTURE_ATTEMPTS):
            try:
                shot = self._session(tab, page).send("Page.captureScreenshot", CAPTURE_PARAMS)
                break
            except PlaywrightError:
                # The session went with a renderer, or Chromium had no frame to give yet
                # ("Unable to capture screenshot" on a busy machine): a fresh session, shortly.
                self._sessions.pop(tab, None)
                if attempt == CAPTURE_ATTEMPTS - 1:
                    raise
                page.wait_for_timeout(CAPTURE_RETRY_S * 1000 * (attempt + 1))
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
        return image.convert("RGB")

    def _session(self, tab: str, page: Page) -> CDPSession:
        session = self._sessions.get(tab)
        if session is None:
            assert self._context is not None
            session = self._sessions[tab] = self._context.new_cdp_session(page)
        return session

    def to_screen(self, member: str, input: Any) -> dict[str, Any]:
        """The input with its coordinate targets in capture pixels, and an element target's
        centre as `coordinate`, so the card marks where a click by reference lands."""
        out = scaled(input, DEVICE_SCALE)
        target = out.get("target")
        if isinstance(target, dict) and target.get("type") == "ref" and "coordinate" not in out:
            point = self._ref_centre(str(target.get("ref", "")))
            if point is not None:
                out["coordinate"] = [round(v * DEVICE_SCALE) for v in point]
        return out

    def _ref_centre(self, ref: str) -> tuple[float, float] | None:
        """Where Playwright clicks an element: the centre of its box (None when not found; the
        call then fails on its own, with the reason, when it runs)."""
        from playwright.sync_api import Error as PlaywrightError

        tab = self._judged if self._judged in self._tabs else self._active
        try:
            box = self._locator(self._page(tab), ref).bounding_box(timeout=1000)
        except (PlaywrightError, ToolError):
            return None
        if box is None:
            return None
        return (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def _confirm_on_page(self, context: BetaConfirmContext) -> bool:
        """The SDK's hook: `confirm` with the tab's live URL, again if the page moved since."""
        assert self._confirm is not None
        tab = context.tab_id if context.tab_id in self._tabs else self._active
        self._judged = tab
        gate = self._page_gate
        moved: tuple[int | None, str] | None = None
        try:
            for _attempt in range(MAX_URL_REASKS + 1):
                url = self.tab_url(tab) or context.tab_url
                binding = PageBinding(judged_url=url, moved=moved)
                if gate is not None:
                    gate.binding = binding
                shown = context.model_copy(update={"tab_id": tab, "tab_url": url})
                if self._confirm(shown) is not True:
                    return False
                now = self.tab_url(tab) or context.tab_url
                seen = [url, *(approved for _, approved in binding.approved)]
                if all(same_page(u, now) for u in seen):
                    return True
                request_id, was = binding.approved[-1] if binding.approved else (None, url)
                moved = (request_id, f"the page moved from {was} to {now} after approval")
        finally:
            self._judged = None
            if gate is not None:
                gate.binding = None
        last = moved[1] if moved else "its address changed"
        raise ToolError(
            f"The page kept moving to another address after each approval ({last}); the action "
            "was not performed. Take a new screenshot."
        )

    # --- the domain fence, as the model hears it ------------------------------------------

    def _check_typed_url(self, context: BetaURLContext, url: str) -> None:
        reason = self.domains.refuse_typed_url(url)
        if reason is not None:
            raise ToolError(reason)

    def _settle(self, page: Page) -> str | None:
        """Let the page react to an input, then say which navigations the fence refused."""
        with contextlib.suppress(Exception):
            page.wait_for_timeout(SETTLE_S * 1000)
            page.wait_for_load_state("domcontentloaded", timeout=self.action_timeout_s * 1000)
        # Popups appear through events; ask the browser for its targets so they are pumped.
        self._target_info()
        refused = [r for r in self._unreported() if r.document]
        self._reported = self.fence.mark()
        if not refused:
            return None
        more = f" ({len(refused) - 1} more like it)" if len(refused) > 1 else ""
        return (
            f"The page started a navigation the browser refused{more}: {refused[0].reason}. "
            "The tab stayed where it was."
        )

    # --- navigation -----------------------------------------------------------------------

    def navigate(
        self, context: BetaToolsetCallContext, input: BetaBrowserNavigateInput
    ) -> BetaBrowserNavigateResult:
        from playwright.sync_api import Error as PlaywrightError

        page = self._page(input.tab_id)
        mark = self.fence.mark()
        response = None
        try:
            if input.url == "back":
                response = page.go_back(wait_until="load")
            elif input.url == "forward":
                response = page.go_forward(wait_until="load")
            elif input.url == "reload":
                response = page.reload(wait_until="load")
            else:
                reason = self.domains.refuse_typed_url(input.url)
                if reason is not None:  # the SDK asked url_policy already; kept as a second lock
                    raise ToolError(reason)
                url = typed_url(input.url)
                response = page.goto(url, wait_until="load")
        except PlaywrightError as exc:
            refused = [r for r in self.fence.since(mark) if r.document]
            self._reported = self.fence.mark()
            if refused:
                raise ToolError(
                    f"refused: {refused[-1].reason}. The tab stayed at {page.url}"
                ) from None
            raise ToolError(f"could not open {input.url}: {first_line(exc)}") from None
        refused = [r for r in self.fence.since(mark) if r.document]
        if refused and response is None:
            self._reported = self.fence.mark()
            raise ToolError(f"refused: {refused[-1].reason}. The tab stayed at {page.url}")
        tab_id = self._id_of(page)
        title = self._target_info().get(tab_id, (page.url, ""))[1]
        return BetaBrowserNavigateResult(
            url=page.url, status=response.status if response else None, title=title or None
        )

    # --- seeing ---------------------------------------------------------------------------

    def screenshot(
        self, context: BetaToolsetCallContext, input: BetaBrowserScreenshotInput
    ) -> BetaScreenshotResult:
        page = self._page(input.tab_id)
        png = page.screenshot(type="png", animations="disabled", caret="initial")
        return BetaScreenshotResult(data=base64.b64encode(png).decode("ascii"))

    def zoom(
        self, context: BetaToolsetCallContext, input: BetaBrowserZoomInput
    ) -> BetaScreenshotResult:
        """The region cut from a viewport screenshot and enlarged to fill the model's frame."""
        page = self._page(input.tab_id)
        if len(input.region) != 4:
            raise ToolError("region must be [x0, y0, x1, y1] in viewport pixels")
        x0, y0, x1, y1 = input.region
        width, height = self.viewport
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ToolError(
                f"region {input.region} is not inside the {width}x{height} viewport with x0 < x1 "
                "and y0 < y1"
            )
        png = page.screenshot(
            type="png", clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
        )
        image: Image.Image = Image.open(io.BytesIO(png))
        scale = min(width / image.width, height / image.height)
        if scale > 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return BetaScreenshotResult(data=base64.b64encode(out.getvalue()).decode("ascii"))

    def _snapshot(self, page: Page) -> str:
        return page.aria_snapshot(mode="ai", boxes=True, timeout=self.action_timeout_s * 1000)

    def read_page(self, context: BetaToolsetCallContext, input: BetaBrowserReadPageInput) -> str:
        page = self._page(input.tab_id)
        root = None
        if input.ref is not None:
            root = browser_page.playwright_ref(input.ref)
            if root is None:
                raise ToolError(f"{input.ref!r} is not an element reference (they look like ref_7)")
        snapshot = self._snapshot(page)
        try:
            return browser_page.outline(
                snapshot,
                viewport=self.viewport,
                depth=input.depth,
                interactive_only=input.filter == "interactive",
                include_offscreen=input.filter == "all" or input.ref is not None,
                root_ref=root,
            )
        except LookupError:
            raise ToolError(
                f"{input.ref} is not on the page any more; call read_page without ref"
            ) from None

    def find(self, context: BetaToolsetCallContext, input: BetaBrowserFindInput) -> str:
        """Elements whose role, name or text share words with the description (a heuristic:
        words are matched, meaning is not understood), best first, at most 20."""
        page = self._page(input.tab_id)
        matches = browser_page.find(self._snapshot(page), input.query)
        if not matches:
            return f"Nothing on the page matched {input.query!r}; read_page shows everything."
        return "\n".join(matches)

    def get_page_text(
        self, context: BetaToolsetCallContext, input: BetaBrowserGetPageTextInput
    ) -> str:
        page = self._page(input.tab_id)
        # The article or main region when the page marks one, else the whole body.
        text = page.evaluate(
            """() => {
                const main = document.querySelector('article, main, [role=main]');
                return (main || document.body || document.documentElement)?.innerText ?? '';
            }"""
        )
        text = str(text).strip()
        if not text:
            return "(the page has no text)"
        return browser_page.cap(text, "read_page with a ref reads one part")

    # --- pointer --------------------------------------------------------------------------

    def _point(self, x: int, y: int) -> tuple[int, int]:
        width, height = self.viewport
        if not (0 <= x < width and 0 <= y < height):
            raise ToolError(
                f"({x}, {y}) is outside the {width}x{height} viewport; use coordinates from "
                "the latest screenshot"
            )
        return x, y

    def _locator(self, page: Page, ref: str) -> Locator:
        inner = browser_page.playwright_ref(ref)
        if inner is None:
            raise ToolError(f"{ref!r} is not an element reference (they look like ref_7)")
        locator = page.locator(f"aria-ref={inner}")
        if locator.count() == 0:
            raise ToolError(
                f"{ref} is not on the page any more (it changed or navigated); call read_page "
                "or find again for fresh references"
            )
        return locator.first

    def _click(
        self,
        tab_id: str | None,
        target: Any,
        modifiers: str | None,
        *,
        button: Literal["left", "middle", "right"] = "left",
        count: int = 1,
    ) -> str | None:
        from playwright.sync_api import Error as PlaywrightError

        page = self._page(tab_id)
        try:
            keys = browser_page.modifiers(modifiers)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        try:
            if target.type == "ref":
                self._locator(page, target.ref).click(
                    button=button,
                    click_count=count,
                    modifiers=keys,
                )
            else:
                x, y = self._point(target.x, target.y)
                for key in keys:
                    page.keyboard.down(key)
                try:
                    page.mouse.click(x, y, button=button, click_count=count)
                finally:
                    for key in reversed(keys):
                        page.keyboard.up(key)
        except PlaywrightError as exc:
            raise ToolError(f"the click did not happen: {first_line(exc)}") from None
        return self._settle(page)

    def left_click(
        self, context: BetaToolsetCallContext, input: BetaBrowserLeftClickInput
    ) -> str | None:
        return self._click(input.tab_id, input.target, input.modifiers)

    def right_click(
        self, context: BetaToolsetCallContext, input: BetaBrowserRightClickInput
    ) -> str | None:
        return self._click(input.tab_id, input.target, input.modifiers, button="right")

    def middle_click(
        self, context: BetaToolsetCallContext, input: BetaBrowserMiddleClickInput
    ) -> str | None:
        return self._click(input.tab_id, input.target, input.modifiers, button="middle")

    def double_click(
        self, context: BetaToolsetCallContext, input: BetaBrowserDoubleClickInput
    ) -> str | None:
        return self._click(input.tab_id, input.target, input.modifiers, count=2)

    def triple_click(
        self, context: BetaToolsetCallContext, input: BetaBrowserTripleClickInput
    ) -> str | None:
        return self._click(input.tab_id, input.target, input.modifiers, count=3)

    def hover(self, context: BetaToolsetCallContext, input: BetaBrowserHoverInput) -> str | None:
        page = self._page(input.tab_id)
        if input.target.type == "ref":
            self._locator(page, input.target.ref).hover()
        else:
            page.mouse.move(*self._point(input.target.x, input.target.y))
        return self._settle(page)

    def mouse_move(
        self, context: BetaToolsetCallContext, input: BetaBrowserMouseMoveInput
    ) -> str | None:
        page = self._page(input.tab_id)
        page.mouse.move(*self._point(input.target.x, input.target.y))
        return self._settle(page)

    def left_mouse_down(
        self, context: BetaToolsetCallContext, input: BetaBrowserLeftMouseDownInput
    ) -> str | None:
        page = self._page(input.tab_id)
        page.mouse.move(*self._point(input.target.x, input.target.y))
        page.mouse.down()
        return self._settle(page)

    def left_mouse_up(
        self, context: BetaToolsetCallContext, input: BetaBrowserLeftMouseUpInput
    ) -> str | None:
        page = self._page(input.tab_id)
        page.mouse.move(*self._point(input.target.x, input.target.y))
        page.mouse.up()
        return self._settle(page)

    def left_click_drag(
        self, context: BetaToolsetCallContext, input: BetaBrowserLeftClickDragInput
    ) -> str | None:
        page = self._page(input.tab_id)
        start = self._point(input.from_.x, input.from_.y)
        end = self._point(input.target.x, input.target.y)
        page.mouse.move(*start)
        page.mouse.down()
        try:
            page.mouse.move(*end, steps=10)
        finally:
            page.mouse.up()
        return self._settle(page)

    def scroll(self, context: BetaToolsetCallContext, input: BetaBrowserScrollInput) -> str | None:
        page = self._page(input.tab_id)
        notches = min(10, max(1, input.scroll_amount or 3))
        step = notches * SCROLL_NOTCH_PX
        dx, dy = {
            "up": (0, -step),
            "down": (0, step),
            "left": (-step, 0),
            "right": (step, 0),
        }[input.scroll_direction]
        page.mouse.move(*self._point(input.target.x, input.target.y))
        page.mouse.wheel(dx, dy)
        return self._settle(page)

    def scroll_to(
        self, context: BetaToolsetCallContext, input: BetaBrowserScrollToInput
    ) -> str | None:
        page = self._page(input.tab_id)
        self._locator(page, input.target.ref).scroll_into_view_if_needed()
        return None

    # --- keyboard and forms ---------------------------------------------------------------

    def type(self, context: BetaToolsetCallContext, input: BetaBrowserTypeInput) -> str | None:
        page = self._page(input.tab_id)
        page.keyboard.type(input.text)
        return self._settle(page)

    def key(self, context: BetaToolsetCallContext, input: BetaBrowserKeyInput) -> str | None:
        from playwright.sync_api import Error as PlaywrightError

        page = self._page(input.tab_id)
        repeat = min(100, max(1, input.repeat or 1))
        try:
            for _ in range(repeat):
                for press in input.text.split():
                    page.keyboard.press(browser_page.chord(press))
        except PlaywrightError as exc:
            raise ToolError(f"could not press {input.text!r}: {first_line(exc)}") from None
        return self._settle(page)

    def hold_key(
        self, context: BetaToolsetCallContext, input: BetaBrowserHoldKeyInput
    ) -> str | None:
        from playwright.sync_api import Error as PlaywrightError

        page = self._page(input.tab_id)
        keys = [browser_page.key_name(k) for k in input.text.split("+") if k]
        pressed: list[str] = []
        try:
            for key in keys:
                page.keyboard.down(key)
                pressed.append(key)
            page.wait_for_timeout(min(MAX_WAIT_S, max(0.0, input.duration)) * 1000)
        except PlaywrightError as exc:
            raise ToolError(f"could not hold {input.text!r}: {first_line(exc)}") from None
        finally:
            for key in reversed(pressed):
                with contextlib.suppress(PlaywrightError):
                    page.keyboard.up(key)
        return self._settle(page)

    def form_input(
        self, context: BetaToolsetCallContext, input: BetaBrowserFormInputInput
    ) -> str | None:
        """A checkbox or radio takes a boolean, a select an option's value or label, any other
        field the text of the value."""
        from playwright.sync_api import Error as PlaywrightError

        page = self._page(input.tab_id)
        element = self._locator(page, input.target.ref)
        kind = element.evaluate(
            "e => e.tagName.toLowerCase() + ':' + (e.getAttribute('type') || '').toLowerCase()"
        )
        value = input.value
        try:
            if kind in ("input:checkbox", "input:radio"):
                if not isinstance(value, bool):
                    raise ToolError(f"{input.target.ref} is a {kind[6:]}; send true or false")
                element.set_checked(value)
            elif kind.startswith("select:"):
                text = str(value)
                try:
                    element.select_option(value=text, timeout=1000)
                except PlaywrightError:
                    element.select_option(label=text)
            else:
                element.fill(_field_text(value))
        except PlaywrightError as exc:
            raise ToolError(
                f"could not set {input.target.ref} ({kind.rstrip(':')}): {first_line(exc)}"
            ) from None
        return self._settle(page)

    def wait(self, context: BetaToolsetCallContext, input: BetaBrowserWaitInput) -> str | None:
        page = self._page(input.tab_id)
        # Pumps Playwright's events meanwhile, so the fence keeps answering the page.
        page.wait_for_timeout(min(MAX_WAIT_S, max(0.0, input.duration)) * 1000)
        return self._settle(page)

    # --- tabs as members ------------------------------------------------------------------

    def new_tab(
        self, context: BetaToolsetCallContext, input: BetaBrowserNewTabInput
    ) -> BetaBrowserStateTabEntryParam:
        if self._context is None:
            raise ToolError("the browser is not running; the task must start it first")
        self._opening_own_tab = True
        try:
            page = self._context.new_page()
        finally:
            self._opening_own_tab = False
        self._active = self._id_of(page)
        return self._entry(self._active)

    def list_tabs(
        self, context: BetaToolsetCallContext, input: BetaBrowserListTabsInput
    ) -> list[BetaBrowserStateTabEntryParam]:
        return self._entries()

    def switch_tab(
        self, context: BetaToolsetCallContext, input: BetaBrowserSwitchTabInput
    ) -> BetaBrowserStateTabEntryParam:
        page = self._page(input.tab_id)
        page.bring_to_front()
        self._active = input.tab_id
        return self._entry(input.tab_id)

    def close_tab(self, context: BetaToolsetCallContext, input: BetaBrowserCloseTabInput) -> None:
        page = self._page(input.tab_id)
        page.close()
        self._forget(page)
        if self._active is not None:
            self._tabs[self._active].bring_to_front()


def _field_text(value: str | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


__all__ = [
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "BrowserFailed",
    "BrowserLauncher",
    "ChromiumBrowser",
    "LocalChromium",
]
