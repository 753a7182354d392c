"""Which addresses the server may fetch from on an application's word (tonebridge.netguard), with DNS
replaced by an injected resolver."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from tonebridge.config import parse_config
from tonebridge.netguard import FetchPolicy, FetchRefused, PinnedTransport, blocked_address


def dns(**names: list[str]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise FetchRefused(f"cannot resolve {host!r}")
        return names[host]

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "0.0.0.0",
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert blocked_address(ipaddress.ip_address(address))
    with pytest.raises(FetchRefused):
        FetchPolicy().check(f"http://{'[' + address + ']' if ':' in address else address}/a.wav")


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert not blocked_address(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    assert FetchPolicy().check(f"https://{host}:8443/x") == [ipaddress.ip_address(address)]


def test_a_name_is_refused_when_any_address_it_resolves_to_is_private() -> None:
    policy = FetchPolicy(
        resolver=dns(
            **{
                "evil.example": ["127.0.0.1"],
                "mixed.example": ["93.184.216.34", "10.0.0.1"],
                "ok.example": ["8.8.4.4"],
            }
        )
    )
    with pytest.raises(FetchRefused, match="non-public"):
        policy.check("http://evil.example/a.wav")
    with pytest.raises(FetchRefused, match="non-public"):
        policy.check("http://mixed.example/a.wav")
    with pytest.raises(FetchRefused, match="resolve"):
        policy.check("http://nowhere.example/a.wav")
    assert policy.check("http://ok.example/a.wav") == [ipaddress.ip_address("8.8.4.4")]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a", "gopher://127.0.0.1:25/"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(FetchRefused, match="scheme"):
        FetchPolicy(allow_private=True).check(url)


def test_operator_allowances() -> None:
    config = parse_config('[security]\nfetch_allow = ["127.0.0.0/8", "fd00::/8"]\n')
    policy = FetchPolicy.from_config(config.security)
    policy.check("http://127.0.0.1:9000/a")
    policy.check("http://[fd00::5]/a")
    policy.check("http://[::ffff:127.0.0.1]/a")  # judged by the IPv4 address it carries
    with pytest.raises(FetchRefused):
        policy.check("http://10.0.0.1/a")
    everything = FetchPolicy.from_config(parse_config("[security]\nallow_private_fetch = true\n").security)
    everything.check("http://10.0.0.1/a")


def test_bad_network_is_a_config_error() -> None:
    with pytest.raises(Exception, match="fetch_allow"):
        parse_config('[security]\nfetch_allow = ["not-a-net"]\n')


def test_trusted_callback_urls_skip_the_check_for_callbacks() -> None:
    policy = FetchPolicy(trusted=frozenset({"http://127.0.0.1:9000/cb"}))
    asyncio.run(policy.check_async("http://127.0.0.1:9000/cb"))
    with pytest.raises(FetchRefused):
        asyncio.run(policy.check_async("http://127.0.0.1:9000/other"))


def test_pinned_transport_connects_to_the_checked_address() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    policy = FetchPolicy(resolver=dns(**{"app.example": ["93.184.216.34"], "rebind.example": ["127.0.0.1"]}))
    with httpx.Client(transport=PinnedTransport(policy, httpx.MockTransport(handler))) as client:
        assert client.get("http://app.example/a").status_code == 200
        with pytest.raises(httpx.ConnectError, match="refused"):
            client.get("http://rebind.example/a")
    assert [r.url.host for r in seen] == ["93.184.216.34"]
    assert seen[0].headers["host"] == "app.example"
