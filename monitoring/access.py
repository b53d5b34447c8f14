"""Who may read ``/metrics`` (CONTRACT §11, §12): a client address inside ``CIR_METRICS_ALLOW`` (default
loopback only), or a bearer token with the scope ``metrics:read``."""

from __future__ import annotations

import functools
import ipaddress
import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest

from core.permissions import HasScope

log = logging.getLogger(__name__)
SCOPE = "metrics:read"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _parse(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"CIR_METRICS_ALLOW: {entry!r} is not an address or network") from exc
    return tuple(networks)


def allowed_networks() -> tuple[Network, ...]:
    return _parse(tuple(settings.CIR_METRICS_ALLOW or ()))


def client_address(request: HttpRequest) -> str:
    """The client's address as the rate limits see it: the socket peer, or behind a trusted proxy
    (``CIR_TRUST_PROXY_HEADER``) the ``X-Forwarded-For`` entry that proxy appended."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
        if entries:
            return entries[-min(proxies, len(entries))]
    return request.META.get("REMOTE_ADDR", "")


def address_allowed(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(client_address(request).split("%")[0])
    except ValueError:
        return False
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(candidate in network for candidate in candidates for network in allowed_networks()
               if candidate.version == network.version)


class MetricsAccess(HasScope):
    """An allowed address needs no token; anyone else needs ``metrics:read`` (401 without a token, 403
    with a token lacking the scope, as problem details)."""

    def has_permission(self, request, view) -> bool:
        if address_allowed(request):
            return True
        return super().has_permission(request, view)
