"""The browser's allowed-domains rules and the page outline, without a browser (fast)."""

from __future__ import annotations

import pytest

from computer_use.browser import page as browser_page
from computer_use.browser.domains import AllowedDomains, DomainRuleError


@pytest.fixture
def rules() -> AllowedDomains:
    return AllowedDomains.parse(["a.test", "*.example.com", "Bücher.Example"])


@pytest.mark.parametrize(
    "url",
    [
        "https://a.test/",
        "http://A.TEST./path?q=1",
        "wss://a.test/socket",
        "https://www.example.com/",
        "https://deep.sub.example.com/",
        "https://xn--bcher-kva.example/",
        "https://bücher.example/",
        "about:blank",
        "data:image/png;base64,AAAA",
        "blob:https://a.test/7b1e",
    ],
)
def test_allowed(rules: AllowedDomains, url: str) -> None:
    assert rules.refusal(url) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://example.com/", "not on this task's allowed domains"),  # wildcard ≠ bare name
        ("https://a.test.evil.test/", "not on this task's allowed domains"),
        ("https://evilexample.com/", "not on this task's allowed domains"),
        ("https://b.test/", "not on this task's allowed domains"),
        ("http://127.0.0.1/", "IP address"),
        ("http://127.1/", "IP address"),
        ("http://2130706433/", "IP address"),
        ("http://0x7f.0.0.1/", "IP address"),
        ("http://[::1]:8080/", "IP address"),
        ("ws://evil.test/", "not on this task's allowed domains"),
        ("file:///etc/passwd", "file: URLs are never allowed"),
        ("javascript:alert(1)", "javascript: URLs are never allowed"),
        ("chrome://settings", "chrome: URLs are never allowed"),
        ("about:config", "about: URLs are never allowed"),
        ("data:text/html,hi", "only allowed for images"),
        ("blob:https://evil.test/1", "not on this task's allowed domains"),
    ],
)
def test_refused(rules: AllowedDomains, url: str, why: str) -> None:
    reason = rules.refusal(url)
    assert reason is not None and why in reason


def test_the_refusal_names_the_list_and_the_fix(rules: AllowedDomains) -> None:
    assert rules.refusal("https://evil.test/") == (
        "https://evil.test/ is not on this task's allowed domains "
        "(allowed: a.test, *.example.com, xn--bcher-kva.example); ask the person to add it"
    )
    assert "(allowed: none)" in str(AllowedDomains.parse([]).refusal("https://a.test/"))


def test_nothing_is_allowed_by_default() -> None:
    assert AllowedDomains().refusal("https://a.test/") is not None


@pytest.mark.parametrize(
    ("typed", "allowed"),
    [
        ("a.test", True),  # https:// is assumed, as the SDK documents
        ("a.test/path", True),
        ("https://a.test@evil.test/", False),
        ("https://evil.test\\@a.test/", False),
        ("https://a.test/ x", False),
        ("https://a.test\n.evil.test/", False),
        ("a.test:8443/x", True),
    ],
)
def test_typed_urls(rules: AllowedDomains, typed: str, allowed: bool) -> None:
    assert (rules.refuse_typed_url(typed) is None) is allowed


@pytest.mark.parametrize(
    "rule",
    ["", "*", "*.com", "https://a.test", "a.test:443", "a.test/x", "10.0.0.1", "[::1]", "a.*.test"],
)
def test_bad_rules_are_refused_with_the_fix(rule: str) -> None:
    with pytest.raises(DomainRuleError, match="allowed_domains entry"):
        AllowedDomains.parse([rule])


SNAPSHOT = """- generic [active] [ref=e1] [box=8,-500,784,3101]:
  - heading "Title" [level=1] [ref=e2] [box=8,-500,784,38]
  - paragraph [ref=e3] [box=8,5,784,19]: Some text: here
  - textbox "Search the site" [ref=e4] [box=8,40,300,20]
  - button "Add to cart" [ref=e5] [box=8,571,65,21]
  - link "Far away" [ref=f1e13] [cursor=pointer] [box=48,2000,29,19]:
    - /url: "#"
"""


def test_outline_keeps_what_is_in_view_and_translates_refs() -> None:
    text = browser_page.outline(SNAPSHOT, viewport=(800, 600))
    assert "[ref_3]: Some text: here" in text
    assert '"Title"' not in text and "Far away" not in text  # scrolled past / below the fold
    everything = browser_page.outline(SNAPSHOT, viewport=(800, 600), include_offscreen=True)
    assert 'link "Far away" [ref_f1e13]' in everything and "box=" not in everything
    interactive = browser_page.outline(SNAPSHOT, viewport=(800, 600), interactive_only=True)
    assert interactive.splitlines() == [
        '- textbox "Search the site" [ref_4]',
        '- button "Add to cart" [ref_5]',
    ]
    with pytest.raises(LookupError):
        browser_page.outline(SNAPSHOT, viewport=(800, 600), root_ref="e77")


def test_find_ranks_by_shared_words() -> None:
    assert browser_page.find(SNAPSHOT, "search bar")[0] == '- textbox "Search the site" [ref_4]'
    assert browser_page.find(SNAPSHOT, "add to cart button")[0] == '- button "Add to cart" [ref_5]'
    assert browser_page.find(SNAPSHOT, "the") == []


def test_refs_and_keys_round_trip() -> None:
    assert browser_page.playwright_ref(browser_page.model_ref("e7")) == "e7"
    assert browser_page.playwright_ref(browser_page.model_ref("f1e2")) == "f1e2"
    assert browser_page.playwright_ref("e7") is None
    assert browser_page.chord("ctrl+shift+Page_Up") == "Control+Shift+PageUp"
    assert browser_page.chord("Return") == "Enter"
    with pytest.raises(ValueError, match="not a modifier"):
        browser_page.modifiers("ctrl+q")


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("javascript:alert(1)", "javascript: URLs are never allowed"),
        ("file:///etc/passwd", "file: URLs are never allowed"),
        ("chrome://settings", "chrome: URLs are never allowed"),
        ("view-source:https://a.test/", "view-source: URLs are never allowed"),
        ("data:text/html,hi", "only allowed for images"),
    ],
)
def test_typed_urls_with_other_schemes_say_why(rules: AllowedDomains, typed: str, why: str) -> None:
    assert why in str(rules.refuse_typed_url(typed))
