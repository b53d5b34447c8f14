"""Rate limits shared by every worker through the cache (CONTRACT §11 ``CIR_RATE_LIMITS``)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class AddressRateThrottle(SimpleRateThrottle):
    """Per client address; ``rate_setting`` names the Django setting holding the rate."""

    rate_setting = ""

    def get_rate(self) -> str:
        return getattr(settings, self.rate_setting)

    def allow_request(self, request, view) -> bool:
        if not settings.CIR_RATE_LIMITS:
            return True
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ResolveRateThrottle(AddressRateThrottle):
    scope = "resolve"
    rate_setting = "CIR_RESOLVE_RATE"
