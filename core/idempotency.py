"""``Idempotency-Key`` on creating POSTs (CONTRACT §2): scoped to the calling client, kept >= 24 h.

A retry with the same key and body returns the first response and creates nothing; the same key with
another body is 422 ``idempotency_key_reused``. The key row is inserted in the same transaction as the
creation, so two concurrent requests with one key serialise on its unique index and the second
replays the first's answer.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

import rfc8785
from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.exceptions import ParseError

from .errors import ApplicationError
from .models import IdempotencyRecord
from .parsers import loads_strict

RETENTION = dt.timedelta(hours=24)
_REPLAYED_HEADERS = ("Content-Type", "ETag", "Location")


def _request_hash(request) -> str:
    """The request's identity: method, path and body, the body in RFC 8785 canonical form when it is
    JSON (so whitespace and member order do not make a retry look like another request)."""
    raw = request._request.body  # read before DRF parses, so the stream is still available
    try:
        body = rfc8785.dumps(loads_strict(raw)) if raw else b""
    except (ParseError, rfc8785.CanonicalizationError, ValueError):
        body = raw
    return hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n" + body).hexdigest()


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.body or b""), status=record.status)
    for name, value in record.headers.items():
        response[name] = value
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(view_method):
    """Decorate a DRF view's ``post``; the principal must have a ``client_id``."""

    @functools.wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view_method(self, request, *args, **kwargs)
        if not key or len(key) > 255 or not key.isprintable():
            raise ApplicationError("invalid_request", "Idempotency-Key must be 1-255 printable characters")
        client_id = request.user.client_id
        request_hash = _request_hash(request)
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(client_id=client_id, key=key,
                                                              request_hash=request_hash)
            except IntegrityError:
                existing = IdempotencyRecord.objects.get(client_id=client_id, key=key)
                if existing.created_at < timezone.now() - RETENTION:
                    existing.delete()
                    record = IdempotencyRecord.objects.create(client_id=client_id, key=key,
                                                              request_hash=request_hash)
                elif existing.request_hash != request_hash:
                    raise ApplicationError("idempotency_key_reused",
                                           "this Idempotency-Key was used with another request body",
                                           status=422) from None
                else:
                    return _replay(existing)
            response = view_method(self, request, *args, **kwargs)
            record.status = response.status_code
            record.body = response.content
            record.headers = {name: response[name] for name in _REPLAYED_HEADERS if name in response}
            record.save(update_fields=["status", "body", "headers"])
        return response

    return wrapper


def purge_expired(now: dt.datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - RETENTION - dt.timedelta(hours=1)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
