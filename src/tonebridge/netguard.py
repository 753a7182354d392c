"""Where the server may fetch from on an application's word: `#href[...]` prompts and callback URLs that
arrive at run time (ICE/ACE answers, customCallout URLs, the callback URL API).

A URL is fetched over http(s) only, and only when every address its host resolves to is public: loopback,
link-local, private (RFC 1918, CGNAT, ULA), unspecified, multicast and reserved addresses are refused unless
the operator allows them (`[security]` in the config, docs/operations.md "Security"). IPv4-mapped and NAT64
IPv6 addresses are judged by the IPv4 address they carry.

Prompt fetches are pinned: `PinnedTransport` resolves and checks the host, then connects to the checked
address itself (the Host header and TLS server name keep the original name), so a name that changes its
answer between the check and the connection (DNS rebinding) cannot slip through. Callbacks are checked
before each POST (the outbox follows no redirects) but connect by name, leaving a window of one DNS lookup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

__all__ = ["FetchPolicy", "FetchRefused", "PinnedTransport", "blocked_address", "system_resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchRefused(Exception):
    """A URL the policy does not let the server fetch; the message says why (no secrets in it)."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as the system resolver gives them."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchRefused(f"cannot resolve {host!r}: {exc}") from None
    return [str(info[4][0]) for info in infos]


def _embedded_v4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def blocked_address(ip: IPAddress) -> bool:
    """True for an address that is not on the public internet (judged by an embedded IPv4 address, if any)."""
    ip = _embedded_v4(ip)
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or ip in _CGNAT
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


@dataclass(frozen=True)
class FetchPolicy:
    """`allow_private` lifts the address check; `allow` lists networks allowed despite it. `trusted` URLs
    (the operator's own `callback_url`s) are not checked. `resolver` stands in for DNS in tests."""

    allow_private: bool = False
    allow: tuple[IPNetwork, ...] = ()
    trusted: frozenset[str] = frozenset()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_config(cls, security: object, trusted: Iterable[str] = ()) -> FetchPolicy:
        return cls(
            allow_private=bool(getattr(security, "allow_private_fetch", False)),
            allow=tuple(ipaddress.ip_network(n, strict=False) for n in getattr(security, "fetch_allow", ())),
            trusted=frozenset(u for u in trusted if u),
        )

    def address_allowed(self, ip: IPAddress) -> bool:
        if self.allow_private or not blocked_address(ip):
            return True
        plain = _embedded_v4(ip)
        return any(ip in net or plain in net for net in self.allow)

    def check(self, url: str | httpx.URL) -> list[IPAddress]:
        """The addresses `url` may be fetched from (every one the host resolves to, all checked); raises
        FetchRefused for another scheme, a host that does not resolve, or any refused address."""
        parsed = httpx.URL(url) if isinstance(url, str) else url
        if parsed.scheme not in ("http", "https"):
            raise FetchRefused(f"scheme {parsed.scheme!r} is not http(s)")
        host = parsed.host
        if not host:
            raise FetchRefused("no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
        if not addresses:
            raise FetchRefused(f"{host!r} resolves to no address")
        for ip in addresses:
            if not self.address_allowed(ip):
                raise FetchRefused(f"{host!r} resolves to a non-public address ({ip})")
        return addresses

    async def check_async(self, url: str) -> None:
        """`check` for a callback URL, off the event loop (resolution blocks); trusted URLs pass as they are."""
        if url in self.trusted or self.allow_private:
            return
        await asyncio.to_thread(self.check, url)


class PinnedTransport(httpx.BaseTransport):
    """Checks every request (redirects included) with `policy` and connects to the checked address."""

    def __init__(self, policy: FetchPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner if inner is not None else httpx.HTTPTransport(trust_env=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            address = self.policy.check(request.url)[0]
        except FetchRefused as exc:
            raise httpx.ConnectError(f"refused: {exc}", request=request) from None
        host = request.url.host
        if str(address) != host:
            # The Host header stays (httpx set it from the URL); TLS still names and verifies the host.
            request.url = request.url.copy_with(host=str(address))
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
