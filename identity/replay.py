"""Single-use ``jti`` tracking shared by every worker (CONTRACT §5, §11 ``CIR_CACHE_URL``).

With the default (the database), each ``jti`` is one row of ``SeenJti``, claimed with one atomic
``INSERT ... ON CONFLICT`` statement: a concurrent second use finds the row and is refused, and a row
is never evicted before it expires (Django's database cache culls live entries once it holds more than
``MAX_ENTRIES``, which would let a replay through). Expired rows are reclaimed in place, purged by the
``purge_seen_jtis`` beat task and, a few at a time, by the writers themselves. With a Redis cache the
cache's atomic ``add`` (``SET NX EX``) holds them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import time

from django.core.cache import cache, caches
from django.core.cache.backends.db import DatabaseCache
from django.db import connection
from django.utils import timezone

from .models import SeenJti

PURGE_ONE_IN = 1000  # writers purge expired rows on about one claim in this many
PURGE_BATCH = 5000
_TABLE = SeenJti._meta.db_table
# Inserted, or an expired row taken over: a row comes back. A live row: nothing comes back.
_CLAIM = (f"INSERT INTO {_TABLE} (digest, expires_at) VALUES (%s, %s) ON CONFLICT (digest) DO UPDATE "  # noqa: S608
          f"SET expires_at = EXCLUDED.expires_at WHERE {_TABLE}.expires_at <= %s RETURNING 1")


def _digest(kind: str, jti: str) -> str:
    return hashlib.sha256(f"{kind}\x00{jti}".encode()).hexdigest()


def remember_once(kind: str, jti: str, expires_at: int) -> bool:
    """Record ``jti`` until ``expires_at``; False when it was already recorded (a replay)."""
    digest = _digest(kind, jti)
    ttl = max(1, expires_at - int(time.time()))
    if not _database_cache():
        return cache.add(f"cir:jti:{digest}", 1, timeout=ttl)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, [digest, now + dt.timedelta(seconds=ttl), now])
        claimed = cursor.fetchone() is not None
    if claimed and random.randrange(PURGE_ONE_IN) == 0:
        purge_expired(now=now, limit=PURGE_BATCH)
    return claimed


def _database_cache() -> bool:
    return isinstance(caches["default"], DatabaseCache)


def purge_expired(*, now: dt.datetime | None = None, limit: int | None = None) -> int:
    """Delete rows whose token can no longer verify (at most ``limit``)."""
    expired = SeenJti.objects.filter(expires_at__lte=now or timezone.now())
    if limit is not None:
        expired = SeenJti.objects.filter(pk__in=list(expired.values_list("pk", flat=True)[:limit]))
    deleted, _ = expired.delete()
    return deleted
