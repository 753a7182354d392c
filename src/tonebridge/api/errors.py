"""Sinch-style API errors: `{"errorCode": 40001, "message": "...", "reference": "..."}` with the HTTP status
given by the code's first three digits. Every 4xx and 5xx of the calling API goes out in this shape, since
the official SDKs read `message` from any error body."""

from __future__ import annotations

import logging
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("tonebridge.api")

INVALID_PARAMETER = 40001
MISSING_PARAMETER = 40002
INVALID_REQUEST = 40003
NOT_FOUND = 40400
METHOD_NOT_ALLOWED = 40500
PAYLOAD_TOO_LARGE = 41300
UNSUPPORTED_MEDIA = 41500
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
        log.error("event=api_error status=%d code=%d reference=%s message=%r", status, error_code, reference, message)
    return JSONResponse({"errorCode": error_code, "message": message, "reference": reference}, status_code=status)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error_code, exc.message)


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
