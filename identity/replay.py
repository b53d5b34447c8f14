"""Single-use ``jti`` tracking in the cache shared by every worker (CONTRACT §11 ``CIR_CACHE_URL``)."""

from __future__ import annotations

import hashlib
import time

from django.core.cache import cache


def remember_once(kind: str, jti: str, expires_at: int) -> bool:
    """Record ``jti`` until ``expires_at``; False when it was already recorded (a replay)."""
    digest = hashlib.sha256(f"{kind}\x00{jti}".encode()).hexdigest()
    ttl = max(1, expires_at - int(time.time()))
    return cache.add(f"cir:jti:{digest}", 1, timeout=ttl)
