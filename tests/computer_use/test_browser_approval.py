"""Browser approvals are not blind: a request shows the page and where the action lands, names the
page's URL, binds to both, and `domain` rules judge the page a click lands on.

Real Chromium (Debian's), the real `anthropic` client and tool runner against the scripted fake
Messages API, the real `Confirmer` and policy; only the person is a script (`Person`).
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest
from PIL import Image, ImageChops

from computer_use.approval.annotate import MARK
from computer_use.approval.gate import (
    ApprovalOutcome,
    ApprovalRequest,
    Confirmer,
    OutcomeKind,
)
from computer_use.approval.gate import (
    ToolCall as GateCall,
)
from computer_use.approval.policy import Decision, Policy, default_policy
from computer_use.browser.approval import same_page
from computer_use.browser.domains import AllowedDomains
from computer_use.browser.toolset import CHROMIUM, ChromiumBrowser, LocalChromium
from computer_use.testing.fake_model import FakeModel, ModelRequest, Reply, ToolCall
from controller.agent.runner import FolderPolicy

RESOLVER_RULES = "--host-resolver-rules=MAP *.good.test 127.0.0.1, MAP *.bad.test 127.0.0.1"
RED = (220, 0, 0)
BUTTON = (180, 220)  # the centre of the red button
# The price sits right under the button: a person deciding to pay judges it.
PAGE = """<title>Shop</title><body style="margin:0;background:#fff">
<button id=pay style="position:absolute;left:100px;top:200px;width:160px;height:40px;
  background:rgb(220,0,0);border:0" onclick="fetch('/clicked?' + location.host)">Pay</button>
<p id=price style="position:absolute;left:100px;top:250px;margin:0;font:24px sans-serif">$10</p>
<a id=away href="{away}" style="position:absolute;left:400px;top:200px;width:160px;height:40px;
  display:block;background:#00c">elsewhere</a>
<script>
setInterval(async () => {{
  const state = await (await fetch('/state')).json();
  price.textContent = state.price;
  if (state.go && location.host !== state.go) location.replace('http://' + state.go + '/');
}}, 100);
</script>"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium"),
]


@dataclass
class Shop:
    """Two look-alike shops on one local server: shop.good.test and www.bad.test."""

    port: int = 0
    price: str = "$10"
    go: str = ""  # a host the page moves itself to
    clicks: list[str] = field(default_factory=list)

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}/"

    def host(self, name: str) -> str:
        return f"{name}:{self.port}"


@pytest.fixture
def shop() -> Iterator[Shop]:
    shop = Shop()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/clicked"):
                shop.clicks.append(self.path.split("?", 1)[1])
                body, kind = b"{}", "application/json"
            elif self.path == "/state":
                body = f'{{"price": "{shop.price}", "go": "{shop.go}"}}'.encode()
                kind = "application/json"
            else:
                body = PAGE.format(away=shop.url("www.bad.test")).encode()
                kind = "text/html"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    shop.port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield shop
    finally:
        server.shutdown()
        server.server_close()


class Person:
    """The approval gate a person answers: approves everything, after `while_looking` runs."""

    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []
        self.while_looking: Callable[[ApprovalRequest], None] = lambda req: None

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        self.requests.append(req)
        look, self.while_looking = self.while_looking, lambda req: None
        look(req)
        return ApprovalOutcome(OutcomeKind.APPROVED, request_id=len(self.requests))

    def of(self, member: str) -> list[ApprovalRequest]:
        return [r for r in self.requests if r.member == member]


def image(png: bytes | None) -> Image.Image:
    assert png is not None, "the request has no screenshot"
    return Image.open(io.BytesIO(png)).convert("RGB")


def near(colour: tuple[int, ...], wanted: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, wanted, strict=False))


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def click(x: int, y: int) -> ToolCall:
    return ToolCall("left_click", {"target": {"type": "coordinate", "x": x, "y": y}}, "browser")


def navigate(url: str) -> ToolCall:
    return ToolCall("navigate", {"url": url}, "browser")


def run(
    fake_model: FakeModel, policy: Policy, person: Person, body: Callable[[ChromiumBrowser], None]
) -> list[Any]:
    """Run the scripted model against a bound browser; `body` may look at the browser first."""
    confirm = Confirmer(task_id=1, tool="browser", policy=FolderPolicy(policy, ()), gate=person)
    browser = ChromiumBrowser(
        launcher=LocalChromium(extra_args=[RESOLVER_RULES]),
        allowed_domains=AllowedDomains.parse(["*.good.test", "*.bad.test"]),
        confirm=confirm,
    )
    # What controller.agent.screens does for a task's browser.
    browser.bind_confirmer(confirm)
    with browser:
        body(browser)
        client = anthropic.Anthropic(api_key="test-key", base_url=fake_model.url, max_retries=0)
        runner = client.beta.messages.tool_runner(
            model="claude-test",
            max_tokens=1024,
            messages=[{"role": "user", "content": "Pay for the order."}],
            tools=[browser],
            thread=False,
            max_iterations=6,
        )
        return list(runner)


def results(fake_model: FakeModel) -> list[dict[str, Any]]:
    """Every tool_result the model was sent, in order."""
    out = []
    for recorded in fake_model.requests:
        last = recorded.body["messages"][-1]
        if last["role"] == "user" and isinstance(last["content"], list):
            out += [b for b in last["content"] if b.get("type") == "tool_result"]
    return out


def text_of(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


ASK_ALL = Policy(default=Decision.ASK)


def test_a_browser_click_is_asked_on_the_page_with_a_marker_where_it_lands(
    shop: Shop, fake_model: FakeModel
) -> None:
    page = shop.url("shop.good.test")
    fake_model.add(
        Reply(tool_calls=[navigate(page)]),
        Reply(text="Paying.", tool_calls=[click(*BUTTON)]),
        Reply(text="Paid."),
    )
    person = Person()
    run(fake_model, ASK_ALL, person, lambda browser: None)

    [opening] = person.of("navigate")
    assert opening.description == f"Open {page} from a blank tab"

    [request] = person.of("left_click")
    shot = image(request.screenshot_png)
    # The screenshot the person judges is the page: the red button under the click.
    assert shot.size == (1280, 800)
    assert near(shot.getpixel((BUTTON[0] - 60, BUTTON[1] - 12)), RED)
    # The annotated copy marks where the click lands, and only there.
    marked = image(request.annotated_png)
    diff = ImageChops.difference(shot, marked).getbbox()
    assert diff is not None
    x0, y0, x1, y1 = diff
    assert x0 <= BUTTON[0] < x1 and y0 <= BUTTON[1] < y1
    ring = [marked.getpixel((BUTTON[0] + dx, BUTTON[1])) for dx in range(-40, 41)]
    assert any(near(p, MARK, 30) for p in ring), "no marker around the click point"
    # The request names the page the click happens on.
    assert request.screen_input["tab_url"] == page
    assert request.description == f"Click at {BUTTON} on {page}"
    assert shop.clicks == [shop.host("shop.good.test")]


def click_pay_by_reference(request: ModelRequest) -> Reply:
    """The model clicks the button the outline named, by its reference."""
    outline = text_of(dict(request.tool_results()[-1]))
    match = re.search(r'button "Pay" \[(ref_\w+)\]', outline)
    assert match, outline
    target = {"type": "ref", "ref": match[1]}
    return Reply(tool_calls=[ToolCall("left_click", {"target": target}, "browser")])


def test_a_click_by_element_reference_is_marked_where_the_element_is(
    shop: Shop, fake_model: FakeModel
) -> None:
    fake_model.add(
        Reply(tool_calls=[navigate(shop.url("shop.good.test"))]),
        Reply(tool_calls=[ToolCall("read_page", {"filter": "interactive"}, "browser")]),
        click_pay_by_reference,
        Reply(text="Paid."),
    )
    person = Person()
    run(fake_model, ASK_ALL, person, lambda browser: None)

    [request] = person.of("left_click")
    assert request.input["target"]["type"] == "ref"
    # The element's centre, where Playwright clicks it: the card marks it.
    assert list(request.screen_input["coordinate"]) == list(BUTTON)
    marked = image(request.annotated_png)
    ring = [marked.getpixel((BUTTON[0] + dx, BUTTON[1])) for dx in range(-40, 41)]
    assert any(near(p, MARK, 30) for p in ring), "no marker on the element"
    assert shop.clicks == [shop.host("shop.good.test")]


def test_a_page_that_changes_after_approval_is_asked_again_before_the_click(
    shop: Shop, fake_model: FakeModel
) -> None:
    fake_model.add(
        Reply(tool_calls=[navigate(shop.url("shop.good.test"))]),
        Reply(text="Paying $10.", tool_calls=[click(*BUTTON)]),
        Reply(text="Paid."),
    )
    person = Person()
    browser_of: list[ChromiumBrowser] = []

    def price_rises(req: ApprovalRequest) -> None:
        # While the person looks at "$10", the page raises the price under the button.
        if req.member != "left_click":
            person.while_looking = price_rises
            return
        shop.price = "$990"
        before = image(req.screenshot_png)
        wait_for(
            lambda: ImageChops.difference(before, browser_of[0].capture()).getbbox() is not None,
            "the page to show the new price",
        )

    person.while_looking = price_rises
    run(fake_model, ASK_ALL, person, browser_of.append)

    first, second = person.of("left_click")
    assert second.replaces == 1 + person.requests.index(first)
    assert second.replaced_because
    assert image(first.screenshot_png) != image(second.screenshot_png)
    # Clicked once, after the second approval, on what that one showed.
    assert shop.clicks == [shop.host("shop.good.test")]


def test_a_page_that_moves_to_another_address_after_approval_is_judged_again(
    shop: Shop, fake_model: FakeModel
) -> None:
    # The look-alike at www.bad.test draws the same pixels: only its address differs.
    policy = Policy.parse(
        {
            "default": "ask",
            "rules": [{"tool": "browser", "match": {"domain": "*.bad.test"}, "decision": "deny"}],
        }
    )
    fake_model.add(
        Reply(tool_calls=[navigate(shop.url("shop.good.test"))]),
        Reply(text="Paying.", tool_calls=[click(*BUTTON)]),
        Reply(text="Stopped."),
    )
    person = Person()
    browser_of: list[ChromiumBrowser] = []

    def page_moves(req: ApprovalRequest) -> None:
        if req.member != "left_click":
            person.while_looking = page_moves
            return
        shop.go = shop.host("www.bad.test")
        before = image(req.screenshot_png)
        wait_for(
            lambda: (
                "www.bad.test" in (browser_of[0].tab_url() or "")
                and ImageChops.difference(before, browser_of[0].capture()).getbbox() is None
            ),
            "the page to move away and draw the same pixels",
        )

    person.while_looking = page_moves
    run(fake_model, policy, person, browser_of.append)

    [approved] = person.of("left_click")
    assert approved.screen_input["tab_url"] == shop.url("shop.good.test")
    refusal = results(fake_model)[-1]
    assert refusal.get("is_error")
    assert "denied by the policy" in text_of(refusal) and "bad.test" in text_of(refusal)
    assert shop.clicks == []


def test_an_approval_is_for_one_address_a_look_alike_elsewhere_is_asked_again(
    shop: Shop, fake_model: FakeModel
) -> None:
    fake_model.add(
        Reply(tool_calls=[navigate(shop.url("shop.good.test"))]),
        Reply(text="Paying.", tool_calls=[click(*BUTTON)]),
        Reply(text="Paid."),
    )
    person = Person()
    browser_of: list[ChromiumBrowser] = []

    def page_moves(req: ApprovalRequest) -> None:
        if req.member != "left_click":
            person.while_looking = page_moves
            return
        # Same pixels, another address: only the URL tells them apart.
        shop.go = shop.host("www2.good.test")
        before = image(req.screenshot_png)
        wait_for(
            lambda: (
                "www2.good.test" in (browser_of[0].tab_url() or "")
                and ImageChops.difference(before, browser_of[0].capture()).getbbox() is None
            ),
            "the page to move and draw the same pixels",
        )

    person.while_looking = page_moves
    run(fake_model, ASK_ALL, person, browser_of.append)

    first, second = person.of("left_click")
    assert first.screen_input["tab_url"] == shop.url("shop.good.test")
    assert second.screen_input["tab_url"] == shop.url("www2.good.test")
    assert second.replaces == 1 + person.requests.index(first)
    assert second.replaced_because and "www2.good.test" in second.replaced_because
    assert shop.clicks == [shop.host("www2.good.test")]


def test_a_domain_deny_rule_refuses_a_click_on_a_page_of_that_domain(
    shop: Shop, fake_model: FakeModel
) -> None:
    policy = Policy.parse(
        {
            "default": "ask",
            "rules": [{"tool": "browser", "match": {"domain": "*.bad.test"}, "decision": "deny"}],
        }
    )
    fake_model.add(
        Reply(tool_calls=[navigate(shop.url("shop.good.test"))]),
        # A click on the good shop's page: asked, approved, done.
        Reply(tool_calls=[click(*BUTTON)]),
        # The link takes the tab to www.bad.test (the fence allows the host; the policy decides).
        Reply(tool_calls=[click(480, 220)]),
        Reply(tool_calls=[click(*BUTTON)]),
        Reply(text="Could not pay there."),
    )
    person = Person()
    run(fake_model, policy, person, lambda browser: None)

    assert shop.clicks == [shop.host("shop.good.test")]
    on_good, to_link, on_bad = results(fake_model)[1:]
    assert not on_good.get("is_error") and not to_link.get("is_error")
    assert on_bad.get("is_error")
    text = text_of(on_bad)
    assert "denied by the policy" in text and "*.bad.test" in text, text
    assert "cannot be judged" not in text, text
    # The person was never asked about the click on the denied domain.
    assert [r.screen_input["tab_url"] for r in person.of("left_click")] == [
        shop.url("shop.good.test"),
        shop.url("shop.good.test"),
    ]


def test_the_folder_policy_judges_a_browser_call_by_its_tab_url() -> None:
    policy = Policy.parse(
        {"rules": [{"tool": "browser", "match": {"domain": "*.bad.test"}, "decision": "deny"}]}
    )
    folder = FolderPolicy(policy, ())
    target = {"target": {"type": "coordinate", "x": 5, "y": 5}}
    bad = folder.decide(GateCall("browser", "left_click", target, "https://www.bad.test/pay"))
    good = folder.decide(GateCall("browser", "left_click", target, "https://shop.good.test/"))
    assert bad.decision is Decision.DENY and bad.rule_index == 0
    assert good.decision is Decision.ASK and good.rule_index is None
    # A navigate is judged by where it goes, not by the page it leaves.
    leave = folder.decide(
        GateCall("browser", "navigate", {"url": "https://shop.good.test/"}, "https://x.bad.test/")
    )
    assert leave.decision is Decision.ASK
    # The default policy is untouched: reading a page of any domain stays allowed.
    read = FolderPolicy(default_policy(), ()).decide(
        GateCall("browser", "screenshot", {}, "https://www.bad.test/")
    )
    assert read.decision is Decision.ALLOW


def test_only_a_new_fragment_keeps_the_approved_page() -> None:
    assert same_page("https://a.test/p#top", "https://a.test/p#t=30")
    assert not same_page("https://a.test/p", "https://a.test/q")
    assert not same_page("https://a.test/p", "https://a.test.evil.test/p")
    assert not same_page(None, "https://a.test/")
