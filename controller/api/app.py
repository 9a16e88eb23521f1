"""The FastAPI application: `create_app(settings)`, its error handling, body limit and auth.

Routes live in `controller.api.routes`. Before routing, in this order: a request naming another
site in Host is refused (a DNS-rebinding defence); a request for a private route is refused
unless its bearer token is valid, before any of its body is read (`TokenGate`); the body is read
within a size and a time limit (`BodyLimit`). Connection-level limits are in `api.edge`. Every
error leaves as `{"error": {"code", "message"}}` with its status; an unexpected exception is
logged and answered with a 500 in the same shape, never with a stack trace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    MutableMapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route

from controller.api import approvals, audit, memory, network, push, routes
from controller.auth import Auth
from controller.errors import ApiError, RateLimited, Unauthorized
from controller.execution.disk import is_disk_full
from controller.service import Controller
from controller.settings import Settings
from controller.web import pages as console
from controller.web.session import (
    add_security_headers,
    check_csrf,
    clear_cookie_header,
    is_tls,
    session_token,
)

log = logging.getLogger(__name__)

API_VERSION = "1"
# Routes that need no token take small bodies: a pairing request is a code and a name.
PUBLIC_MAX_BODY_BYTES = 4096
# Sent with every refusal that leaves a body unread: the connection cannot carry another request.
CLOSE = {"Connection": "close"}
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_json(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def refuse(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: dict[str, str]
) -> None:
    """Answer with a JSON error without reading the request's body."""

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await error_json(status, code, message, {**headers, **CLOSE})(scope, no_body, send)


class BodyLimit:
    """Read the whole body within `max_bytes` and `timeout_s` before any route sees it.

    Larger bodies get a 413, slower ones a 408, and a body cut short by a disconnect reaches no
    route: a truncated request that still parsed must not be acted on.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float,
        limit_is: str = "the max_body_bytes setting",
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.limit_is = limit_is

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await refuse(scope, send, 400, "bad_request", "Content-Length is not a number", {})
                return
            if int(declared) > self.max_bytes:
                await self._refuse_size(scope, send)
                return
        # Read the (bounded) body here, so a chunked body cannot grow past the limit either.
        chunks: list[bytes] = []
        size = 0
        complete = False
        with anyio.move_on_after(self.timeout_s):
            while not complete:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left; nobody is there to answer
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    await self._refuse_size(scope, send)
                    return
                chunks.append(message.get("body", b""))
                complete = not message.get("more_body", False)
        if not complete:
            await refuse(
                scope,
                send,
                408,
                "request_timeout",
                f"the request body did not arrive within {self.timeout_s:g} s; send it faster "
                "(the limit is the body_timeout_s setting)",
                {},
            )
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse_size(self, scope: Scope, send: Send) -> None:
        await refuse(
            scope,
            send,
            413,
            "payload_too_large",
            f"the request body is larger than {self.max_bytes} bytes; send less (the limit is "
            f"{self.limit_is})",
            {},
        )


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, read as FastAPI's HTTPBearer does."""
    header = dict(scope.get("headers") or []).get(b"authorization")
    if header is None:
        return None
    scheme, token = get_authorization_scheme_param(header.decode("latin-1"))
    return token if scheme.lower() == "bearer" and token else None


class TokenGate:
    """Check the token of a request for a private route before its body is read.

    The token is the bearer token, else the console's session cookie (`web.session`); a request
    the cookie authenticates may change something only with the console's CSRF token and its
    own Origin (403 `csrf` otherwise). A client without a valid token gets a 401 (a browser
    asking for a console page is sent to the pairing page instead) and its body is never read:
    it cannot make the controller buffer anything. Routes of `public` (health, pairing, the
    console's assets) need no token and take at most `PUBLIC_MAX_BODY_BYTES`. The device found
    is left in the request's state, where `routes.current_device` takes it instead of asking
    again.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: Auth,
        public: Sequence[BaseRoute],
        max_body_bytes: int,
        body_timeout_s: float,
        pages: Sequence[BaseRoute] = (),
        public_url: str | None = None,
    ) -> None:
        self.auth = auth
        self.public = [r for r in flat_routes(public) if isinstance(r, Route)]
        self.pages = [r for r in flat_routes(pages) if isinstance(r, Route)]
        self.public_url = public_url
        self.private_app = BodyLimit(app, max_body_bytes, body_timeout_s)
        self.public_app = BodyLimit(
            app,
            min(max_body_bytes, PUBLIC_MAX_BODY_BYTES),
            body_timeout_s,
            limit_is="fixed for the routes that need no token",
        )

    def is_public(self, path: str) -> bool:
        return any(route.path_regex.match(path) for route in self.public)

    def is_page(self, scope: Scope) -> bool:
        """A console page a browser navigates to: sent to pairing rather than given a 401."""
        return scope["method"] in ("GET", "HEAD") and any(
            route.path_regex.match(scope["path"]) for route in self.pages
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.private_app(scope, receive, send)
            return
        if self.is_public(scope["path"]):
            await self.public_app(scope, receive, send)
            return
        token = bearer_token(scope)
        session = session_token(scope) if token is None else None
        token = token or session
        device = self.auth.cached(token)
        if device is None:
            try:
                device = await anyio.to_thread.run_sync(self.auth.authenticate, token)
            except Unauthorized as exc:
                if self.is_page(scope):
                    await to_pairing(scope, send, signed_out=session is not None)
                    return
                await refuse(
                    scope, send, 401, exc.code, exc.message, {"WWW-Authenticate": "Bearer"}
                )
                return
        if session is not None:
            refused = check_csrf(scope, session, self.public_url)
            if refused is not None:
                await refuse(scope, send, 403, "csrf", refused, {})
                return
            scope.setdefault("state", {})["session"] = session
        scope.setdefault("state", {})["device"] = device
        await self.private_app(scope, receive, send)


async def to_pairing(scope: Scope, send: Send, *, signed_out: bool) -> None:
    """Send a browser without a (valid) session to the pairing page; forget a dead cookie."""
    location = b"/pair#signed-out" if signed_out else b"/pair"
    headers = [(b"location", location), (b"cache-control", b"no-store"), (b"connection", b"close")]
    if signed_out:
        headers.append((b"set-cookie", clear_cookie_header(secure=is_tls(scope)).encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


class SecurityHeaders:
    """Add the console's security headers (a strict CSP among them) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = add_security_headers(message.get("headers") or [])
            await send(message)

        await self.app(scope, receive, with_headers)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def allowed_host_names(settings: Settings) -> frozenset[str]:
    """The names a request's Host may carry: loopback, the listen address, public_url's host."""
    names = set(LOOPBACK_NAMES)
    if settings.host not in WILDCARD_HOSTS:
        names.add(settings.host.strip("[]").lower())
    if settings.public_url:
        public = urlsplit(settings.public_url).hostname
        if public:
            names.add(public.lower())
    return frozenset(names)


def host_name(header: bytes) -> str | None:
    """The name in a Host header (lower case, no port or brackets), or None if malformed."""
    try:
        parts = urlsplit("//" + header.decode("ascii"))
        _ = parts.port  # raises for a port that is not a number
    except (UnicodeDecodeError, ValueError):
        return None
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.hostname


class HostCheck:
    """Refuse requests whose Host names another site, with 400: a DNS-rebinding defence.

    A web page on a name the attacker controls can re-point that name at 127.0.0.1 and so
    reach this port from the owner's browser, but its requests still carry the attacker's name
    in Host. An IP address in Host cannot come from rebinding, so any is accepted; that keeps
    a controller listening on 0.0.0.0 reachable by its LAN address.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str], url: str) -> None:
        self.app = app
        self.allowed = allowed
        self.url = url

    def allows(self, header: bytes) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if name in self.allowed:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # No Host at all (HTTP/1.0) is not a browser, so not a rebinding.
        header = dict(scope.get("headers") or []).get(b"host")
        if header is None or self.allows(header):
            await self.app(scope, receive, send)
            return
        shown = header.decode("ascii", "replace")[:100]
        response = error_json(
            400,
            "bad_host",
            f"the Host header {shown!r} names neither this controller nor a loopback address; "
            f"connect to {self.url}, or set public_url to the address clients use",
        )
        await response(scope, receive, send)


def flat_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, looking inside included routers (newer FastAPI wraps them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """All methods any route offers on `path` (Starlette's own Allow names only the first)."""
    methods: set[str] = set()
    for route in flat_routes(app.routes):
        if isinstance(route, Route) and route.path_regex.match(path):
            methods |= route.methods or set()
    return sorted(methods)


TASK_KIND_TAGS = ("command", "agent")


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "invalid_json", "the body is not valid JSON; send a JSON object"
    parts = []
    for error in errors[:5]:
        loc = list(error.get("loc", ()))
        # A task body is a union tagged by its kind; the tag is not a field the client sent.
        if len(loc) > 2 and loc[0] == "body" and loc[1] in TASK_KIND_TAGS:
            del loc[1]
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid", "; ".join(parts) + more + "; see the API document for the shape"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = None
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after_s)}
        return error_json(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = _validation_message(exc)
        return error_json(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_json(
                404,
                "not_found",
                f"no route {request.method} {request.url.path}; the routes are listed in "
                "/api/v1/openapi.json",
            )
        if exc.status_code == 405:
            allowed = allowed_methods(request.app, request.url.path)
            return error_json(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )
        return error_json(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(OperationalError)
    @app.exception_handler(OSError)
    async def on_storage(request: Request, exc: Exception) -> JSONResponse:
        if not is_disk_full(exc):
            return await on_bug(request, exc)
        # Any write route: a full disk is the machine's state, not a bug.
        refused = request.app.state.controller.disk.full_error()
        log.warning("refused %s %s: %s", request.method, request.url.path, refused.message)
        return error_json(refused.status, refused.code, refused.message)

    @app.exception_handler(Exception)
    async def on_bug(_request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s", incident, exc_info=exc)
        return error_json(
            500,
            "internal",
            f"the controller hit an internal error (incident {incident}, in its log); "
            "please report it",
        )


def create_app(settings: Settings, *, controller: Controller | None = None) -> FastAPI:
    """The controller's ASGI app; the controller starts and stops with the app's lifespan."""
    service = controller or Controller(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.events.attach(asyncio.get_running_loop())
        await anyio.to_thread.run_sync(service.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.stop)

    app = FastAPI(
        title="Dispatch controller",
        summary="Queue tasks from anywhere; run them in sandboxes on this machine.",
        version=API_VERSION,
        lifespan=lifespan,
        # The schema is served behind auth by `routes`; interactive docs are not served.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.controller = service
    app.add_middleware(
        TokenGate,
        auth=service.auth,
        public=[*routes.public.routes, *console.public.routes],
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        pages=console.pages.routes,
        public_url=settings.public_url,
    )
    # Added last, so it runs first: a request for another site is not even read.
    app.add_middleware(HostCheck, allowed=allowed_host_names(settings), url=settings.url)
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)
    app.include_router(routes.public)
    app.include_router(routes.private)
    app.include_router(approvals.router)
    app.include_router(memory.router)
    app.include_router(audit.router)
    app.include_router(push.router)
    app.include_router(network.router)
    app.include_router(console.public)
    app.include_router(console.pages)
    app.include_router(console.actions)
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, as `docs/openapi.json` holds it."""
    return app.openapi()
