"""A UDP impairment relay between one SIP/RTP peer and the server, for the tests that need a bad network on a
kernel without `netem`: seeded loss (independent or in Gilbert-Elliott bursts), delay with jitter (which
reorders), duplication, and counters of what it did to each packet.

The peer dials the relay's SIP port. SIP passes through unimpaired; the relay only rewrites the `m=audio`
port of each SDP body, so that both ends send their RTP (and RTCP, port + 1) to the relay: the peer to
`peer_side`, the server to `server_side`. The peer's Via carries `rport`, so the server answers the relay,
which hands the answer back to the peer; in-dialog requests go straight to each side's Contact, which is
harmless since no SDP travels in them here. Media from the peer goes to the port of the server's SDP and
media from the server goes to the source of the peer's packets, each through its direction's impairment.

One thread owns every socket: it reads what is ready and sends what is due, so the relay's own timing
error is that thread's wake-up latency, well under a millisecond on loopback.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
UP = "up"  # peer -> server
DOWN = "down"  # server -> peer


@dataclass(frozen=True)
class Impairment:
    """What one direction suffers. `loss` is the long-run fraction lost; `burst` is the mean length of a
    run of lost packets (None: each packet is lost independently). `delay_ms` is added to every packet and
    `jitter_ms` spreads a uniform extra delay over [0, jitter_ms], which reorders packets sent closer
    together than that. `duplicate` is the chance that a packet is also sent a second time, delayed on its
    own draw."""

    loss: float = 0.0
    burst: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.duplicate <= 1.0:
            raise ValueError("loss must be in [0, 1) and duplicate in [0, 1]")
        # A Gilbert-Elliott chain whose mean bad run is `burst` packets cannot have runs shorter than
        # independent loss already gives.
        if self.burst is not None and self.burst < 1.0 / (1.0 - self.loss):
            raise ValueError(f"burst must be at least {1.0 / (1.0 - self.loss):.3f} packets at this loss")


@dataclass
class Counters:
    """What one direction's impairment did, counted per packet (RTP and RTCP together)."""

    received: int = 0
    lost: int = 0
    duplicated: int = 0
    sent: int = 0
    reordered: int = 0  # sent after a packet that arrived later than it
    longest_burst: int = 0
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each RTP packet received

    def rate(self, start: float, end: float) -> float:
        """RTP packets per second that arrived at the relay in [start, end)."""
        return sum(1 for t in self.arrivals if start <= t < end) / (end - start)


class Channel:
    """One direction's seeded impairment: a loss chain and delay draws taken per packet, in arrival order,
    so that a seed replays the same decisions for the same packet sequence."""

    def __init__(self, impairment: Impairment, seed: str) -> None:
        self.impairment = impairment
        self.rng = random.Random(seed)
        self.bad = False
        self.run = 0
        self.counters = Counters()
        self.arrived = 0
        self.highest_sent = -1

    def lose(self) -> bool:
        imp = self.impairment
        if imp.burst is None:
            lost = self.rng.random() < imp.loss
        else:
            # Bad state loses every packet; leaving it has probability 1/burst, entering it the rate that
            # makes the stationary share of bad packets equal `loss`.
            leave = 1.0 / imp.burst
            enter = imp.loss * leave / (1.0 - imp.loss)
            self.bad = self.rng.random() >= leave if self.bad else self.rng.random() < enter
            lost = self.bad
        self.run = self.run + 1 if lost else 0
        self.counters.longest_burst = max(self.counters.longest_burst, self.run)
        return lost

    def delays(self) -> list[float]:
        """The delays (seconds) of the copies to send of the packet that just arrived: none when lost."""
        imp = self.impairment
        self.counters.received += 1
        # Every draw is made whatever the outcome, so one packet's fate never shifts the next one's draws.
        lost = self.lose()
        copies = 2 if self.rng.random() < imp.duplicate else 1
        draws = [(imp.delay_ms + self.rng.uniform(0.0, imp.jitter_ms)) / 1000.0 for _ in range(2)]
        if lost:
            self.counters.lost += 1
            return []
        if copies == 2:
            self.counters.duplicated += 1
        return draws[:copies]

    def sent(self, index: int) -> None:
        self.counters.sent += 1
        if index < self.highest_sent:
            self.counters.reordered += 1
        self.highest_sent = max(self.highest_sent, index)


def _port_pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets bound on an even port and the next one (RTP, RTCP)."""
    for _ in range(200):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
        probe.close()
        port -= port % 2
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((HOST, port))
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise RuntimeError("no free even UDP port pair")


_AUDIO = re.compile(rb"^m=audio (\d+)", re.MULTILINE)
_LENGTH = re.compile(rb"^(Content-Length|l)[ \t]*:[ \t]*\d+", re.MULTILINE | re.IGNORECASE)


def _rewrite_sdp(message: bytes, port: int) -> tuple[bytes, int | None]:
    """The SIP message with its SDP's audio port replaced by `port`, and the port it named (None: no SDP)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    found = _AUDIO.search(body)
    if not sep or found is None:
        return message, None
    body = body[: found.start(1)] + str(port).encode() + body[found.end(1) :]
    head = _LENGTH.sub(lambda m: m.group(1) + b": " + str(len(body)).encode(), head, count=1)
    return head + sep + body, int(found.group(1))


class ImpairmentRelay:
    """The relay for one peer's call to the server at `server_sip` (its SIP port on 127.0.0.1)."""

    def __init__(
        self, server_sip: int, *, up: Impairment | None = None, down: Impairment | None = None, seed: int = 0
    ) -> None:
        self.server_sip = (HOST, server_sip)
        self.channels = {
            UP: Channel(up or Impairment(), f"{seed}-up"),
            DOWN: Channel(down or Impairment(), f"{seed}-down"),
        }
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.peer_rtp, self.peer_rtcp = _port_pair()
        self.server_rtp, self.server_rtcp = _port_pair()
        self.peer_sip: tuple[str, int] | None = None
        self.peer_media: tuple[str, int] | None = None  # from the peer's SDP, until its packets arrive
        self.server_media: tuple[str, int] | None = None  # from the server's SDP
        self.answered = threading.Event()  # the server's SDP has been seen: media can flow
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int], str, int]] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for sock in (self.sip, self.peer_rtp, self.peer_rtcp, self.server_rtp, self.server_rtcp):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="impairment-relay", daemon=True)
        self._thread.start()

    @property
    def sip_port(self) -> int:
        return self.sip.getsockname()[1]

    @property
    def up(self) -> Counters:
        return self.channels[UP].counters

    @property
    def down(self) -> Counters:
        return self.channels[DOWN].counters

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._selector.close()
        for sock in (self.sip, self.peer_rtp, self.peer_rtcp, self.server_rtp, self.server_rtcp):
            sock.close()

    def __enter__(self) -> ImpairmentRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The relay's thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, sock, data, dest, direction, index = heapq.heappop(self._queue)
                try:
                    sock.sendto(data, dest)
                except OSError:
                    pass  # the far end has gone (ICMP port unreachable): the packet is lost, as on a network
                self.channels[direction].sent(index)
            timeout = min(0.05, self._queue[0][0] - now) if self._queue else 0.05
            for key, _ in self._selector.select(max(0.0, timeout)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                while True:
                    try:
                        data, source = sock.recvfrom(65536)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    self._arrived(sock, data, source)

    def _arrived(self, sock: socket.socket, data: bytes, source: tuple[str, int]) -> None:
        if sock is self.sip:
            self._sip(data, source)
            return
        rtcp = sock in (self.peer_rtcp, self.server_rtcp)
        if sock in (self.peer_rtp, self.peer_rtcp):
            if not rtcp:
                self.peer_media = source  # symmetric RTP: answer where the peer sends from
            if self.server_media is None:
                return
            host, port = self.server_media
            self._schedule(UP, self.server_rtcp if rtcp else self.server_rtp, data, (host, port + rtcp), rtcp)
        else:
            if self.peer_media is None:
                return
            host, port = self.peer_media
            self._schedule(DOWN, self.peer_rtcp if rtcp else self.peer_rtp, data, (host, port + rtcp), rtcp)

    def _schedule(
        self, direction: str, out: socket.socket, data: bytes, dest: tuple[str, int], rtcp: bool
    ) -> None:
        channel = self.channels[direction]
        now = time.monotonic()
        if not rtcp:
            channel.counters.arrivals.append(now)
        index = channel.arrived
        channel.arrived += 1
        for delay in channel.delays():
            heapq.heappush(self._queue, (now + delay, next(self._order), out, data, dest, direction, index))

    def _sip(self, data: bytes, source: tuple[str, int]) -> None:
        if source == self.server_sip:
            data, port = _rewrite_sdp(data, self.peer_rtp.getsockname()[1])
            if port is not None:
                self.server_media = (HOST, port)
                self.answered.set()
            if self.peer_sip is not None:
                self.sip.sendto(data, self.peer_sip)
            return
        self.peer_sip = source
        data, port = _rewrite_sdp(data, self.server_rtp.getsockname()[1])
        if port is not None and self.peer_media is None:
            self.peer_media = (HOST, port)
        self.sip.sendto(data, self.server_sip)
