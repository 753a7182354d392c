"""The operator console at `/console`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from tonebridge.server import Server


def routes(server: Server) -> list[BaseRoute]:
    return []
