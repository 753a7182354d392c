"""Moving an inbound call to the home of its conference before it is answered (docs/cluster.md, "Calls
reach their conference's home").

The node a call lands on asks the application (the ICE). When the answer joins a conference whose home is
another live node, this node does not answer: it leaves the answer in Redis under a one-time token
(`tonebridge:move:{token}`, 60 s) and answers the INVITE with a 302 whose Contact is the home node's
address, with the token as a URI parameter. The SIP front (Kamailio) follows the 302 itself, so the phone
never sees it; the home node takes the answer by its token (once: GETDEL) and runs it as its own ICE
answer, under the call id the application already knows. The token starts with that call id, so the home
node's engine can give the call its id before anything else sees it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tonebridge.cluster.keys import MOVE, NODE
from tonebridge.svaml.interpreter import CallContext, JoinConference
from tonebridge.svaml.interpreter import plan as svaml_plan
from tonebridge.svaml.models import SvamlError, parse_svaml

if TYPE_CHECKING:
    from tonebridge.cluster.directory import ClusterDirectory

log = logging.getLogger("tonebridge.cluster")

MOVE_PARAM = "tbmove"
MOVE_SECONDS = 60
_TOKEN = re.compile(r"^([0-9a-f]{32})\.[A-Za-z0-9_-]{16,64}$")


def moved_call_id(token: str | None) -> str | None:
    """The call id a move token carries, or None when `token` is not one."""
    match = _TOKEN.match(token or "")
    return match.group(1) if match else None


def conference_of(answer: dict[str, Any]) -> str | None:
    """The conference an ICE answer would put the call in, or None (not a conference, or not valid SVAML:
    the answer is then run here, where its faults are reported as for any call)."""
    try:
        operations = svaml_plan(parse_svaml(answer), CallContext(event="ice", answered=False))
    except (SvamlError, ValueError):
        return None
    return next((op.conference_id for op in operations if isinstance(op, JoinConference)), None)


@dataclass(frozen=True)
class Move:
    """What the home node needs to take the call over: whose it is and what the application answered."""

    app_key: str
    number: str
    cli: str
    answer: dict[str, Any]


class CallMover:
    def __init__(self, directory: ClusterDirectory) -> None:
        self.directory = directory

    async def home_elsewhere(self, conference_id: str) -> str | None:
        """The SIP address of the live node that is home to `conference_id`, when that is not this node;
        None when this node is (it claims the conference if nobody live holds it)."""
        holder = await self.directory.claim(conference_id)
        if holder == self.directory.node_id:
            return None
        sip = await self.directory.redis.hget(NODE + holder, "sip")
        return sip or None

    async def hand_over(self, call_id: str, move: Move, home_sip: str) -> str:
        """Leave `move` for the home node; the Contact the 302 names."""
        token = f"{call_id}.{secrets.token_urlsafe(24)}"
        document = json.dumps(
            {"app": move.app_key, "number": move.number, "cli": move.cli, "answer": move.answer},
            separators=(",", ":"),
        )
        await self.directory.redis.set(MOVE + token, document, ex=MOVE_SECONDS)
        self.directory.counters["calls_moved_out"] += 1
        return f"<sip:{move.number}@{home_sip};{MOVE_PARAM}={token}>"

    async def take(self, token: str) -> Move | None:
        """The move left under `token`, once; None when there is none (expired, taken, or forged)."""
        document = await self.directory.redis.getdel(MOVE + token)
        if document is None:
            return None
        data = json.loads(document)
        self.directory.counters["calls_moved_in"] += 1
        return Move(data["app"], data["number"], data["cli"], data["answer"])
