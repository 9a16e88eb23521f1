"""The browser toolset in real Chromium, through the SDK's own call pipeline, on a local site.

The site answers for allowed.test and other.test (Chromium maps both to 127.0.0.1); the task
allows only allowed.test. The server's request log is the witness: a refused URL must never
reach it.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from anthropic.tools import BetaConfirmContext, BetaToolsetCallContext, ToolError
from PIL import Image

from computer_use.browser.domains import AllowedDomains
from computer_use.browser.toolset import CHROMIUM, ChromiumBrowser, LocalChromium
from tests.computer_use.test_browser_site import RESOLVER_RULES, Site, running_site

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it)"
    ),
]


@pytest.fixture
def site() -> Iterator[Site]:
    yield from running_site()


@dataclass
class Result:
    blocks: list[dict[str, Any]]
    error: bool

    @property
    def text(self) -> str:
        return "\n".join(b["text"] for b in self.blocks if b.get("type") == "text")

    @property
    def tabs(self) -> list[dict[str, Any]]:
        states = [b for b in self.blocks if b.get("type") == "browser_state"]
        return list(states[-1]["tabs"]) if states else []

    @property
    def changes(self) -> list[dict[str, Any]]:
        states = [b for b in self.blocks if b.get("type") == "browser_state"]
        return list(states[-1].get("state_changes", [])) if states else []


class Driver:
    """Calls members the way the tool runner does (`toolset.call`), confirm and policy included."""

    def __init__(self, toolset: ChromiumBrowser, confirmed: list[BetaConfirmContext]) -> None:
        self.toolset = toolset
        self.confirmed = confirmed

    def __call__(self, member: str, **input: Any) -> Result:
        try:
            blocks = self.toolset.call(BetaToolsetCallContext(), member, input)
        except ToolError as exc:
            content = exc.content if isinstance(exc.content, list) else [exc.content]
            return Result(
                [b if isinstance(b, dict) else {"type": "text", "text": str(b)} for b in content],
                True,
            )
        return Result([dict(b) for b in blocks], False)

    def text_eventually(self, needle: str, timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self("get_page_text").text
            if needle in text:
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"the page never showed {needle!r}; last text: {text!r}")
            self("wait", duration=0.2)


@pytest.fixture
def browser(site: Site) -> Iterator[Driver]:
    confirmed: list[BetaConfirmContext] = []

    def confirm(context: BetaConfirmContext) -> bool:
        confirmed.append(context)
        return True

    toolset = ChromiumBrowser(
        launcher=LocalChromium(extra_args=[RESOLVER_RULES]),
        allowed_domains=AllowedDomains.parse(["allowed.test"]),
        confirm=confirm,
    )
    with toolset:
        yield Driver(toolset, confirmed)


def test_the_sdk_is_told_which_members_are_off(browser: Driver) -> None:
    configs = browser.toolset.to_dict()["configs"]
    disabled = {name for name, config in configs.items() if config.get("enabled") is False}
    assert disabled == {"file_upload", "read_console", "read_network", "javascript_exec"}


def test_an_allowed_page_is_opened_and_read(browser: Driver, site: Site) -> None:
    result = browser("navigate", url=site.url("allowed.test"))
    assert not result.error, result.text
    assert result.text.startswith(f"Navigated to {site.url('allowed.test')} — Home (HTTP 200)")
    assert result.tabs == [
        {"tab_id": "tab_1", "title": "Home", "url": site.url("allowed.test"), "active": True}
    ]
    assert "Welcome" in browser("get_page_text").text
    outline = browser("read_page").text
    assert 'heading "Welcome"' in outline and 'button "Press me" [ref_' in outline
    assert [c.member for c in browser.confirmed] == ["navigate", "get_page_text", "read_page"]
    assert browser.confirmed[0].input.url == site.url("allowed.test")  # type: ignore[union-attr]


def test_a_screenshot_is_the_viewport_and_a_click_by_coordinate_lands(
    browser: Driver, site: Site
) -> None:
    browser("navigate", url=site.url("allowed.test"))
    shot = next(b for b in browser("screenshot").blocks if b["type"] == "image")
    image = Image.open(io.BytesIO(base64.b64decode(shot["source"]["data"])))
    assert image.size == browser.toolset.viewport == (1280, 800)
    # The button is at left 100, top 200, 160x40 CSS pixels: screenshot pixels are the same.
    assert image.getpixel((180, 220)) != image.getpixel((600, 600))
    result = browser("left_click", target={"type": "coordinate", "x": 180, "y": 220})
    assert not result.error and result.text.startswith("Clicked.")
    assert "Clicked 1" in browser("get_page_text").text
    # A miss is a miss: outside the button nothing changes.
    browser("left_click", target={"type": "coordinate", "x": 600, "y": 600})
    assert "Clicked 1" in browser("get_page_text").text


def test_a_click_by_element_reference_from_find(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test"))
    found = browser("find", query="press button").text
    ref = found.split("[", 2)[1].split("]")[0]
    assert found.startswith('- button "Press me"') and ref.startswith("ref_")
    assert not browser("left_click", target={"type": "ref", "ref": ref}).error
    assert not browser("double_click", target={"type": "ref", "ref": ref}).error
    assert "Clicked 3" in browser("get_page_text").text
    stale = browser("left_click", target={"type": "ref", "ref": "ref_999"})
    assert stale.error and "read_page or find again" in stale.text


def test_typing_and_form_input(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test", "/form"))
    outline = browser("read_page", filter="interactive").text
    refs = {line.split('"')[1]: line.rsplit("[", 1)[1].rstrip("]") for line in outline.splitlines()}
    assert set(refs) >= {"Name", "Fruit", "I agree"}
    browser("left_click", target={"type": "ref", "ref": refs["Name"]})
    assert not browser("type", text="Ada").error
    assert "name=Ada" in browser.text_eventually("name=Ada")
    assert not browser("key", text="BackSpace BackSpace").error
    browser.text_eventually("name=A fruit")
    assert not browser(
        "form_input", target={"type": "ref", "ref": refs["Name"]}, value="Grace"
    ).error
    assert not browser(
        "form_input", target={"type": "ref", "ref": refs["Fruit"]}, value="Banana"
    ).error
    assert not browser(
        "form_input", target={"type": "ref", "ref": refs["I agree"]}, value=True
    ).error
    browser.text_eventually("name=Grace fruit=b agree=true")
    wrong = browser("form_input", target={"type": "ref", "ref": refs["I agree"]}, value="yes")
    assert wrong.error and "send true or false" in wrong.text


def test_tabs_open_switch_and_close(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test"))
    opened = browser("new_tab")
    assert [(t["tab_id"], t["active"]) for t in opened.tabs] == [("tab_1", False), ("tab_2", True)]
    assert {"type": "tab_opened", "tab_id": "tab_2"} in opened.changes
    browser("navigate", url=site.url("allowed.test", "/landing"))
    listed = browser("list_tabs").tabs
    assert [(t["title"], t["active"]) for t in listed] == [("Home", False), ("Landing", True)]
    switched = browser("switch_tab", tab_id="tab_1")
    assert [t["tab_id"] for t in switched.tabs if t["active"]] == ["tab_1"]
    assert "Welcome" in browser("get_page_text").text
    assert "Landed" in browser("get_page_text", tab_id="tab_2").text
    closed = browser("close_tab", tab_id="tab_1")
    assert [(t["tab_id"], t["active"]) for t in closed.tabs] == [("tab_2", True)]
    assert browser("switch_tab", tab_id="tab_1").error


def test_an_off_list_url_is_refused_with_the_reason_and_never_fetched(
    browser: Driver, site: Site
) -> None:
    browser("navigate", url=site.url("allowed.test"))
    result = browser("navigate", url=site.url("other.test", "/secret"))
    assert result.error
    assert result.text == (
        f"{site.url('other.test', '/secret')} is not on this task's allowed domains "
        "(allowed: allowed.test); ask the person to add it"
    )
    assert "other.test" not in site.hosts_seen()
    # Refused by the policy, so never shown to the person for approval.
    assert [c.member for c in browser.confirmed] == ["navigate"]
    assert browser("list_tabs").tabs[0]["url"] == site.url("allowed.test")


def test_an_off_list_redirect_is_refused_and_the_tab_stays(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test"))
    result = browser("navigate", url=site.url("allowed.test", "/redirect"))
    assert result.error
    assert f"refused: {site.url('other.test', '/landing')} is not on this task's allowed" in (
        result.text
    )
    assert f"The tab stayed at {site.url('allowed.test')}" in result.text
    assert "/redirect" in site.paths_seen("allowed.test")
    assert "other.test" not in site.hosts_seen()
    # A redirect inside the list is followed.
    ok = browser("navigate", url=site.url("allowed.test", "/redirect-home"))
    assert ok.text.startswith(f"Navigated to {site.url('allowed.test', '/landing')}")


def test_off_list_subresources_and_fetches_never_leave(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test", "/subresources"))
    browser.text_eventually("fetch blocked")
    assert "/pixel.png" in site.paths_seen("allowed.test")  # allowed sub-resources do load
    assert "other.test" not in site.hosts_seen()


def test_websockets_reach_only_allowed_hosts(browser: Driver, site: Site) -> None:
    # Request interception does not see WebSocket handshakes; the fence's CSP does.
    browser("navigate", url=site.url("allowed.test", "/websockets"))
    browser.text_eventually("sockets done")
    browser("wait", duration=1)
    assert "/ws-allowed" in site.paths_seen("allowed.test")
    assert "other.test" not in site.hosts_seen()


def test_a_popup_to_an_off_list_url_is_refused(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test", "/popup"))
    result = browser("left_click", target={"type": "coordinate", "x": 100, "y": 30})
    assert not result.error
    deadline = time.monotonic() + 20
    tabs = result.tabs
    while len(tabs) != 1 and time.monotonic() < deadline:
        tabs = browser("wait", duration=0.2).tabs
    assert [t["url"] for t in tabs] == [site.url("allowed.test", "/popup")]
    assert "other.test" not in site.hosts_seen()
    # A popup inside the list opens as a tab of its own, and the model hears of it.
    good = browser("left_click", target={"type": "coordinate", "x": 100, "y": 100})
    opened = good.changes
    while not opened and time.monotonic() < deadline:
        opened = browser("wait", duration=0.2).changes
    assert opened and opened[0]["type"] == "tab_opened"
    assert "other.test" not in site.hosts_seen()


def test_a_dialog_is_dismissed_and_the_model_told(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test", "/dialog"))
    clicked = browser("left_click", target={"type": "coordinate", "x": 50, "y": 20})
    assert 'dialog "Delete everything?" was dismissed' in clicked.text
    assert "kept" in browser("get_page_text").text


def test_ip_literals_are_refused_typed_or_clicked(browser: Driver, site: Site) -> None:
    for url in (
        f"http://127.0.0.1:{site.port}/",
        f"http://2130706433:{site.port}/",
        "http://[::1]/",
    ):
        result = browser("navigate", url=url)
        assert result.error and "IP address" in result.text, url
    browser("navigate", url=site.url("allowed.test", "/ip-link"))
    clicked = browser("left_click", target={"type": "coordinate", "x": 50, "y": 20})
    assert "The page started a navigation the browser refused" in clicked.text
    assert "IP address" in clicked.text
    assert all(host == "allowed.test" for host in site.hosts_seen())
    assert browser("list_tabs").tabs[0]["url"] == site.url("allowed.test", "/ip-link")


def test_a_hostile_page_cannot_navigate_itself_off_the_list(browser: Driver, site: Site) -> None:
    # The page's script navigates 200 ms after load: the model hears of the refusal with
    # whichever call was running then (the SDK's line, or the toolset's with the reason).
    told = [browser("navigate", url=site.url("allowed.test", "/hostile")).text]
    deadline = time.monotonic() + 20
    while "refused" not in told[-1] and time.monotonic() < deadline:
        told.append(browser("wait", duration=0.3).text)
    assert "refused" in told[-1], told
    assert "other.test" not in site.hosts_seen()
    assert browser("list_tabs").tabs[0]["url"] == site.url("allowed.test", "/hostile")
    assert "Nothing to see" in browser("get_page_text").text


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "chrome://settings",
        "data:text/html,<script>alert(1)</script>",
        "ftp://allowed.test/",
        "http://allowed.test@other.test/",
        "http://other.test\\@allowed.test/",
    ],
)
def test_other_schemes_and_tricky_urls_are_refused(browser: Driver, url: str) -> None:
    result = browser("navigate", url=url)
    assert result.error, url
    assert browser.confirmed == []  # refused before the person is asked


def test_history_reload_scroll_and_keys(browser: Driver, site: Site) -> None:
    browser("navigate", url=site.url("allowed.test"))
    browser("navigate", url=site.url("allowed.test", "/landing"))
    assert browser("navigate", url="back").text.startswith(
        f"Navigated to {site.url('allowed.test')}"
    )
    assert browser("navigate", url="forward").text.startswith(
        f"Navigated to {site.url('allowed.test', '/landing')}"
    )
    assert not browser("navigate", url="reload").error
    assert not browser(
        "scroll", target={"type": "coordinate", "x": 10, "y": 10}, scroll_direction="down"
    ).error
    zoom = next(b for b in browser("zoom", region=[0, 0, 320, 200]).blocks if b["type"] == "image")
    assert Image.open(io.BytesIO(base64.b64decode(zoom["source"]["data"]))).size == (1280, 800)
    outside = browser("left_click", target={"type": "coordinate", "x": 5000, "y": 10})
    assert outside.error and "outside the 1280x800 viewport" in outside.text
    assert browser("key", text="ctrl+nosuchkey").error
