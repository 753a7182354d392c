"""SIP dialogs (RFC 3261 §12, with the INVITE specifics of §13, §14 and §15): the state two user agents share.

A `Dialog` holds the identifiers, the route set, the remote target and the two CSeq counters, and builds
in-dialog requests from them. It is pure data and logic: no transport, no clock.

Transport choice: the dialog never decides how a request leaves. A request it builds carries no Via unless
the owner passed a `via_factory` (a callable taking a fresh branch and returning the Via value); without
one, the sender adds its own Via, as `SipStack.send_request` does. `next_hop()` says where the request goes
(the first Route, else the Request-URI), so the owner can pick the transport from that URI.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from tonebridge.sip.message import Headers, NameAddress, Request, Response, SipUri, canonical_name
from tonebridge.sip.transaction import new_branch

# §12.2 and RFC 6665/3515/3311: requests whose Contact replaces the remote target.
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})

# §19.1.1, Table 1: parameters and components a Request-URI may not carry.
_NOT_IN_REQUEST_URI = ("method",)


class DialogError(Exception):
    """A message that cannot create or belong to this dialog, or a request the dialog cannot build."""


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class DialogKey:
    """The dialog ID of §12: Call-ID and the two tags, seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def for_incoming_request(cls, request: Request) -> DialogKey:
        """The key of the dialog an incoming request belongs to: our tag is in To, theirs in From."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def for_incoming_response(cls, response: Response) -> DialogKey:
        """The key of the dialog a response to our request belongs to: our tag is in From, theirs in To."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


def _uri_text(value: str) -> str:
    """The URI of a name-addr or addr-spec header value, as written; validated by parsing it."""
    NameAddress.parse(value)
    value = value.strip()
    if "<" in value:
        return value.partition("<")[2].partition(">")[0].strip()
    return value.partition(";")[0].strip()


def _route_uris(message: Request | Response) -> list[str]:
    return [_uri_text(value) for value in message.headers.values("Record-Route")]


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.headers.values("Contact")
    if not contacts:
        return None
    if contacts[0].strip() == "*":
        raise DialogError("Contact: * cannot be a remote target")
    return _uri_text(contacts[0])


def contact_problem(request: Request, *, required: bool = True) -> str | None:
    """Why `request` cannot give a dialog its remote target, in words for a 400's reason phrase; None if
    it can.

    §8.1.1.8: a request that can create a dialog carries exactly one Contact, and its URI is a SIP or SIPS
    URI. `Contact: *` is REGISTER's alone (§10.2.2). A target refresh replaces the target only "if
    present" (§12.2.2), so pass `required=False` for one: then only a Contact that is there is judged.
    """
    contacts = request.headers.values("Contact")
    if not contacts:
        return "Missing Contact" if required else None
    if len(contacts) > 1:
        return "More Than One Contact"
    value = contacts[0].strip()
    if value == "*":
        return "Contact * Outside REGISTER"
    try:
        address = NameAddress.parse(value)
    except ValueError:
        return "Malformed Contact"
    if address.uri.scheme not in ("sip", "sips"):
        return "Contact Is Not a SIP URI"
    return None


def _initial_cseq() -> int:
    # §8.1.1.5: any value below 2**31; staying well below leaves room for a long dialog to count up.
    return secrets.randbelow(2**20) + 1


@dataclass
class Dialog:
    """One dialog (§12.1): build it with `from_uac_response` or `from_uas_request`.

    URIs are kept as text, exactly as the peer wrote them (`local_uri`, `remote_uri`, `remote_target`,
    each `route_set` entry). `local_cseq` is None on a UAS until it sends its first request;
    `remote_cseq` is None on a UAC until the peer sends one (§12.1.1, §12.1.2).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int | None = None
    remote_cseq: int | None = None
    local_contact: str | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    via_factory: Callable[[str], str] | None = None

    # Construction ------------------------------------------------------------------------------------

    @classmethod
    def from_uac_response(
        cls, invite: Request, response: Response, via_factory: Callable[[str], str] | None = None
    ) -> Dialog:
        """The UAC's dialog from a 2xx (confirmed) or a 101-199 with a To tag (early) (§12.1.2, §13.2.2.4).

        The route set is the response's Record-Route in reverse; the remote target its Contact.
        """
        if not 100 < response.status < 300:
            raise DialogError(f"a {response.status} response does not create a dialog (101-299 do)")
        remote_tag = response.to.tag
        if not remote_tag:
            raise DialogError("a response without a To tag cannot create a dialog (§12.1.2)")
        local_tag = invite.from_.tag
        if not local_tag:
            raise DialogError("the request had no From tag (§8.1.1.3 makes it mandatory)")
        if response.call_id != invite.call_id or response.from_.tag != local_tag:
            raise DialogError("the response does not answer this request (Call-ID or From tag differ)")
        target = _contact_uri(response)
        if target is None:
            if response.status >= 200:
                raise DialogError("a 2xx to INVITE without Contact (§13.3.1.4 requires one)")
            target = invite.uri  # an early dialog from a Contact-less 1xx: the best target known
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_uri_text(invite.headers.get("From") or ""),
            remote_uri=_uri_text(invite.headers.get("To") or ""),
            remote_target=target,
            route_set=list(reversed(_route_uris(response))),
            local_cseq=invite.cseq.number,
            remote_cseq=None,
            local_contact=invite.headers.get("Contact"),
            secure=invite.request_uri.scheme == "sips",
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            via_factory=via_factory,
        )

    @classmethod
    def from_uas_request(
        cls,
        invite: Request,
        local_tag: str,
        local_contact: str,
        *,
        confirmed: bool = False,
        via_factory: Callable[[str], str] | None = None,
    ) -> Dialog:
        """The UAS's dialog for a request it answers with a 101-299 carrying `local_tag` (§12.1.1).

        The route set is the request's Record-Route in order; the remote target its Contact. The dialog
        starts early; call `confirm()` when the 2xx goes out (or pass `confirmed=True`).
        """
        target = _contact_uri(invite)
        if target is None:
            raise DialogError(f"a dialog-creating {invite.method} without Contact (§8.1.1.8)")
        if not local_tag:
            raise DialogError("the UAS needs a To tag of its own (§12.1.1)")
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            # An RFC 2543 peer may send no From tag; the dialog then has an empty remote tag (§12.1.1).
            remote_tag=invite.from_.tag or "",
            local_uri=_uri_text(invite.headers.get("To") or ""),
            remote_uri=_uri_text(invite.headers.get("From") or ""),
            remote_target=target,
            route_set=_route_uris(invite),
            local_cseq=None,
            remote_cseq=invite.cseq.number,
            local_contact=local_contact,
            secure=invite.request_uri.scheme == "sips",
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            via_factory=via_factory,
        )

    @property
    def key(self) -> DialogKey:
        return DialogKey(self.call_id, self.local_tag, self.remote_tag)

    # State changes -----------------------------------------------------------------------------------

    def confirm(self, response: Response | None = None) -> None:
        """Move an early dialog to confirmed.

        A UAC passes the 2xx: §13.2.2.4 recomputes the route set from it and takes its Contact as the
        target. A UAS calls it bare when its 2xx goes out.
        """
        if self.state is DialogState.TERMINATED:
            raise DialogError("a terminated dialog cannot be confirmed")
        if response is not None:
            if not 200 <= response.status < 300:
                raise DialogError(f"only a 2xx confirms a dialog, not a {response.status}")
            if DialogKey.for_incoming_response(response) != self.key:
                raise DialogError("the 2xx belongs to another dialog (Call-ID or tags differ)")
            if self.state is DialogState.EARLY:
                self.route_set = list(reversed(_route_uris(response)))
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        """End the dialog (BYE sent or received, §15; or a non-2xx final ending an early dialog)."""
        self.state = DialogState.TERMINATED

    def update_target(self, message: Request | Response) -> bool:
        """Take a new remote target from a target refresh request or a response to one (§12.2).

        Returns True when the target changed. The route set is never changed by a refresh (§12.2).
        A non-refresh request, an error response, or a message without Contact leaves the target alone.
        """
        if isinstance(message, Request):
            if message.method not in TARGET_REFRESH_METHODS:
                return False
        elif not 100 < message.status < 300:
            return False
        target = _contact_uri(message)
        if target is None or target == self.remote_target:
            return False
        self.remote_target = target
        return True

    # Incoming ----------------------------------------------------------------------------------------

    def receive_request(self, request: Request) -> bool:
        """Check an in-dialog request's CSeq (§12.2.2); False means answer 500 and leave the dialog alone.

        The number must exceed the last one received; the first request seen sets it. ACK and CANCEL
        reuse the INVITE's number (§13.2.2.4, §9.1) and are not checked or counted. A request for another
        dialog is a caller error.
        """
        if DialogKey.for_incoming_request(request) != self.key:
            raise DialogError(f"{request.method} belongs to another dialog (Call-ID or tags differ)")
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    # Outgoing ----------------------------------------------------------------------------------------

    def create_request(
        self,
        method: str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new in-dialog request (§12.2.1.1) with the next local CSeq.

        Request-URI and Route follow the route set (loose or strict first hop). Target refresh requests
        carry `local_contact`. `headers` are added after the dialog's own; a Contact or Max-Forwards in
        them replaces the dialog's.
        """
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} reuses the INVITE's CSeq: use create_ack() or make_cancel()")
        if self.state is DialogState.TERMINATED:
            raise DialogError(f"cannot send {method} in a terminated dialog")
        if self.local_cseq is None:
            self.local_cseq = _initial_cseq()
        else:
            self.local_cseq += 1
        return self._build(method, self.local_cseq, headers, body, content_type)

    def create_ack(
        self,
        invite_cseq: int,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
    ) -> Request:
        """The ACK for a 2xx to the INVITE numbered `invite_cseq` (§13.2.2.4): that CSeq, method ACK.

        It is a request of its own, with a fresh branch when a `via_factory` is set; credentials the INVITE
        carried belong in `headers`.
        """
        if self.state is DialogState.TERMINATED:
            raise DialogError("cannot ACK in a terminated dialog")
        return self._build("ACK", invite_cseq, headers, body, content_type)

    def next_hop(self) -> SipUri:
        """Where a request built now is sent first: the top Route, or the Request-URI without one (§8.1.2)."""
        if self.route_set:
            return SipUri.parse(self.route_set[0])
        return SipUri.parse(self.remote_target)

    def _request_target(self) -> tuple[str, list[str]]:
        """Request-URI and Route values by §12.2.1.1."""
        if not self.route_set:
            return self.remote_target, []
        first = SipUri.parse(self.route_set[0])
        if "lr" in first.params:
            return self.remote_target, list(self.route_set)
        # A strict router (RFC 2543) wants its own URI as Request-URI and the real target as last Route.
        for name in _NOT_IN_REQUEST_URI:
            first.params.pop(name, None)
        first.headers = None
        return str(first), [*self.route_set[1:], self.remote_target]

    def _build(
        self,
        method: str,
        cseq: int,
        extra: Headers | Iterable[tuple[str, str]] | None,
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._request_target()
        extra_fields = list(extra) if extra is not None else []
        extra_names = {canonical_name(name).lower() for name, _ in extra_fields}
        headers = Headers()
        if self.via_factory is not None:
            headers.add("Via", self.via_factory(new_branch()))
        for route in routes:
            headers.add("Route", f"<{route}>")
        if "max-forwards" not in extra_names:
            headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self.local_uri}>;tag={self.local_tag}")
        to = f"<{self.remote_uri}>"
        if self.remote_tag:
            to += f";tag={self.remote_tag}"
        headers.add("To", to)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        if method in TARGET_REFRESH_METHODS and self.local_contact and "contact" not in extra_names:
            headers.add("Contact", self.local_contact)
        for name, value in extra_fields:
            headers.add(name, value)
        if body and content_type and "content-type" not in extra_names:
            headers.add("Content-Type", content_type)
        return Request(method, uri, headers, body)
