"""IETF OAuth Token Status Lists for provider credentials (CONTRACT §5).

2 bits per entry (0 valid, 1 revoked, 2 suspended), packed least-significant bits first, zlib
compressed, base64url, signed as ``statuslist+jwt`` with the node's ``credential`` keys. Indexes are
allocated at random in lists of at least 16,384 entries so a list reveals little about any provider.
"""

from __future__ import annotations

import datetime as dt
import secrets
import zlib
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from registry.services import this_node

from . import crypto, keys
from .models import Purpose, StatusList

VALID, REVOKED, SUSPENDED = 0, 1, 2
BITS = 2
TOKEN_LIFETIME = dt.timedelta(days=1)
RESIGN_WHEN_LEFT = dt.timedelta(hours=12)
FILL_LIMIT = 0.5  # open a new list at half full, so random allocation stays cheap and unlinkable


def pack(statuses: bytes | bytearray, bits: int = BITS) -> bytes:
    """Pack one status value per input byte into ``bits``-bit entries, LSB first (draft §4.1)."""
    per_byte = 8 // bits
    packed = bytearray((len(statuses) + per_byte - 1) // per_byte)
    for index, value in enumerate(statuses):
        packed[index // per_byte] |= (value & ((1 << bits) - 1)) << ((index % per_byte) * bits)
    return bytes(packed)


def unpack(packed: bytes, bits: int = BITS) -> list[int]:
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    return [(packed[i // per_byte] >> ((i % per_byte) * bits)) & mask for i in range(len(packed) * per_byte)]


def uri_for(status_list: StatusList) -> str:
    return f"{this_node().entity_id}/api/v1/status-lists/{status_list.id}"


def allocate() -> tuple[StatusList, int]:
    """A random free index in a list with room (locks the list row until the caller commits)."""
    size = max(settings.CIR_STATUS_LIST_SIZE, 16384)
    with transaction.atomic():
        status_list = (StatusList.objects.select_for_update()
                       .filter(allocated__lt=int(size * FILL_LIMIT), size=size).order_by("created_at").first())
        if status_list is None:
            status_list = StatusList.objects.create(size=size, bits=BITS, statuses=bytes(size))
            status_list = StatusList.objects.select_for_update().get(pk=status_list.pk)
        taken = set(status_list.credentials.values_list("status_index", flat=True))
        while True:
            index = secrets.randbelow(status_list.size)
            if index not in taken:
                break
        status_list.allocated += 1
        status_list.save(update_fields=["allocated"])
    return status_list, index


def set_status(status_list: StatusList, index: int, value: int) -> None:
    """Record a status and re-sign the list at once (CONTRACT §10 ``cir_provider_status``)."""
    with transaction.atomic():
        locked = StatusList.objects.select_for_update().get(pk=status_list.pk)
        statuses = bytearray(bytes(locked.statuses))
        if statuses[index] == REVOKED:
            return  # revoked is final
        statuses[index] = value
        locked.statuses = bytes(statuses)
        locked.version += 1
        locked.save(update_fields=["statuses", "version"])
        _sign(locked)


def _sign(status_list: StatusList, now: dt.datetime | None = None) -> None:
    now = now or timezone.now()
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": this_node().entity_id,
        "sub": uri_for(status_list),
        "iat": issued,
        "exp": issued + int(TOKEN_LIFETIME.total_seconds()),
        "ttl": settings.CIR_STATUS_LIST_TTL,
        "status_list": {"bits": status_list.bits,
                        "lst": crypto.b64url(zlib.compress(pack(bytes(status_list.statuses), status_list.bits), 9))},
    }
    signed = keys.sign(Purpose.CREDENTIAL, claims, typ="statuslist+jwt", now=now)
    status_list.token = signed.token
    status_list.token_expires_at = now + TOKEN_LIFETIME
    status_list.token_version = status_list.version
    status_list.save(update_fields=["token", "token_expires_at", "token_version"])


def current_token(status_list: StatusList, now: dt.datetime | None = None) -> str:
    """The signed list, re-signed when it changed or is past half its life."""
    now = now or timezone.now()
    stale = (not status_list.token or status_list.token_version != status_list.version
             or status_list.token_expires_at is None or status_list.token_expires_at - now < RESIGN_WHEN_LEFT)
    if stale:
        with transaction.atomic():
            status_list = StatusList.objects.select_for_update().get(pk=status_list.pk)
            _sign(status_list, now)
    return status_list.token


def refresh_all(now: dt.datetime | None = None) -> int:
    count = 0
    for status_list in StatusList.objects.all():
        before = status_list.token
        if current_token(status_list, now) != before:
            count += 1
    return count
