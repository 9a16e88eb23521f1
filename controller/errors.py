"""Errors raised by the controller package.

    ControllerError              root: catch this to handle any controller failure
    ├── ConfigError              a setting is wrong; start-up stops with the setting and the fix
    └── ApiError                 a request is refused; carries an HTTP status and a stable code
        ├── BadRequest           400 the body is not valid JSON, or the request is malformed
        ├── Unauthorized         401 no token, an unknown token, or a revoked one
        ├── Forbidden            403 the token's role may not do this (a device asking for an
        │                            owner's power, or for a network the owner did not allow)
        ├── NotFound             404 no such thread, task, device or route
        ├── Conflict             409 the request does not fit the state (cancel a finished task)
        ├── PayloadTooLarge      413 the body is larger than `max_body_bytes`
        ├── Unprocessable        422 the body is well-formed but a value is refused
        │   └── FolderNotGranted 422 a task names a folder (or mode) that is not granted
        ├── RateLimited          429 too many wrong pairing codes from one client
        └── InsufficientStorage  507 the data directory's disk is (nearly) full

Every `ApiError` becomes `{"error": {"code", "message"}}` with its status; the message says what
was wrong and how to fix it. A command that fails inside its sandbox is not an error here: it is
a task that ends `failed`.
"""

from __future__ import annotations


class ControllerError(Exception):
    """Root of every error the controller package raises."""


class ConfigError(ControllerError):
    """A setting has a wrong value; the message names the setting and the fix."""


class ApiError(ControllerError):
    """A refused request, rendered as a JSON error with `status` and `code`."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    status = 422
    code = "invalid"


class FolderNotGranted(Unprocessable):
    code = "folder_not_granted"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InsufficientStorage(ApiError):
    status = 507
    code = "insufficient_storage"
