"""Outbound requests cannot be turned inward (SSRF): webhook and media URLs may reach public
addresses only, unless ``[security] allow_outbound`` names the networks they may reach.

An operator who may set a crew's webhook must not be able to make the server POST to
``http://127.0.0.1:…`` (its own admin surfaces, the broker, PostgreSQL), the cloud's metadata
service (``169.254.169.254``) or the city's private networks. Two checks:

- **When a URL is given** (:meth:`OutboundPolicy.check_url`): a literal address, or every
  address the name resolves to now, must be allowed; the API answers 400 naming the field.
  A name that does not resolve yet is let through: the second check guards the connection.
- **When a request is sent**: the HTTP session resolves names through
  :class:`GuardedResolver`, which refuses any address not allowed, and the connection is
  made only to the addresses it returned, so a name that resolved to a public address
  when it was configured and to an inner one now (DNS rebinding) connects nowhere. Literal
  addresses, which aiohttp does not resolve, are checked by :meth:`OutboundPolicy.check_literal`.

"Allowed": a globally routable unicast address (Python's ``is_global``: not loopback,
link-local, private, shared (CGNAT), reserved, documentation, unspecified...), or one inside
an ``allow_outbound`` network. IPv4-mapped IPv6 addresses are judged as the IPv4 address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from server.errors import Invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 3.0


class RefusedAddress(OSError):
    """The destination is not one the server may reach (a permanent failure: retrying the
    same URL cannot help)."""


def _kind(ip: Address) -> str:
    if ip.is_unspecified:
        return "the unspecified address (this host)"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (the cloud metadata service lives there)"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast:
        return "a multicast address"
    return "not a public address"


class OutboundPolicy:
    def __init__(self, allow: Sequence[str] = ()) -> None:
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow]

    def refusal(self, ip: Address) -> str | None:
        """Why the server may not connect to ``ip``, or None if it may."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == n.version and ip in n for n in self.allow):
            return None
        if ip.is_global and not ip.is_multicast:
            return None
        bits = 32 if ip.version == 4 else 128
        return (f"{ip} is {_kind(ip)}; an administrator may allow it with [security] "
                f"allow_outbound = [\"{ip}/{bits}\"] in IOC_CONFIG")

    def check_literal(self, url: str) -> None:
        """Raise :class:`RefusedAddress` if ``url``'s host is a literal address not allowed."""
        host = URL(url).host or ""
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        why = self.refusal(ip)
        if why:
            raise RefusedAddress(f"{url}: {why}")

    async def check_url(self, url: str, *, field: str) -> None:
        """Raise :class:`~server.errors.Invalid` (400 naming ``field``) if ``url`` leads to an
        address the server may not reach."""
        u = URL(url)
        host = (u.host or "").strip("[]")
        try:
            self.check_literal(url)
        except RefusedAddress as err:
            raise Invalid(f"{field}: {err}", errors=[{"field": field, "reason": str(err)}]) from None
        try:
            ipaddress.ip_address(host)
            return  # a literal, checked above
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, u.port or 443, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
        except (OSError, TimeoutError):
            return  # not resolvable now: the guarded resolver decides when it is
        for info in infos:
            why = self.refusal(ipaddress.ip_address(info[4][0].split("%")[0]))
            if why:
                reason = f"{host} resolves to {why}"
                raise Invalid(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing every address the policy does not allow: the connector
    connects only to the addresses returned here."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for r in results:
            why = self.policy.refusal(ipaddress.ip_address(r["host"].split("%")[0]))
            if why:
                raise RefusedAddress(f"{host} resolves to {why}")
        return results

    async def close(self) -> None:
        await self.inner.close()


def connector_kwargs(policy: OutboundPolicy) -> dict[str, Any]:
    """For ``aiohttp.TCPConnector(**…)``: names resolved through the guard."""
    return {"resolver": GuardedResolver(policy)}
