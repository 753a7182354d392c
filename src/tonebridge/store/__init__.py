"""Persistence: the SQLite store (calls, callback outbox). Nothing else writes SQL."""

from tonebridge.store.db import CALL_FIELDS, SCHEMA_VERSION, OutboxRow, SchemaError, Store

__all__ = ["CALL_FIELDS", "SCHEMA_VERSION", "OutboxRow", "SchemaError", "Store"]
