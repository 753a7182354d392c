"""The pool of local RTP ports: even ports handed out round-robin from a configured range, RTCP on port + 1.

No sockets: the caller binds, and on failure releases the port and allocates again; the round-robin order
then offers the next port, and a port freed by an ended call is reused as late as possible (stray packets
of the old call are less likely to reach a new one).
"""

from __future__ import annotations


class PortsExhausted(RuntimeError):
    """Every RTP port of the configured range is in use."""


class PortPool:
    def __init__(self, low: int, high: int) -> None:
        # RFC 3550 §11: RTP on an even port, RTCP on the next (odd) one, so both must fit in [low, high].
        if not 0 < low <= high <= 65535:
            raise ValueError(f"invalid RTP port range {low}-{high}")
        first = low + (low % 2)
        self.low = first
        self.high = high
        self._ports = list(range(first, high, 2))  # p + 1 <= high for each p
        if not self._ports:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd port pair")
        self._next = 0  # index in `_ports` where the next search starts
        self._used: set[int] = set()

    @property
    def size(self) -> int:
        """How many RTP/RTCP port pairs the range holds."""
        return len(self._ports)

    @property
    def in_use(self) -> int:
        """How many ports are allocated now."""
        return len(self._used)

    def allocate(self) -> int:
        """The next free even port after the last one handed out; raises `PortsExhausted` when none is free."""
        count = len(self._ports)
        for i in range(count):
            port = self._ports[(self._next + i) % count]
            if port not in self._used:
                self._used.add(port)
                self._next = (self._next + i + 1) % count
                return port
        raise PortsExhausted(f"all {count} RTP port pairs in {self.low}-{self.high} are in use")

    def release(self, port: int) -> None:
        """Give a port back; releasing a port that is not allocated is an error in the caller."""
        try:
            self._used.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated from this pool") from None

    def __contains__(self, port: object) -> bool:
        return port in self._used
