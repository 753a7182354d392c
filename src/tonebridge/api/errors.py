"""Sinch-style API errors: `{"errorCode": 40001, "message": "...", "reference": "..."}` with the HTTP status
given by the code's first three digits. Every 4xx and 5xx of the calling API goes out in this shape, since
the official SDKs read `message` from any error body.

The domain errors of calls/ (and a SVAML document the call's state refuses) become such bodies here and
nowhere else: `DOMAIN_ERRORS` is the one table, `exception_handlers` the one registration.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tonebridge.calls.errors import (
    ApplicationNotFound,
    CallNotFound,
    ConferenceNotFound,
    NotAParticipant,
    NumberTaken,
)
from tonebridge.svaml.models import SvamlError

log = logging.getLogger("tonebridge.api")

INVALID_PARAMETER = 40001
MISSING_PARAMETER = 40002
INVALID_REQUEST = 40003
NOT_FOUND = 40400
METHOD_NOT_ALLOWED = 40500
PAYLOAD_TOO_LARGE = 41300
INTERNAL = 50000


class ApiError(Exception):
    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    @property
    def status(self) -> int:
        return self.error_code // 100


def invalid(field: str, message: str) -> ApiError:
    return ApiError(INVALID_PARAMETER, f"{field}: {message}")


def missing(field: str) -> ApiError:
    return ApiError(MISSING_PARAMETER, f"{field}: required field is missing")


def error_response(status: int, error_code: int, message: str) -> JSONResponse:
    reference = secrets.token_hex(8)
    if status >= 500:
        log.error(
            "event=api_error status=%d code=%d reference=%s message=%r",
            status,
            error_code,
            reference,
            message,
        )
    return JSONResponse(
        {"errorCode": error_code, "message": message, "reference": reference}, status_code=status
    )


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error_code, exc.message)


# Each domain error: its error code and the field its message names (sinch-voice-v1.md §1). A subclass
# without an entry of its own (CallNotLive) maps as its base does.
DOMAIN_ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    CallNotFound: lambda exc: ApiError(NOT_FOUND, f"callId: {exc}"),
    ConferenceNotFound: lambda exc: ApiError(NOT_FOUND, f"conferenceId: {exc}"),
    NotAParticipant: lambda exc: ApiError(NOT_FOUND, f"callId: {exc}"),
    ApplicationNotFound: lambda exc: ApiError(NOT_FOUND, f"applicationkey: {exc}"),
    NumberTaken: lambda exc: invalid("numbers", str(exc)),
    SvamlError: lambda exc: invalid(exc.path, exc.message),
}


def domain_error(exc: Exception) -> ApiError:
    """The Sinch error for a domain error (its nearest class in DOMAIN_ERRORS)."""
    for kind in type(exc).__mro__:
        if kind in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[kind](exc)
    raise TypeError(f"{type(exc).__name__} is not a domain error") from exc


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    error = domain_error(exc)
    return error_response(error.status, error.error_code, error.message)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    code = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}.get(status, status * 100)
    detail = getattr(exc, "detail", "") or "error"
    if status == 404:
        detail = f"no such resource: {request.url.path}"
    elif status == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(status, code, detail)


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("event=api_unexpected_error path=%s", request.url.path, exc_info=exc)
    return error_response(500, INTERNAL, "internal error; the reference identifies it in the server log")


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """What every HTTP app of Tonebridge registers, so that no error leaves in another shape."""
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        kind: domain_error_handler for kind in DOMAIN_ERRORS
    }
    handlers.update(
        {ApiError: api_error_handler, HTTPException: http_error_handler, Exception: unexpected_error_handler}
    )
    return handlers
