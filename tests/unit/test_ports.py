"""The RTP port pool: even ports, round-robin, exhaustion and release."""

from __future__ import annotations

import pytest

from tonebridge.media.ports import PortPool, PortsExhausted


def test_even_ports_round_robin() -> None:
    pool = PortPool(20000, 20009)
    ports = [pool.allocate() for _ in range(5)]
    assert ports == [20000, 20002, 20004, 20006, 20008]
    assert pool.in_use == 5 and pool.size == 5
    with pytest.raises(PortsExhausted, match="all 5"):
        pool.allocate()
    pool.release(20002)
    assert pool.allocate() == 20002
    assert 20002 in pool


def test_released_ports_are_reused_last() -> None:
    pool = PortPool(30000, 30011)
    a = pool.allocate()
    pool.release(a)
    assert pool.allocate() == 30002  # not straight back to the port just freed
    b = pool.allocate()
    pool.release(b)
    assert [pool.allocate() for _ in range(3)] == [30006, 30008, 30010]
    assert pool.allocate() == 30000  # wrapped around


def test_bind_failure_advances() -> None:
    pool = PortPool(40000, 40005)
    port = pool.allocate()
    pool.release(port)  # the caller could not bind it
    assert pool.allocate() != port
    assert pool.in_use == 1


def test_odd_bounds_keep_rtcp_inside_the_range() -> None:
    pool = PortPool(10001, 10006)
    ports = []
    while True:
        try:
            ports.append(pool.allocate())
        except PortsExhausted:
            break
    assert ports == [10002, 10004]  # 10006 + 1 would fall outside the range
    assert all(p % 2 == 0 and p + 1 <= 10006 for p in ports)


def test_invalid_ranges_and_releases() -> None:
    with pytest.raises(ValueError, match="invalid"):
        PortPool(5000, 4000)
    with pytest.raises(ValueError, match="no even/odd port pair"):
        PortPool(5000, 5000)
    pool = PortPool(5000, 5010)
    with pytest.raises(ValueError, match="not allocated"):
        pool.release(5002)
