"""Keyset (cursor) pagination with the list envelope of CONTRACT §2.

``{"results": [...], "next": URL or null}``; parameters ``cursor`` and ``limit`` (default 50, at most
500). The order is a list of keys ending in a unique tie-breaker, so pages never skip or repeat rows
even while rows are added, and each page is one index range scan instead of an OFFSET.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F, Q, QuerySet
from django.http import QueryDict

from .errors import ApplicationError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Key:
    field: str
    descending: bool = False
    nullable: bool = False  # nulls sort last in either direction
    parse: Any = None  # for annotated (non-model) fields: turns a cursor string back into a value

    def order_expression(self):
        expression = F(self.field)
        return (expression.desc(nulls_last=True) if self.descending
                else expression.asc(nulls_last=True) if self.nullable else expression.asc())


@dataclass(frozen=True)
class Ordering:
    name: str
    keys: tuple[Key, ...]  # the last key must be unique and not null


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApplicationError("invalid_filter", f"limit must be an integer from 1 to {MAX_LIMIT}", status=400)
    return limit


def _encode(ordering: Ordering, values: Sequence[Any]) -> str:
    payload = json.dumps({"o": ordering.name, "v": [None if v is None else str(v) for v in values]},
                         separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _invalid_cursor() -> ApplicationError:
    return ApplicationError("invalid_filter", "the cursor is not one this list issued for this order", status=400)


def _decode(ordering: Ordering, token: str, model) -> list[Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values = payload["v"]
        valid = (payload["o"] == ordering.name and isinstance(values, list)
                 and len(values) == len(ordering.keys)
                 and all(v is None or isinstance(v, str) for v in values)
                 and values[-1] is not None)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        valid = False
    if not valid:
        raise _invalid_cursor()
    # Type each value with its model field, so a forged cursor is a 400 here, not a database error.
    typed = []
    for key, value in zip(ordering.keys, values, strict=True):
        if value is None:
            typed.append(None)
            continue
        try:
            if "\x00" in value:
                raise ValidationError("NUL")
            value.encode("utf-8")  # a lone surrogate cannot reach the database
            parsed = key.parse(value) if key.parse else model._meta.get_field(key.field).to_python(value)
            if isinstance(parsed, dt.datetime) and parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC)  # out-of-range instants fail here, not in the driver
            typed.append(parsed)
        except (ValidationError, ValueError, TypeError, OverflowError) as exc:
            raise _invalid_cursor() from exc
    return typed


def _after(keys: Sequence[Key], values: Sequence[Any]) -> Q:
    """Rows strictly after ``values`` in the order given by ``keys``."""
    condition = Q(pk__in=[])
    equal_so_far = Q()
    for key, value in zip(keys, values, strict=True):
        if value is None:
            beyond = Q(pk__in=[])  # nothing sorts after a null (nulls last)
            same = Q(**{f"{key.field}__isnull": True})
        else:
            beyond = Q(**{f"{key.field}__{'lt' if key.descending else 'gt'}": value})
            if key.nullable:
                beyond |= Q(**{f"{key.field}__isnull": True})
            same = Q(**{key.field: value})
        condition |= equal_so_far & beyond
        equal_so_far &= same
    return condition


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


def paginate(queryset: QuerySet, ordering: Ordering, *, cursor: str | None, limit: int) -> Page:
    if cursor:
        queryset = queryset.filter(_after(ordering.keys, _decode(ordering, cursor, queryset.model)))
    rows = list(queryset.order_by(*(k.order_expression() for k in ordering.keys))[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more and rows:
        last = rows[-1]
        next_cursor = _encode(ordering, [_value(last, k.field) for k in ordering.keys])
    return Page(rows, next_cursor)


def _value(obj: Any, dotted: str) -> Any:
    for part in dotted.split("__"):
        obj = getattr(obj, part)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


def next_url(request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    params: QueryDict = request.GET.copy()
    params["cursor"] = cursor
    return request.build_absolute_uri(request.path) + "?" + params.urlencode()


def envelope(results: list[Any], next_link: str | None) -> dict[str, Any]:
    return {"results": results, "next": next_link}
