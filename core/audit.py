"""Hash-chained audit log of operator, credential and key events.

Each entry's ``hash`` is SHA-256 over the RFC 8785 canonical JSON of its content and the previous
entry's hash, so editing or deleting any entry breaks every later link (``verify_chain``).
Bulk catalog writes are not audited here: they go to the outbox.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785
from django.db import connection, transaction
from django.utils import timezone

from . import sequences
from .models import AuditEntry

SEQUENCE = "audit"
GENESIS_HASH = "0" * 64
_TABLE = AuditEntry._meta.db_table
_PREVIOUS_HASH = f"SELECT hash FROM {_TABLE} WHERE seq = %s"  # noqa: S608
_INSERT = (f"INSERT INTO {_TABLE} (seq, at, actor, action, target_type, target_key, data, prev_hash, hash) "  # noqa: S608
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id")


def _entry_hash(*, seq: int, at: str, actor: str, action: str, target_type: str, target_key: str,
                data: dict[str, Any], prev_hash: str) -> str:
    content = {
        "seq": seq, "at": at, "actor": actor, "action": action, "target_type": target_type,
        "target_key": target_key, "data": data, "prev_hash": prev_hash,
    }
    return hashlib.sha256(rfc8785.dumps(content)).hexdigest()


def _timestamp(value) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def record(*, actor: str, action: str, target_type: str = "", target_key: str = "",
           data: dict[str, Any] | None = None) -> AuditEntry:
    """Append one event. Joins the caller's transaction so the event commits with the change."""
    data = data or {}
    # No savepoint of its own inside the caller's transaction: a failure here fails the caller's change too.
    # From the counter draw to the commit every other writer of the log waits, so the two statements in
    # between are fixed SQL rather than ORM queries compiled while the lock is held.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        seq = sequences.take(SEQUENCE)  # row lock: entries are chained in commit order
        cursor.execute(_PREVIOUS_HASH, [seq - 1])
        prev = cursor.fetchone()
        prev_hash = prev[0] if prev else GENESIS_HASH
        at = timezone.now()
        entry_hash = _entry_hash(seq=seq, at=_timestamp(at), actor=actor, action=action,
                                 target_type=target_type, target_key=target_key, data=data,
                                 prev_hash=prev_hash)
        entry = AuditEntry(seq=seq, at=at, actor=actor, action=action, target_type=target_type,
                           target_key=target_key, data=data, prev_hash=prev_hash, hash=entry_hash)
        cursor.execute(_INSERT, [seq, connection.ops.adapt_datetimefield_value(at), actor, action, target_type,
                                 target_key, AuditEntry._meta.get_field("data").get_db_prep_save(data, connection),
                                 prev_hash, entry_hash])
        entry.pk = cursor.fetchone()[0]
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


def entry_hash(entry: AuditEntry) -> str:
    """The hash an entry should carry, recomputed from its content and its ``prev_hash``."""
    return _entry_hash(seq=entry.seq, at=_timestamp(entry.at), actor=entry.actor, action=entry.action,
                       target_type=entry.target_type, target_key=entry.target_key, data=entry.data,
                       prev_hash=entry.prev_hash)


def verify_chain() -> int | None:
    """Return the ``seq`` of the first entry whose link or content is wrong, or None if intact."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        if entry.seq != expected_seq or entry.prev_hash != expected_prev or entry_hash(entry) != entry.hash:
            return entry.seq
        expected_prev = entry.hash
        expected_seq += 1
    return None


def actor_of(user) -> str:
    """How an acting person or machine is named in the log."""
    if user is None:
        return "system"
    username = getattr(user, "get_username", None)
    return f"user:{username()}" if username else str(user)
