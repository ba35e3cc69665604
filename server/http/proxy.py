"""``X-Forwarded-*`` from the reverse proxies the settings name, and from no one else.

Behind a TLS-terminating proxy the server sees plain HTTP from the proxy's address; the
links it builds (OGC API, tile URLs) and the address rate limits count by should be the
client's. The proxy says so in ``X-Forwarded-Proto``/``-Host``/``-For``, but anyone can send
those headers: they are believed only when the connection comes from an address in
``http_trusted_proxies`` (``IOC_HTTP_TRUSTED_PROXIES='["10.0.0.5/32"]'``), and ignored
otherwise. Each proxy appends to ``X-Forwarded-For``; the client is the right-most address
that is not a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from aiohttp import web

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _last(value: str | None) -> str | None:
    """The value the nearest proxy set (the right-most of a comma-separated list)."""
    if not value:
        return None
    return value.split(",")[-1].strip() or None


def forwarded_middleware(trusted: Sequence[str]):
    networks: list[Network] = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def is_trusted(addr) -> bool:
        return addr is not None and any(addr in n for n in networks)

    @web.middleware
    async def forwarded(request: web.Request, handler):
        if not networks or not is_trusted(_ip(request.remote or "")):
            return await handler(request)
        changes: dict = {}
        proto = (_last(request.headers.get("X-Forwarded-Proto")) or "").lower()
        if proto in ("http", "https"):
            changes["scheme"] = proto
        host = _last(request.headers.get("X-Forwarded-Host"))
        if host and _HOST.match(host):
            changes["host"] = host
        hops = [_ip(h) for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        for hop in reversed(hops):
            if hop is None:
                break  # garbage: keep the proxy's own address
            if not is_trusted(hop):
                changes["remote"] = str(hop)
                break
        return await handler(request.clone(**changes) if changes else request)

    return forwarded
