"""Browser sessions: the device token in a cookie, and what makes that safe.

A paired browser keeps its device token in an HttpOnly, SameSite=Strict cookie (Secure under
TLS), so the session *is* the device: nothing new is stored, and revoking the device ends the
session and its event streams through the same machinery as a bearer token. Programs keep
sending `Authorization: Bearer`, which wins over a cookie.

A cookie is sent by the browser on its own, so a request it authenticates must also prove it
comes from the console's own pages before it may change anything (`check_csrf`): its Origin
names this controller, and it carries the CSRF token, an HMAC of the session token that only a
page served to this session knows.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

COOKIE = "dispatch_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
# Browsers cap a cookie's life at 400 days; the device stays signed in until it is revoked.
COOKIE_MAX_AGE_S = 400 * 24 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_KEY = b"dispatch console csrf v1"
Scope = MutableMapping[str, Any]


def session_token(scope: Scope) -> str | None:
    """The device token in the request's session cookie, or None."""
    for name, value in scope.get("headers") or []:
        if name != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except CookieError:
            continue
        if COOKIE in jar and jar[COOKIE].value:
            return jar[COOKIE].value
    return None


def csrf_token(session: str) -> str:
    """The CSRF token of a session: derived, so nothing is stored, and useless elsewhere."""
    return hmac.new(session.encode(), _CSRF_KEY, hashlib.sha256).hexdigest()


def is_tls(scope: Scope) -> bool:
    """Whether the browser reached us over TLS (directly, or through a trusted proxy)."""
    return scope.get("scheme") in ("https", "wss")


def cookie_header(token: str, *, secure: bool) -> str:
    """The Set-Cookie value that signs this browser in as the device holding `token`."""
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={token}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict{flags}"


def clear_cookie_header(*, secure: bool) -> str:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{flags}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def own_origins(scope: Scope, public_url: str | None) -> set[str]:
    """The origins this request may come from: the one it was sent to, and `public_url`'s."""
    origins = set()
    host = _header(scope, b"host")
    if host:
        scheme = "https" if is_tls(scope) else "http"
        origins.add(f"{scheme}://{host.lower()}")
    if public_url:
        parts = urlsplit(public_url)
        origins.add(f"{parts.scheme}://{parts.netloc.lower()}")
    return origins


def origin_error(scope: Scope, public_url: str | None) -> str | None:
    """Why this request's Origin is not one of ours, or None when it is."""
    origin = _header(scope, b"origin")
    if origin is None:
        return (
            "the request has no Origin header; a browser sends one with every form and fetch, "
            "so this was not the console"
        )
    if origin.lower().rstrip("/") not in own_origins(scope, public_url):
        return f"the request comes from another site ({origin[:100]!r}), not from this console"
    return None


def check_csrf(scope: Scope, session: str, public_url: str | None) -> str | None:
    """Why a cookie-authenticated request may not change anything, or None when it may.

    The CSRF token is read from the `X-CSRF-Token` header (every console request that changes
    something is sent by its script with it).
    """
    if scope.get("method", "GET") in SAFE_METHODS:
        return None
    wrong_origin = origin_error(scope, public_url)
    if wrong_origin is not None:
        return wrong_origin
    sent = _header(scope, CSRF_HEADER.encode())
    if not sent or not hmac.compare_digest(sent, csrf_token(session)):
        return (
            "the request has no valid CSRF token; reload the console page and try again "
            "(programs send `Authorization: Bearer TOKEN` instead of the cookie)"
        )
    return None


SECURITY_HEADERS: Mapping[str, str] = {
    # No inline script or style anywhere: an injected tag can neither run nor restyle the page.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; manifest-src 'self'; worker-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it Chromium sends `Origin: null` on form posts, which the CSRF
    # check must refuse. same-origin keeps our URLs from other sites all the same.
    "Referrer-Policy": "same-origin",
}


def add_security_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with the security headers added where the route did not set them."""
    out = list(headers)
    present = {name.lower() for name, _ in out}
    for name, value in SECURITY_HEADERS.items():
        key = name.lower().encode()
        if key not in present:
            out.append((key, value.encode()))
    return out
