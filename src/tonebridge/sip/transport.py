"""SIP transports: UDP and TCP sockets on one address. The only module of sip/ that owns sockets.

It turns datagrams and stream bytes into parsed messages for the stack, answers what fails to parse with
the SIP error the parser names (or drops and counts garbage), and sends messages back to a `Peer`: for TCP
over the connection the request came in on, opening one when there is none (RFC 3261 §18).

A message that cannot be sent (the TCP connect fails, or the connection is closed or breaks on the write)
is reported to `on_send_error` with its peer and a reason, always from a later turn of the loop, so the
stack can fail the transaction at once (§17.1.4, §17.2.4) instead of waiting for Timer B or F.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tonebridge.sip.message import (
    FramingError,
    Message,
    Request,
    SipParseError,
    StreamFramer,
    error_response,
    parse_message,
)

log = logging.getLogger("tonebridge.sip.transport")

# Connections idle this long are closed; a bound on what silent peers can hold.
TCP_IDLE_SECONDS = 300.0


@dataclass(frozen=True)
class Peer:
    """Where a message came from or goes to."""

    transport: str  # "UDP" or "TCP"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport == "TCP"


@dataclass
class TransportStats:
    counters: Counter[str] = field(default_factory=Counter)

    def count(self, name: str) -> None:
        self.counters[name] += 1


MessageHandler = Callable[[Message, Peer], None]
SendErrorHandler = Callable[[Peer, Message, str], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.owner._received(data, Peer("UDP", addr[0], addr[1]), stream=False)

    def error_received(self, exc: Exception) -> None:
        self.owner.stats.count("udp_errors")


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer("TCP", host, port)
        self.owner._connections[self.peer] = self
        self._rearm()

    def _rearm(self) -> None:
        if self.idle:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(TCP_IDLE_SECONDS, self.close)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self._rearm()
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            self.owner.stats.count("tcp_framing_errors")
            log.warning(
                "event=tcp_framing_error peer=%s:%s reason=%r", self.peer.host, self.peer.port, str(exc)
            )
            self.close()
            return
        for raw in messages:
            self.owner._received(raw, self.peer, stream=True)

    def close(self) -> None:
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle:
            self.idle.cancel()
        if self.peer and self.owner._connections.get(self.peer) is self:
            del self.owner._connections[self.peer]

    def send(self, data: bytes) -> str | None:
        """Write `data`; the reason it could not be written, or None."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return "connection closed"
        transport.write(data)
        # asyncio reports a failed write (reset, broken pipe) by closing the transport, not by raising.
        if transport.is_closing():
            return "connection broke while sending"
        return None


class SipTransport:
    """UDP and TCP listeners on one host:port, delivering parsed messages to `handler`."""

    def __init__(
        self, host: str, port: int, handler: MessageHandler, on_send_error: SendErrorHandler | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.on_send_error = on_send_error
        self.stats = TransportStats()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._connections: dict[Peer, _TcpConnection] = {}
        self._connecting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Bind UDP first; with port 0 the TCP listener takes the same number so both share one address.
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )
        self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp_server = await loop.create_server(lambda: _TcpConnection(self), self.host, self.port)

    @property
    def addresses(self) -> list[str]:
        return [f"sip:{self.host}:{self.port};transport=udp", f"sip:{self.host}:{self.port};transport=tcp"]

    async def close(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._connections.values()):
            connection.close()
        if self._tcp_server:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
        if self._udp:
            self._udp.close()

    def _received(self, data: bytes, peer: Peer, *, stream: bool) -> None:
        self.stats.count("received")
        if not stream and data.strip(b"\r\n\x00 ") == b"":
            self.stats.count("keepalives")  # RFC 5626 CRLF keep-alive
            return
        try:
            message = parse_message(data, stream=stream)
        except SipParseError as exc:
            answer = error_response(exc)
            if answer is None:
                self.stats.count("dropped_garbage")
                log.info(
                    "event=sip_dropped peer=%s:%s/%s reason=%r",
                    peer.host,
                    peer.port,
                    peer.transport,
                    exc.reason,
                )
                return
            self.stats.count("rejected_malformed")
            log.info(
                "event=sip_rejected peer=%s:%s/%s status=%s reason=%r",
                peer.host,
                peer.port,
                peer.transport,
                exc.status,
                exc.reason,
            )
            self.send(answer, peer)
            return
        if isinstance(message, Request):
            self._stamp_received(message, peer)
        try:
            self.handler(message, peer)
        except Exception:  # a fault in one message's handling must never take the listener down
            self.stats.count("handler_errors")
            log.exception("event=sip_handler_error peer=%s:%s", peer.host, peer.port)

    @staticmethod
    def _stamp_received(request: Request, peer: Peer) -> None:
        """RFC 3261 §18.2.1 `received` and RFC 3581 `rport` on the top Via."""
        try:
            via = request.top_via
        except (ValueError, IndexError):
            return
        changed = False
        if via.host != peer.host:
            via.params["received"] = peer.host
            changed = True
        if "rport" in via.params:
            via.params["rport"] = str(peer.port)
            via.params["received"] = peer.host
            changed = True
        if changed:
            values = request.headers.values("Via")
            request.headers.remove("Via")
            request.headers.add("Via", str(via))
            for rest in values[1:]:
                request.headers.add("Via", rest)

    def send(self, message: Message, peer: Peer) -> None:
        data = message.to_bytes()
        self.stats.count("sent")
        if peer.transport == "TCP":
            connection = self._connections.get(peer)
            if connection is None:
                task = asyncio.get_running_loop().create_task(self._connect_and_send(peer, message, data))
                # The loop keeps only a weak reference to a task; a connect in flight must not vanish.
                self._connecting.add(task)
                task.add_done_callback(self._connecting.discard)
                return
            failure = connection.send(data)
            if failure is not None:
                self.stats.count("tcp_send_errors")
                log.warning("event=tcp_send_failed peer=%s:%s reason=%r", peer.host, peer.port, failure)
                # Later, not now: the caller may be in the middle of driving the very transaction to fail.
                asyncio.get_running_loop().call_soon(self._send_failed, peer, message, failure)
            return
        if self._udp is not None:
            self._udp.sendto(data, (peer.host, peer.port))

    async def _connect_and_send(self, peer: Peer, message: Message, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(lambda: _TcpConnection(self), peer.host, peer.port)
        except OSError as exc:
            self.stats.count("tcp_connect_errors")
            log.warning("event=tcp_connect_failed peer=%s:%s reason=%r", peer.host, peer.port, str(exc))
            # asyncio's own wording names the address again; the errno's text is what a reason phrase wants.
            detail = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
            self._send_failed(peer, message, f"connect failed: {detail}")
            return
        # The connection registers under its real peer address; also answer under the requested one.
        self._connections.setdefault(peer, protocol)
        failure = protocol.send(data)
        if failure is not None:
            self.stats.count("tcp_send_errors")
            log.warning("event=tcp_send_failed peer=%s:%s reason=%r", peer.host, peer.port, failure)
            self._send_failed(peer, message, failure)

    def _send_failed(self, peer: Peer, message: Message, reason: str) -> None:
        if self.on_send_error is None:
            return
        try:
            self.on_send_error(peer, message, reason)
        except Exception:  # as in _received: one message's trouble must not take the transport down
            self.stats.count("handler_errors")
            log.exception("event=sip_send_error_handler_failed peer=%s:%s", peer.host, peer.port)

    def response_peer(self, request: Request, peer: Peer) -> Peer:
        """Where responses to `request` go (RFC 3261 §18.2.2, RFC 3581 §4)."""
        if peer.reliable:
            return peer
        try:
            via = request.top_via
        except (ValueError, IndexError):
            return peer
        host = via.params.get("received") or via.host
        rport = via.params.get("rport")
        if rport and rport.isdigit():
            return Peer("UDP", host, int(rport))
        return Peer("UDP", host, via.port or 5060)
