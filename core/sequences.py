"""Commit-ordered sequence numbers.

``take(name, n)`` increments a counter row and returns the first of ``n`` new numbers. The UPDATE
row-locks the counter until the surrounding transaction ends, so a second writer waits for the first
to commit (or roll back) before it draws: numbers become visible to readers in increasing order and a
reader that has seen S never later finds a smaller one. If a savepoint that drew numbers rolls back,
its increment and its rows roll back with it, so no gap is left either.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import F

from .models import Counter

_TAKE = f"UPDATE {Counter._meta.db_table} SET last = last + %s WHERE name = %s RETURNING last"  # noqa: S608


def take(name: str, n: int = 1) -> int:
    if not connection.in_atomic_block:
        raise RuntimeError(f"sequence {name!r} must be drawn inside a transaction")
    if connection.vendor == "postgresql":  # one round trip: the increment returns the new value
        with connection.cursor() as cursor:
            cursor.execute(_TAKE, [n, name])
            row = cursor.fetchone()
        if row is not None:
            return row[0] - n + 1
    updated = Counter.objects.filter(name=name).update(last=F("last") + n)
    if not updated:
        Counter.objects.get_or_create(name=name)
        Counter.objects.filter(name=name).update(last=F("last") + n)
    last = Counter.objects.filter(name=name).values_list("last", flat=True).get()
    return last - n + 1


def current(name: str) -> int:
    return Counter.objects.filter(name=name).values_list("last", flat=True).first() or 0
