"""The configured applications as they stand now: keys, secrets, numbers and callback URLs, looked up by key or
number and changed by the configuration API.

Changes last until the server restarts: the config file stays the source of truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tonebridge.calls.errors import NumberTaken
from tonebridge.calls.requests import CallbackUrls
from tonebridge.config import ApplicationConfig

__all__ = ["AppState", "Applications", "query_number"]


@dataclass
class AppState:
    """An application's live settings: those of the config file, changed by the configuration API."""

    key: str
    secret: str
    primary: str
    fallback: str = ""
    numbers: set[str] = field(default_factory=set)


class Applications:
    """Every configured application by key; `key` arguments come from authenticated requests, so exist."""

    def __init__(self, configured: Iterable[ApplicationConfig]) -> None:
        self._apps: dict[str, AppState] = {
            a.key: AppState(a.key, a.secret, a.callback_url, numbers=set(a.numbers)) for a in configured
        }

    def __getitem__(self, key: str) -> AppState:
        return self._apps[key]

    def secret_for(self, key: str) -> str | None:
        app = self._apps.get(key)
        return app.secret if app else None

    def owner_of_number(self, number: str) -> AppState | None:
        # Numbers arrive with and without the leading + (E.164 as typed, or a SIP user part).
        plain = number.lstrip("+")
        for app in self._apps.values():
            if any(n.lstrip("+") == plain for n in app.numbers):
                return app
        return None

    def list_numbers(self, key: str) -> list[dict[str, str]]:
        return [
            {"number": n, "applicationkey": key, "capability": "voice"}
            for n in sorted(self._apps[key].numbers)
        ]

    def assign_numbers(self, key: str, numbers: list[str]) -> None:
        """All or none: a number held by another application refuses the whole request."""
        for number in numbers:
            owner = self.owner_of_number(number)
            if owner is not None and owner.key != key:
                raise NumberTaken(number)
        self._apps[key].numbers.update(numbers)

    def unassign_number(self, key: str, number: str) -> None:
        self._apps[key].numbers.discard(number)

    def callback_urls(self, key: str) -> dict[str, str]:
        app = self._apps[key]
        return {"primary": app.primary, "fallback": app.fallback}

    def set_callback_urls(self, key: str, urls: CallbackUrls) -> None:
        app = self._apps[key]
        if urls.primary is not None:
            app.primary = urls.primary
        if urls.fallback is not None:
            app.fallback = urls.fallback


def query_number(number: str) -> dict[str, Any]:
    """What `GET /v1/calling/query/number` tells: the number normalised; Tonebridge knows no carriers or rates."""
    digits = re.sub(r"[^0-9]", "", number)
    return {
        "countryId": "",
        "numberType": "Unknown",
        "normalizedNumber": f"+{digits}" if digits else number,
        "restricted": False,
        "rate": {"currencyId": "USD", "amount": 0.0},
    }
