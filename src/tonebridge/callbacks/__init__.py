"""Callbacks to applications: request and callback signing, and the persisted delivery outbox."""

from tonebridge.callbacks.outbox import (
    DEFAULT_BACKOFF,
    IDEMPOTENCY_HEADER,
    SYNC_TIMEOUT,
    Delivery,
    Outbox,
    backoff_delay,
    encode_body,
)
from tonebridge.callbacks.signing import (
    DEFAULT_SKEW,
    AuthError,
    callback_headers,
    content_md5,
    format_timestamp,
    parse_timestamp,
    signature,
    string_to_sign,
    verify_request,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_SKEW",
    "IDEMPOTENCY_HEADER",
    "SYNC_TIMEOUT",
    "AuthError",
    "Delivery",
    "Outbox",
    "backoff_delay",
    "callback_headers",
    "content_md5",
    "encode_body",
    "format_timestamp",
    "parse_timestamp",
    "signature",
    "string_to_sign",
    "verify_request",
]
