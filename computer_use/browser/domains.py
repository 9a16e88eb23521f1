"""Which hosts a task's browser may reach: the task's `allowed_domains`, checked per URL.

A rule is an exact host name (`docs.python.org`) or a wildcard over its subdomains
(`*.example.com`, which matches `a.example.com` and `a.b.example.com` but not `example.com`
itself: list both to allow both). Names are compared after the normalisation Chromium applies
(lower case, one trailing dot dropped, IDNA/UTS #46 to ASCII), so `EXAMPLE.com.` and
`bücher.example` match their canonical rules. An IP address never matches a rule: a page that
reaches a numeric host has left the named sites the person agreed to, whatever that address
serves. The default, no rules, allows nothing.

Only these schemes can be allowed: `http`, `https` and, for the same hosts, `ws`, `wss`;
`about:blank` (a new tab), `data:image/...` (inline images) and `blob:` URLs of an allowed
origin. Every other scheme (`file:`, `javascript:`, `chrome:`, `data:` documents, ...) is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

WEB_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# The WHATWG URL parser reads a host whose last label is a number (`1`, `0x7f`) as IPv4, so
# `http://2130706433/` and `http://127.1/` are addresses, not names.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_UNSAFE_IN_URL = re.compile(r"[\\\s\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_PORT_AFTER_COLON = re.compile(r"^[0-9]+(?:[/?#]|$)")


class DomainRuleError(ValueError):
    """An `allowed_domains` entry that is not a host name or a `*.` wildcard over one."""


@dataclass(frozen=True)
class AllowedDomains:
    """The parsed rules: exact names and wildcard suffixes, all normalised."""

    exact: frozenset[str] = frozenset()
    wildcard_bases: frozenset[str] = frozenset()
    shown: tuple[str, ...] = ()

    @classmethod
    def parse(cls, rules: Iterable[str]) -> AllowedDomains:
        """Parse `allowed_domains` entries.

        Raises:
            DomainRuleError: an entry is empty, an address, has a scheme, port or path, or is a
                wildcard that is not `*.` followed by a name of two labels or more.
        """
        exact: set[str] = set()
        bases: set[str] = set()
        shown: list[str] = []
        for rule in rules:
            text = str(rule).strip()
            wildcard = text.startswith("*.")
            name = text[2:] if wildcard else text
            if not name or any(c in name for c in "*/:@?#[] \\"):
                raise DomainRuleError(
                    f"allowed_domains entry {rule!r} is not a host name; write a name such as "
                    "'example.com' or a wildcard such as '*.example.com' (no scheme, port or path)"
                )
            host = normalise_host(name)
            if host is None:
                raise DomainRuleError(f"allowed_domains entry {rule!r} is not a valid host name")
            if is_ip_literal(host):
                raise DomainRuleError(
                    f"allowed_domains entry {rule!r} is an IP address; addresses are never "
                    "allowed in the browser, name the site instead"
                )
            if wildcard:
                if "." not in host:
                    raise DomainRuleError(
                        f"allowed_domains entry {rule!r} would allow every name under a top-level "
                        "domain; name the site, e.g. '*.example.com'"
                    )
                bases.add(host)
                shown.append(f"*.{host}")
            else:
                exact.add(host)
                shown.append(host)
        return cls(frozenset(exact), frozenset(bases), tuple(dict.fromkeys(shown)))

    def allows_host(self, host: str) -> bool:
        """Whether a (raw) host name matches a rule; addresses never do."""
        name = normalise_host(host)
        if name is None or is_ip_literal(name):
            return False
        if name in self.exact:
            return True
        return any(name.endswith("." + base) for base in self.wildcard_bases)

    def refusal(self, url: str) -> str | None:
        """Why the browser must not load `url` (a request Chromium makes), or None when it may."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return f"{_short(url)} is not a valid URL"
        scheme = parts.scheme.lower()
        if scheme == "about" and url.lower() in ("about:blank", "about:srcdoc"):
            return None
        if scheme == "data":
            if parts.path.lower().startswith("image/"):
                return None
            return "data: URLs are only allowed for images in this browser"
        if scheme == "blob":
            # blob:https://a.test/uuid belongs to the origin after `blob:`.
            return self.refusal(url[len("blob:") :])
        if scheme not in WEB_SCHEMES:
            shown = f"{scheme}:" if scheme else "a URL without a scheme"
            return f"{shown} URLs are never allowed in this browser (only http and https)"
        try:
            host = parts.hostname or ""
        except ValueError:
            return f"{_short(url)} has no valid host"
        if not host:
            return f"{_short(url)} has no host"
        name = normalise_host(host)
        if name is not None and is_ip_literal(name):
            return (
                f"{_short(url)} is an IP address, and addresses are never allowed in this browser "
                "(only the names on the task's allowed domains)"
            )
        if not self.allows_host(host):
            return (
                f"{_short(url)} is not on this task's allowed domains "
                f"(allowed: {self.describe()}); ask the person to add it"
            )
        return None

    def refuse_typed_url(self, url: str) -> str | None:
        """Why the model's `navigate` URL is refused, or None; the scheme defaults to https."""
        if _UNSAFE_IN_URL.search(url):
            return "the URL contains spaces, control characters or backslashes; send it encoded"
        full = typed_url(url)
        try:
            parts = urlsplit(full)
        except ValueError:
            return f"{_short(url)} is not a valid URL"
        if parts.scheme.lower() in WEB_SCHEMES and "@" in parts.netloc:
            # Parsers disagree on where a user name ends; a URL with one is refused outright.
            return f"{_short(url)} has a user name in it; URLs with credentials are not allowed"
        return self.refusal(full)

    def connect_src(self) -> str:
        """A CSP `connect-src` directive with the same hosts, for what request interception does
        not see (WebSocket handshakes): the browser adds it to every response it receives."""
        hosts = [*sorted(self.exact), *(f"*.{base}" for base in sorted(self.wildcard_bases))]
        sources = [f"{scheme}://{host}:*" for host in hosts for scheme in sorted(WEB_SCHEMES)]
        return "connect-src " + (" ".join([*sources, "data:", "blob:"]) if sources else "'none'")

    def describe(self) -> str:
        return ", ".join(self.shown) if self.shown else "none"


def typed_url(url: str) -> str:
    """The URL the model typed with https:// added when it has no scheme (`a.test:8080/x` has
    none; `javascript:...` and `file:///...` do), as the browser toolset documents."""
    scheme = _SCHEME.match(url)
    if scheme is not None and not _PORT_AFTER_COLON.match(url[scheme.end() :]):
        return url
    return f"https://{url}"


def normalise_host(host: str) -> str | None:
    """A host as Chromium compares it (lower case, no trailing dot, ASCII), or None if invalid."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        return name
    if name.endswith("."):
        name = name[:-1]
    if not name or ".." in name:
        return None
    if is_ip_literal(name):
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None


def is_ip_literal(host: str) -> bool:
    """Whether a normalised host is an address (v4 in any WHATWG form, or v6)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return True
    last = bare.rstrip(".").rsplit(".", 1)[-1]
    return bool(_NUMERIC_LABEL.match(last))


def _short(url: str, limit: int = 200) -> str:
    return url if len(url) <= limit else url[:limit] + "..."
