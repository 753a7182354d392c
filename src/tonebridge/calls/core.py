"""The call core: one call's user-agent logic (RFC 3261 §12-15, RFC 3264) as a pure state machine.

A core is given the requests and responses of its call and the current time, and hands back typed actions:
what to answer, what to send, what to tell the media leg and the application. It reads no clock, waits on
nothing and owns no socket. Its timeouts (the ring timeout, the wait for the final response after our CANCEL,
the wait for the ACK of our 2xx, the wait for the answer to our BYE, the call's maximum duration) are
deadlines it reports through `next_timer()` and acts on in `handle_timer(now)`, so every one of them is
testable without sleeping.

`InboundCall` is the UAS side of a call placed to us, `OutboundCall` the UAC side of a call we place. Both
own the call's `Call` record and move it through its states. calls/engine.py drives them: it feeds what the
SIP stack delivers and executes the actions.

Retransmission is not the core's business: the client transactions re-send our requests, and the INVITE
server transaction re-sends our 2xx until its ACK comes (sip/transaction.py). SDP offer and answer are
sip/sdp.py's; the core only decides when to offer, answer or apply an answer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import ClassVar

from tonebridge.calls.call import Call, CallResult, CallState, Direction, EndReason, outcome_for_status
from tonebridge.keys import DTMF_KEYS
from tonebridge.media.g711 import CODECS
from tonebridge.sip import auth, sdp
from tonebridge.sip.dialog import Dialog, DialogError, DialogKey
from tonebridge.sip.message import Headers, Request, Response, SipUri
from tonebridge.sip.transaction import DEFAULT_TIMERS, TimerConfig, make_cancel, make_response, new_tag

_KEYS = frozenset(DTMF_KEYS)
DTMF_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")
TELEPHONE_EVENT_PT = 101


class CallStateError(ValueError):
    """An operation the call's state does not allow: a re-INVITE before the dialog exists, a request after
    the end. A ValueError, so callers that refuse bad input already refuse this too."""


@dataclass(frozen=True)
class LocalEnd:
    """Our side of one call: the address our SDP and URIs name, our Contact, our RTP port, what we offer."""

    address: str
    contact: str
    media_port: int
    codecs: tuple[str, ...] = CODECS
    telephone_event: bool = True
    allow: str = "INVITE, ACK, CANCEL, BYE, INFO"


# Actions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Respond:
    """Answer `request` (one the core was given) with `response`, through that request's server transaction."""

    request: Request
    response: Response


@dataclass(frozen=True)
class SendRequest:
    """Start a client transaction for `request` and feed its responses back to `receive_response`.

    In-dialog requests go to the dialog's next hop; the others (the INVITE, its CANCEL) to the call's first
    hop. The sender adds the Via, in place: a CANCEL copies the INVITE's (§9.1).
    """

    request: Request
    in_dialog: bool


@dataclass(frozen=True)
class SendAck:
    """Send the ACK for a 2xx: a request of its own, with no transaction (§13.2.2.4), to the dialog's next hop."""

    ack: Request


@dataclass(frozen=True)
class ConfigureMedia:
    """Point the call's media leg at what offer and answer agreed."""

    media: sdp.NegotiatedMedia


@dataclass(frozen=True)
class Ringing:
    """The callee's side is alerting (a 101-199 to our INVITE)."""

    status: int


@dataclass(frozen=True)
class Answered:
    """The call is up: the 2xx went out (inbound) or came in and was ACKed (outbound)."""


@dataclass(frozen=True)
class Ended:
    """The call is over for the application; requests still on the wire (a BYE) finish on their own."""

    reason: EndReason
    result: CallResult
    sip_status: int | None


@dataclass(frozen=True)
class Declined:
    """The INVITE was refused before it became a call (415, 400, 488): nothing to tell the application."""

    status: int
    reason: str


@dataclass(frozen=True)
class PressDetected:
    """A key pressed, as SIP INFO says (RFC 2976 with an `application/dtmf-relay` or `application/dtmf` body)."""

    digit: str


@dataclass(frozen=True)
class MediaUpdated:
    """A re-INVITE changed the media: our direction now, and whether that puts the call on hold."""

    direction: str
    on_hold: bool


@dataclass(frozen=True)
class RequestCompleted:
    """The final response to an in-dialog request we sent (BYE, re-INVITE, INFO...); a synthesized 408 when
    the core stopped waiting for one."""

    request: Request
    response: Response


@dataclass(frozen=True)
class Noted:
    """A protocol incident worth a log line (a refused call, a ring timeout, an SDP answer we could not use)."""

    event: str
    fields: tuple[tuple[str, object], ...] = ()


Action = (
    Respond
    | SendRequest
    | SendAck
    | ConfigureMedia
    | Ringing
    | Answered
    | Ended
    | Declined
    | PressDetected
    | MediaUpdated
    | RequestCompleted
    | Noted
)


# Helpers ----------------------------------------------------------------------------------------------


def parse_dtmf_info(content_type: str, body: bytes) -> str | None:
    """The digit of a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or `application/dtmf` (`5`)."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if content_type == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name.strip().lower() == "signal":
                value = value.strip().upper()
                return value if value in _KEYS else ("*" if value == "10" else "#" if value == "11" else None)
        return None
    if content_type == "application/dtmf":
        value = text.upper()
        return value if value in _KEYS else None
    return None


def answer_without_call(request: Request) -> Response | None:
    """The answer to a request that names a call we do not have: 481 (§12.2.2 for in-dialog requests, §9.2
    for CANCEL); None for an ACK, which is never answered."""
    if request.method == "ACK":
        return None
    return make_response(request, 481)


# The cores --------------------------------------------------------------------------------------------


@dataclass
class _OfferInAnswer:
    """An offer we put in a 2xx, whose answer the ACK for that 2xx brings (§13.2.1)."""

    invite_cseq: int
    offer: sdp.SessionDescription
    announce: bool  # a re-INVITE's media change is news; the first answer of a call is not


class _CallCore:
    """What both sides of a call share: the dialog, in-dialog requests both ways, BYE, INFO, re-INVITE, timers."""

    direction: ClassVar[Direction]

    def __init__(self, call: Call, invite: Request, local: LocalEnd, timers: TimerConfig | None) -> None:
        self.call = call
        self.invite = invite
        self.local = local
        self.timer_config = timers or DEFAULT_TIMERS
        self.dialog: Dialog | None = None
        self.media: sdp.NegotiatedMedia | None = None
        self._deadlines: dict[str, float] = {}
        self._sdp_session_id = secrets.randbelow(2**31)
        self._sdp_version = 0
        # The ACK we sent for the 2xx to each of our INVITEs, by CSeq: a retransmitted 2xx gets it again.
        self._acks: dict[int, Request] = {}
        self._in_flight: dict[tuple[str, int], Request] = {}
        self._reoffers: dict[int, tuple[sdp.SessionDescription, str]] = {}
        self._offer_in_2xx: _OfferInAnswer | None = None
        self._awaiting_ack: int | None = None
        self._bye: Request | None = None
        self._max_duration: float | None = None  # armed at the answer, when limited before it

    # Timers ------------------------------------------------------------------------------------------

    @property
    def deadlines(self) -> dict[str, float]:
        """The pending timers by name ("ring", "cancel", "ack", "bye", "max_duration"), as absolute
        deadlines."""
        return dict(self._deadlines)

    def next_timer(self) -> float | None:
        """The earliest pending deadline, or None when nothing is pending."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at `now`, earliest first; early calls do nothing."""
        actions: list[Action] = []
        while self._deadlines:
            name, deadline = min(self._deadlines.items(), key=lambda item: item[1])
            if deadline > now:
                break
            del self._deadlines[name]
            actions += self._fire(name, now)
        return actions

    def _arm(self, name: str, at: float) -> None:
        self._deadlines[name] = at

    def _stop(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "max_duration":
            return [Noted("call_max_duration"), *self.hangup(EndReason.TIMEOUT, now)]
        if name == "ack":
            # §13.3.1.4: no ACK within 64*T1 of our 2xx, so the session is not confirmed: end it with a BYE.
            self._awaiting_ack = None
            return [Noted("ack_timeout"), *self.hangup(EndReason.GENERAL_ERROR, now)]
        if name == "bye" and self._bye is not None:
            bye = self._bye
            if self._in_flight.pop(("BYE", bye.cseq.number), None) is None:
                return []
            return [RequestCompleted(bye, make_response(bye, 408, "Request Timeout"))]
        return []

    # Incoming requests -------------------------------------------------------------------------------

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A request of this call after the INVITE that made it: ACK, BYE, INFO, CANCEL or a re-INVITE."""
        method = request.method
        if method == "ACK":
            return self._receive_ack(request, now)
        if method == "BYE":
            return self._receive_bye(request, now)
        if method == "INFO":
            return self._receive_info(request)
        if method == "INVITE":
            return self._receive_reinvite(request, now)
        if method == "CANCEL":
            return self._receive_cancel(request, now)
        raise CallStateError(f"a call does not take {method}; answer it outside the call")

    def _in_dialog(self, request: Request) -> Respond | None:
        """The refusal of a request that is not the next one of this live dialog (§12.2.2), or None."""
        if self.dialog is None or not self.call.active:
            return Respond(request, make_response(request, 481))
        try:
            in_order = self.dialog.receive_request(request)
        except DialogError:
            return Respond(request, make_response(request, 481))
        if not in_order:
            return Respond(request, make_response(request, 500, "Server Internal Error - CSeq out of order"))
        return None

    def _receive_ack(self, ack: Request, now: float) -> list[Action]:
        if self.dialog is None or DialogKey.for_incoming_request(ack) != self.dialog.key:
            return []
        number = ack.cseq.number
        if self._awaiting_ack != number:
            return []  # a retransmitted ACK, or one for a 2xx acknowledged long ago
        self._awaiting_ack = None
        self._stop("ack")
        pending, self._offer_in_2xx = self._offer_in_2xx, None
        if pending is None or pending.invite_cseq != number or not ack.body or not self.call.active:
            return []
        try:
            media = sdp.apply_answer(pending.offer, sdp.SessionDescription.parse(ack.body))
        except (sdp.SdpError, sdp.NoCommonCodec) as exc:
            return [
                Noted("ack_sdp_rejected", (("reason", repr(str(exc))),)),
                *self.hangup(EndReason.GENERAL_ERROR, now),
            ]
        if pending.announce:
            return self._media_changed(media, media.direction)
        self.media = media
        return [ConfigureMedia(media)]

    def _receive_bye(self, bye: Request, now: float) -> list[Action]:
        refusal = self._in_dialog(bye)
        if refusal is not None:
            return [refusal]
        reason = EndReason.CALLER_HANGUP if self.direction is Direction.INBOUND else EndReason.CALLEE_HANGUP
        return [Respond(bye, make_response(bye, 200)), *self._end(reason, now)]

    def _receive_info(self, info: Request) -> list[Action]:
        refusal = self._in_dialog(info)
        if refusal is not None:
            return [refusal]
        digit = parse_dtmf_info(info.content_type, info.body)
        if info.content_type in DTMF_CONTENT_TYPES and digit is None:
            return [Respond(info, make_response(info, 400, "Bad Request - no valid Signal in DTMF body"))]
        if digit is None and info.body:
            return [Respond(info, make_response(info, 415))]
        actions: list[Action] = [Respond(info, make_response(info, 200))]
        if digit is not None:
            actions.append(PressDetected(digit))
        return actions

    def _receive_reinvite(self, invite: Request, now: float) -> list[Action]:
        refusal = self._in_dialog(invite)
        if refusal is not None:
            return [refusal]
        assert self.dialog is not None
        self.dialog.update_target(invite)
        actions: list[Action] = []
        if not invite.body:
            # An offerless re-INVITE asks us to offer; the answer comes in the ACK (§14.2, §13.2.1).
            offer = self._new_offer("sendrecv")
            self._offer_in_2xx = _OfferInAnswer(invite.cseq.number, offer, announce=True)
            body = offer.serialize()
        else:
            try:
                offer = sdp.SessionDescription.parse(invite.body)
            except sdp.SdpError as exc:
                return [Respond(invite, make_response(invite, 400, f"Bad Request - {exc}"[:120]))]
            try:
                answer, media = self._negotiate(offer, version=self._sdp_version + 1)
            except sdp.NoCommonCodec:
                return [Respond(invite, make_response(invite, 488))]
            self._sdp_version += 1
            actions += self._media_changed(media, media.direction)
            body = answer.serialize()
        response = make_response(invite, 200, body=body, content_type="application/sdp")
        response.headers.set("Contact", self.local.contact)
        actions.append(Respond(invite, response))
        self._expect_ack(invite, now)
        return actions

    def _receive_cancel(self, cancel: Request, now: float) -> list[Action]:
        return [Respond(cancel, make_response(cancel, 481))]

    def _expect_ack(self, invite: Request, now: float) -> None:
        self._awaiting_ack = invite.cseq.number
        self._arm("ack", now + 64 * self.timer_config.t1)

    # Incoming responses ------------------------------------------------------------------------------

    def receive_response(self, response: Response, now: float) -> list[Action]:
        """A response to a request this core sent: provisional, final, or a retransmitted 2xx to an INVITE."""
        method, number = response.cseq.method, response.cseq.number
        request = self._in_flight.get((method, number))
        if request is None:
            if method == "INVITE" and 200 <= response.status < 300:
                return self._ack_again(response)
            return []
        if response.status < 200:
            return []
        del self._in_flight[(method, number)]
        actions: list[Action] = []
        if method == "INVITE":
            actions += self._reinvite_answered(request, response, now)
        if request is self._bye:
            self._stop("bye")
        actions.append(RequestCompleted(request, response))
        return actions

    def _ack_again(self, response: Response) -> list[Action]:
        """§13.2.2.4: every retransmission of a 2xx we acknowledged gets the same ACK again."""
        ack = self._acks.get(response.cseq.number)
        if ack is None or self.dialog is None or response.to.tag != self.dialog.remote_tag:
            return []
        return [SendAck(ack)]

    def _reinvite_answered(self, reinvite: Request, response: Response, now: float) -> list[Action]:
        offered = self._reoffers.pop(reinvite.cseq.number, None)
        if not 200 <= response.status < 300 or self.dialog is None:
            return []
        self.dialog.update_target(response)
        ack = self.dialog.create_ack(reinvite.cseq.number)
        self._acks[reinvite.cseq.number] = ack
        actions: list[Action] = [SendAck(ack)]
        if offered is None or not response.body or not self.call.active:
            return actions
        offer, direction = offered
        try:
            media = sdp.apply_answer(offer, sdp.SessionDescription.parse(response.body))
        except (sdp.SdpError, sdp.NoCommonCodec) as exc:
            return [*actions, Noted("answer_sdp_rejected", (("reason", repr(str(exc))),))]
        return actions + self._media_changed(media, direction)

    # Operations --------------------------------------------------------------------------------------

    def hangup(self, reason: EndReason, now: float) -> list[Action]:
        """End the call: BYE once answered; before that a CANCEL (outbound) or a 480 (inbound)."""
        if not self.call.active:
            return []
        if self.call.state is not CallState.ANSWERED:
            return self._hang_up_unanswered(reason, now)
        return self._end(reason, now) + self._send_bye(now)

    def limit_duration(self, seconds: float, now: float) -> list[Action]:
        """End the call with reason TIMEOUT `seconds` from now, or from its answer when it is not answered
        yet (a callout's maxDuration counts from the answer, a bridge's from the bridging). A new limit
        replaces the one before."""
        if not self.call.active:
            return []
        if self.call.state is CallState.ANSWERED:
            self._arm("max_duration", now + seconds)
        else:
            self._max_duration = seconds
        return []

    def request(
        self,
        method: str,
        now: float,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Headers | None = None,
    ) -> list[Action]:
        """Send an in-dialog request; its final response comes back as `RequestCompleted`."""
        self._require_dialog(method)
        assert self.dialog is not None
        request = self.dialog.create_request(method, headers=headers, body=body, content_type=content_type)
        return self._send_in_dialog(request)

    def reoffer(self, direction: str, now: float) -> list[Action]:
        """Hold (`sendonly`, `inactive`) or resume (`sendrecv`) by a re-INVITE with a new offer (RFC 3264 §8.4)."""
        self._require_dialog("INVITE")
        assert self.dialog is not None
        offer = self._new_offer(direction)
        reinvite = self.dialog.create_request(
            "INVITE", body=offer.serialize(), content_type="application/sdp"
        )
        self._reoffers[reinvite.cseq.number] = (offer, direction)
        return self._send_in_dialog(reinvite)

    def redirect(self, contact: str, now: float) -> list[Action]:
        """Send the caller elsewhere before answering: 302 with `contact` (§21.3.3). In a cluster the SIP
        front follows it itself, so the caller's call goes on at the node the Contact names."""
        if not self.call.active or self.call.state is CallState.ANSWERED:
            return []
        response = make_response(self.invite, 302, "Moved Temporarily", to_tag=self.local_tag)
        response.headers.set("Contact", contact)
        return [
            Respond(self.invite, response),
            *self._end(EndReason.NONE, now, result=CallResult.FAILED, sip_status=302),
        ]

    def _hang_up_unanswered(self, reason: EndReason, now: float) -> list[Action]:
        raise NotImplementedError

    def _require_dialog(self, method: str) -> None:
        if self.dialog is None:
            raise CallStateError(f"cannot send {method}: call {self.call.call_id} has no dialog yet")
        if not self.call.active:
            raise CallStateError(f"cannot send {method}: call {self.call.call_id} has ended")

    def _send_in_dialog(self, request: Request) -> list[Action]:
        self._in_flight[(request.method, request.cseq.number)] = request
        return [SendRequest(request, in_dialog=True)]

    def _send_bye(self, now: float) -> list[Action]:
        assert self.dialog is not None
        self._bye = self.dialog.create_request("BYE")
        self._arm("bye", now + 64 * self.timer_config.t1)
        return self._send_in_dialog(self._bye)

    def _end(
        self,
        reason: EndReason,
        now: float,
        *,
        result: CallResult | None = None,
        sip_status: int | None = None,
    ) -> list[Action]:
        if not self.call.ended(now, reason, result=result, sip_status=sip_status):
            return []
        self._awaiting_ack = None
        self._stop("ring", "cancel", "ack", "max_duration")
        assert self.call.result is not None
        return [Ended(reason, self.call.result, sip_status)]

    def _start_limit(self, now: float) -> None:
        if self._max_duration is not None:
            self._arm("max_duration", now + self._max_duration)

    def _media_changed(self, media: sdp.NegotiatedMedia, direction: str) -> list[Action]:
        self.media = media
        self.call.on_hold = direction != "sendrecv"
        return [ConfigureMedia(media), MediaUpdated(direction, self.call.on_hold)]

    def _new_offer(self, direction: str) -> sdp.SessionDescription:
        self._sdp_version += 1
        local = self.local
        return sdp.build_offer(
            local.address,
            local.media_port,
            codecs=local.codecs,
            telephone_event_pt=TELEPHONE_EVENT_PT if local.telephone_event else None,
            direction=direction,
            session_id=self._sdp_session_id,
            version=self._sdp_version,
        )

    def _negotiate(
        self, offer: sdp.SessionDescription, version: int
    ) -> tuple[sdp.SessionDescription, sdp.NegotiatedMedia]:
        local = self.local
        return sdp.negotiate(
            offer,
            local.address,
            local.media_port,
            supported=local.codecs,
            telephone_event=local.telephone_event,
            session_id=self._sdp_session_id,
            version=version,
        )


class InboundCall(_CallCore):
    """The UAS side of a call placed to us (§13.3): screen the INVITE, ring, answer or reject, take a CANCEL.

    `start` takes the INVITE: 100 at once, then 415 (a body that is not SDP), 400 (SDP that does not parse)
    or 488 (no codec in common) end it there as `Declined`; otherwise the call waits for `ringing`, `answer`
    or `reject`. After our 2xx the core waits 64*T1 for the ACK, then gives up with a BYE (§13.3.1.4).
    """

    direction = Direction.INBOUND

    def __init__(
        self, invite: Request, call: Call, local: LocalEnd, *, timers: TimerConfig | None = None
    ) -> None:
        super().__init__(call, invite, local, timers)
        self.local_tag = new_tag()
        self.declined = False
        self._answer: sdp.SessionDescription | None = None

    def start(self, now: float) -> list[Action]:
        invite = self.invite
        actions: list[Action] = [Respond(invite, make_response(invite, 100))]
        if invite.body and invite.content_type != "application/sdp":
            return actions + self._decline(415, "unsupported_content_type", now)
        if invite.body:
            try:
                offer = sdp.SessionDescription.parse(invite.body)
            except sdp.SdpError as exc:
                return actions + self._decline(400, "bad_sdp", now, f"Bad Request - {exc}"[:120])
            try:
                self._answer, self.media = self._negotiate(offer, version=0)
            except sdp.NoCommonCodec:
                return actions + self._decline(488, "no_common_codec", now)
        return actions

    def ringing(self, now: float) -> list[Action]:
        self.call.ringing()
        if self.call.state is CallState.ANSWERED:
            return []
        return [Respond(self.invite, make_response(self.invite, 180, to_tag=self.local_tag))]

    def answer(self, now: float) -> list[Action]:
        """Answer with our SDP answer, or with an offer when the INVITE had none (its answer comes in the ACK)."""
        if not self.call.active:
            return []
        invite = self.invite
        dialog = Dialog.from_uas_request(invite, self.local_tag, self.local.contact, confirmed=True)
        self.call.answered(now)
        self._start_limit(now)
        self.dialog = dialog
        actions: list[Action] = []
        if self._answer is not None and self.media is not None:
            body = self._answer.serialize()
            actions.append(ConfigureMedia(self.media))
        else:
            offer = self._new_offer("sendrecv")
            self._offer_in_2xx = _OfferInAnswer(invite.cseq.number, offer, announce=False)
            body = offer.serialize()
        response = make_response(
            invite, 200, to_tag=self.local_tag, body=body, content_type="application/sdp"
        )
        response.headers.set("Contact", self.local.contact)
        response.headers.set("Allow", self.local.allow)
        actions += [Respond(invite, response), Answered()]
        self._expect_ack(invite, now)
        return actions

    def reject(self, status: int, reason: EndReason, now: float) -> list[Action]:
        """Refuse the call with `status`; an answered call can no longer be refused, so it is hung up."""
        if not self.call.active:
            return []
        if self.call.state is CallState.ANSWERED:
            return self.hangup(reason, now)
        result, _ = outcome_for_status(status)
        response = make_response(self.invite, status, to_tag=self.local_tag)
        return [Respond(self.invite, response), *self._end(reason, now, result=result, sip_status=status)]

    def _hang_up_unanswered(self, reason: EndReason, now: float) -> list[Action]:
        return self.reject(480, reason, now)

    def _receive_cancel(self, cancel: Request, now: float) -> list[Action]:
        invite = self.invite
        ours = cancel.cseq.number == invite.cseq.number and cancel.from_.tag == invite.from_.tag
        if ours and self.call.state is CallState.ANSWERED:
            # The CANCEL crossed our 2xx: it changes nothing, but it matches the INVITE's transaction, which
            # lives on in Accepted for 64*T1 after the 2xx (RFC 6026), so it gets its 200 (§9.2); later, 481.
            answered_at = now if self.call.answered_at is None else self.call.answered_at
            status = 200 if now - answered_at <= 64 * self.timer_config.t1 else 481
            return [Respond(cancel, make_response(cancel, status))]
        if not ours or not self.call.active:
            # Ended, there is nothing left to cancel (§9.2).
            return [Respond(cancel, make_response(cancel, 481))]
        return [
            Respond(cancel, make_response(cancel, 200)),
            Respond(invite, make_response(invite, 487, to_tag=self.local_tag)),
            *self._end(EndReason.CANCEL, now, result=CallResult.NOANSWER, sip_status=487),
        ]

    def _decline(self, status: int, why: str, now: float, phrase: str | None = None) -> list[Action]:
        self.declined = True
        self.call.ended(now, EndReason.GENERAL_ERROR, result=CallResult.FAILED, sip_status=status)
        response = make_response(self.invite, status, phrase, to_tag=self.local_tag)
        return [Respond(self.invite, response), Declined(status, why)]


class OutboundCall(_CallCore):
    """The UAC side of a call we place (§13.2): the INVITE, one digest retry, ring timeout, CANCEL, the ACK.

    The ring timeout sends a CANCEL; after a CANCEL (ours or the timeout's) the core waits 64*T1 for the
    INVITE's final response, then gives up with a 408. A 2xx that crosses our CANCEL wins (§9.1): it is ACKed
    and the call ended at once with a BYE.
    """

    direction = Direction.OUTBOUND

    def __init__(
        self,
        call: Call,
        request_uri: SipUri | str,
        local: LocalEnd,
        *,
        from_user: str,
        ring_timeout: float = 60.0,
        direction: str = "sendrecv",
        credentials: tuple[str, str] | None = None,
        timers: TimerConfig | None = None,
    ) -> None:
        self.local_tag = new_tag()
        headers = Headers()
        headers.add("From", f"<sip:{from_user}@{local.address}>;tag={self.local_tag}")
        headers.add("To", f"<{request_uri}>")
        headers.add("Call-ID", f"{secrets.token_hex(12)}@{local.address}")
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", local.contact)
        headers.add("Allow", local.allow)
        headers.add("Content-Type", "application/sdp")
        super().__init__(call, Request("INVITE", request_uri, headers), local, timers)
        self.ring_timeout = ring_timeout
        self.credentials = credentials
        self._offer = self._new_offer(direction)
        self.invite.body = self._offer.serialize()
        self._authenticated = False
        self._final: Response | None = None
        self._cancel_reason: EndReason | None = None

    def start(self, now: float) -> list[Action]:
        self._arm("ring", now + self.ring_timeout)
        return [SendRequest(self.invite, in_dialog=False)]

    def cancel(self, now: float, reason: EndReason = EndReason.CANCEL) -> list[Action]:
        """Withdraw the INVITE (§9.1); the call ends when its final response comes, or 64*T1 from now."""
        if not self.call.active or self._final is not None or self._cancel_reason is not None:
            return []
        self._cancel_reason = reason
        self._stop("ring")
        self._arm("cancel", now + 64 * self.timer_config.t1)
        return [SendRequest(make_cancel(self.invite), in_dialog=False)]

    def receive_response(self, response: Response, now: float) -> list[Action]:
        if response.cseq.method == "INVITE" and response.cseq.number == self.invite.cseq.number:
            return self._invite_response(response, now)
        return super().receive_response(response, now)

    def _hang_up_unanswered(self, reason: EndReason, now: float) -> list[Action]:
        return self.cancel(now)

    def _fire(self, name: str, now: float) -> list[Action]:
        if name == "ring":
            return [Noted("call_ring_timeout"), *self.cancel(now, EndReason.TIMEOUT)]
        if name == "cancel":
            return self._end(
                self._cancel_reason or EndReason.CANCEL, now, result=CallResult.NOANSWER, sip_status=408
            )
        return super()._fire(name, now)

    def _invite_response(self, response: Response, now: float) -> list[Action]:
        status = response.status
        if status < 200:
            if status > 100 and self.call.active and self._final is None:
                self.call.ringing()
                return [Ringing(status)]
            return []
        if self._final is not None:
            return self._ack_again(response) if status < 300 else []
        if status in (401, 407) and self._may_authenticate():
            self._authenticated = True
            self.invite = self._with_credentials(response)
            return [SendRequest(self.invite, in_dialog=False)]
        self._final = response
        self._stop("ring", "cancel")
        if status < 300:
            return self._accepted(response, now)
        if not self.call.active:
            return []
        if self._cancel_reason is not None:
            return self._end(self._cancel_reason, now, result=CallResult.NOANSWER, sip_status=status)
        result, reason = outcome_for_status(status)
        return [
            Noted("call_refused", (("status", status),)),
            *self._end(reason, now, result=result, sip_status=status),
        ]

    def _accepted(self, response: Response, now: float) -> list[Action]:
        try:
            dialog = Dialog.from_uac_response(self.invite, response)
        except DialogError as exc:
            return [
                Noted("answer_rejected", (("reason", repr(str(exc))),)),
                *self._end(
                    EndReason.GENERAL_ERROR, now, result=CallResult.FAILED, sip_status=response.status
                ),
            ]
        self.dialog = dialog
        ack = dialog.create_ack(self.invite.cseq.number)
        self._acks[self.invite.cseq.number] = ack
        actions: list[Action] = [SendAck(ack)]
        if not self.call.active or self._cancel_reason is not None:
            # The 2xx crossed our CANCEL (or came after we stopped waiting): the far end has a call, so end it.
            reason = self._cancel_reason or EndReason.CANCEL
            return actions + self._end(reason, now, result=CallResult.NOANSWER) + self._send_bye(now)
        try:
            self.media = sdp.apply_answer(self._offer, sdp.SessionDescription.parse(response.body))
        except (sdp.SdpError, sdp.NoCommonCodec) as exc:
            return actions + [
                Noted("answer_sdp_rejected", (("reason", repr(str(exc))),)),
                *self._end(EndReason.GENERAL_ERROR, now, result=CallResult.FAILED),
                *self._send_bye(now),
            ]
        self.call.answered(now)
        self._start_limit(now)
        return actions + [ConfigureMedia(self.media), Answered()]

    def _may_authenticate(self) -> bool:
        return (
            not self._authenticated
            and self.credentials is not None
            and self._cancel_reason is None
            and self.call.active
        )

    def _with_credentials(self, challenge: Response) -> Request:
        """The INVITE again, answering the challenge (§22.2): the next CSeq, a new Via from the sender."""
        assert self.credentials is not None
        username, password = self.credentials
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
        invite = self.invite
        headers = invite.headers.copy()
        headers.remove("Via")
        headers.set("CSeq", f"{invite.cseq.number + 1} INVITE")
        headers.set(
            answer,
            auth.digest_authorization(
                challenge.headers.get_all(header), "INVITE", invite.uri, username, password
            ),
        )
        return Request("INVITE", invite.uri, headers, invite.body)
