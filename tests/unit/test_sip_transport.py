"""The SIP transport's UDP socket asks for a receive buffer that rides out bursts of new calls."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tonebridge.sip.transport import UDP_RECEIVE_BUFFER, SipTransport


def test_udp_receive_buffer_is_raised_as_far_as_the_kernel_allows() -> None:
    async def buffer() -> int:
        transport = SipTransport("127.0.0.1", 0, lambda message, peer: None)
        await transport.start()
        try:
            return transport._udp.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # type: ignore[union-attr]
        finally:
            await transport.close()

    allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())
    # Linux reports twice what was set (its bookkeeping overhead), capped at twice rmem_max.
    assert asyncio.run(buffer()) >= 2 * min(UDP_RECEIVE_BUFFER, allowed)
