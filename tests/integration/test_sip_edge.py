"""The SIP edge: what the stack answers or fails by itself, before the call engine could trip over it.

An INVITE whose Contact cannot make a dialog is refused with a 400 at the stack (RFC 3261 §8.1.1.8), with
nothing allocated; a TCP peer that cannot be reached fails the transaction at once (§17.1.4, §8.1.3.1),
not after Timer B's 32 s.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from harness import HOST, free_port
from sipp import run_uac

from tonebridge.sip.message import Headers, Request, Response, parse_message
from tonebridge.sip.transport import Peer

pytestmark = pytest.mark.integration


def metrics(server) -> dict:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(
        f"http://{HOST}:{server.http_port}/tonebridge/v1/metrics", timeout=5
    ) as reply:
        return json.loads(reply.read())


# INVITE without a usable Contact ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_invite_without_contact_gets_400_and_allocates_nothing(
    start_server, tmp_path: Path, transport: str
) -> None:
    server = start_server()
    stats = run_uac(
        tmp_path,
        server.sip_uri_host,
        scenario="uac_invite_no_contact.xml",
        calls=1,
        transport=transport,
        timeout=10,
    )
    assert stats.exit_code == 0, stats.output[-3000:]
    assert (stats.successful, stats.failed, stats.unexpected) == (1, 0, 0)
    server.process.wait_for(
        r"event=sip_rejected .*method=INVITE .*status=400 reason='Missing Contact'", timeout=5
    )
    current = metrics(server)
    assert current["media"]["portsInUse"] == 0
    assert current["calls"]["total"] == 0
    assert current["sip"]["rejected_contact"] == 1
    assert "event=call_incoming" not in server.process.output
    assert "Traceback" not in server.process.output


def _invite(local_port: int, contacts: list[str], branch: str, call_id: str) -> bytes:
    lines = [
        f"INVITE sip:demo@{HOST} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch}",
        f"From: <sip:caller@{HOST}:{local_port}>;tag=edge{local_port}",
        f"To: <sip:demo@{HOST}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        *(f"Contact: {value}" for value in contacts),
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _ack(local_port: int, branch: str, call_id: str, to: str) -> bytes:
    lines = [
        f"ACK sip:demo@{HOST} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch}",
        f"From: <sip:caller@{HOST}:{local_port}>;tag=edge{local_port}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        "CSeq: 1 ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _final_response(sock: socket.socket) -> bytes:
    """The next final response's bytes; provisional ones are skipped. The socket's timeout is the deadline."""
    while True:
        data, _ = sock.recvfrom(65535)
        response = parse_message(data)
        assert isinstance(response, Response)
        if response.status >= 200:
            return data


# (Contact header values, the reason phrase of the 400). The last is refused by the parser in the
# transport, statelessly; the others pass it and are refused by the stack's server transaction.
CONTACT_CASES = [
    (["<sip:caller@127.0.0.1:5999>", "<sip:caller@127.0.0.1:5998>"], "Bad Request - More Than One Contact"),
    (["<sip:caller@127.0.0.1:5999>, <sip:caller@127.0.0.1:5998>"], "Bad Request - More Than One Contact"),
    (["*"], "Bad Request - Contact * Outside REGISTER"),
    (["<tel:+15550001111>"], "Bad Request - Contact Is Not a SIP URI"),
    (["<sip:caller@>"], "Bad Request - malformed Contact header"),
]


def test_unusable_contacts_get_400_and_retransmissions_the_same_answer(start_server) -> None:
    server = start_server()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        sock.connect((HOST, server.sip_port))
        local_port = sock.getsockname()[1]
        for contacts, reason in CONTACT_CASES:
            branch, call_id = f"z9hG4bK{secrets.token_hex(8)}", secrets.token_hex(8)
            invite = _invite(local_port, contacts, branch, call_id)
            sock.send(invite)
            first = _final_response(sock)
            response = parse_message(first)
            assert isinstance(response, Response)
            assert (response.status, response.reason[: len(reason)]) == (400, reason), contacts
            assert response.to.tag, contacts
            # A retransmitted INVITE gets the very same 400 (the same To tag), not a fresh answer.
            sock.send(invite)
            assert _final_response(sock) == first, contacts
            sock.send(_ack(local_port, branch, call_id, response.headers.get("To") or ""))
    current = metrics(server)
    assert current["media"]["portsInUse"] == 0
    assert current["calls"]["total"] == 0
    assert current["sip"]["rejected_contact"] == len(CONTACT_CASES) - 1
    assert current["sip"]["rejected_malformed"] == 2  # the parser keeps no state: each copy is refused anew
    assert "event=call_incoming" not in server.process.output
    assert "Traceback" not in server.process.output


# Transport errors ---------------------------------------------------------------------------------------


def test_outbound_invite_to_a_closed_tcp_port_fails_at_once(in_process_server) -> None:
    from tonebridge.calls.call import CallResult, EndReason
    from tonebridge.calls.session import Destination

    server = in_process_server()
    engine = server.engine
    closed_port = free_port()  # bound and released: nobody listens there

    async def call():  # type: ignore[no-untyped-def]
        session = await engine.originate(Destination("sip", f"sip:x@{HOST}:{closed_port};transport=tcp"))
        started = time.monotonic()
        # Timer B would end it after 32 s; a refused connect must end it well within this deadline.
        await asyncio.wait_for(session.ended_event.wait(), 5)
        return session, time.monotonic() - started

    session, elapsed = server.run(call(), timeout=15)
    assert elapsed < 5
    assert session.call.result is CallResult.FAILED
    assert session.call.reason is EndReason.GENERAL_ERROR
    assert session.call.sip_status == 503
    stack = server.server.stack
    assert stack.transport.stats.counters["tcp_connect_errors"] == 1
    assert len(stack.table) == 0  # the client transaction ended with the error, not by a timer
    assert engine.ports.in_use == 0


def _options(uri: str, local: str) -> Request:
    return Request(
        "OPTIONS",
        uri,
        Headers(
            [
                ("From", f"<sip:probe@{local}>;tag={secrets.token_hex(4)}"),
                ("To", f"<{uri}>"),
                ("Call-ID", secrets.token_hex(8)),
                ("CSeq", "1 OPTIONS"),
                ("Content-Length", "0"),
            ]
        ),
    )


def test_request_on_a_broken_tcp_connection_fails_at_once(in_process_server) -> None:
    server = in_process_server()
    stack = server.server.stack
    with socket.create_connection((HOST, stack.port), timeout=5) as client:
        client_port = client.getsockname()[1]
        probe = _options(f"sip:x@{HOST}:{stack.port};transport=tcp", f"{HOST}:{client_port}")
        probe.headers.prepend("Via", f"SIP/2.0/TCP {HOST}:{client_port};branch=z9hG4bK{secrets.token_hex(8)}")
        probe.headers.set("Max-Forwards", "70")
        client.sendall(probe.to_bytes())
        # The answer proves the server holds the connection, filed under the client's address.
        assert client.recv(65535).startswith(b"SIP/2.0 200")
        peer = Peer("TCP", HOST, client_port)

        async def send_on_broken_connection() -> Response:
            # A connection that broke (reset, failed write) is closing but not yet forgotten: the state
            # abort() leaves it in until the loop's next turn, when asyncio reports it lost.
            stack.transport._connections[peer].transport.abort()
            request = _options(f"sip:probe@{HOST}:{client_port};transport=tcp", f"{HOST}:{stack.port}")
            return await asyncio.wait_for(stack.send_request(request, peer), 5)

        response = server.run(send_on_broken_connection(), timeout=15)
    assert response.status == 503
    assert response.reason.startswith("Service Unavailable - connection closed")
    assert stack.transport.stats.counters["tcp_send_errors"] == 1
