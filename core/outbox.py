"""The transactional outbox: every catalog change appends an entry in the same transaction.

Federation reads these entries as the change feed; the catalog itself does not know how it is synced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from . import sequences
from .models import OutboxEntry

SEQUENCE = "outbox"


@dataclass(frozen=True)
class Change:
    type: str  # resource | site | downtime | provider | availability
    op: str  # upsert | retire
    key: str
    version: int | None
    authority: str
    record: dict[str, Any]


def append(change: Change) -> OutboxEntry:
    return append_many([change])[0]


def append_many(changes: Sequence[Change] | Iterable[Change]) -> list[OutboxEntry]:
    """Append changes with consecutive, commit-ordered ``seq`` numbers (one counter draw)."""
    changes = list(changes)
    if not changes:
        return []
    first = sequences.take(SEQUENCE, len(changes))
    now = timezone.now()
    entries = [
        OutboxEntry(seq=first + i, type=c.type, op=c.op, key=c.key, version=c.version,
                    authority=c.authority, record=c.record, recorded_at=now)
        for i, c in enumerate(changes)
    ]
    return OutboxEntry.objects.bulk_create(entries, batch_size=2000)


_COPY = (f"COPY {OutboxEntry._meta.db_table} (seq, type, op, key, version, authority, record, recorded_at) "
         "FROM STDIN")


def write_many(changes: Sequence[Change], records: Sequence[str | None] | None = None) -> int:
    """``append_many`` for large batches that need no entries back: one counter draw and, on
    PostgreSQL, one ``COPY``. ``records`` may give changes' records already encoded as JSON (None
    where not). Returns how many entries were written."""
    if not changes:
        return 0
    if connection.vendor != "postgresql":
        return len(append_many(changes))
    first = sequences.take(SEQUENCE, len(changes))
    now = timezone.now()
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.copy(_COPY) as copy:
        for i, c in enumerate(changes):
            record = records[i] if records is not None else None
            if record is None:
                record = json.dumps(c.record)
            copy.write_row((first + i, c.type, c.op, c.key, c.version, c.authority, record, now))
    return len(changes)


def read_after(after: int, limit: int) -> QuerySet[OutboxEntry]:
    return OutboxEntry.objects.filter(seq__gt=after).order_by("seq")[:limit]


def head() -> int:
    return sequences.current(SEQUENCE)
