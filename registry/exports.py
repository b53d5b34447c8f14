"""CSV export of a discovery result: every matching resource, streamed in keyset chunks.

The catalog can hold a million resources, so the export never materialises the result: it walks the
same keyset order the API pages through (one index range scan per chunk, no OFFSET), renders each
chunk and lets it go. Memory stays flat however large the result is, and rows added or changed while
the export runs are never repeated or skipped (the order ends in the unique UCRI).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from core.pagination import Ordering, paginate

from . import availability
from .models import Availability, Resource
from .records import timestamp

CHUNK_SIZE = 2000
# A spreadsheet reads a cell starting with one of these as a formula (or strips it and then does):
# CSV injection, OWASP. Such cells get a leading apostrophe, which spreadsheets show as text.
# Full-width forms are included (some spreadsheet programs read U+FF1D as =), and a leading line break.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "＝", "＋", "－", "＠")
# Spreadsheet software (Excel above all) needs the BOM to read UTF-8 Chinese names correctly.
BOM = "\ufeff"


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        value = value.normalize()
        return format(value, "f")
    return str(value)


def _fresh(held: dict[str, Any] | None) -> str:
    if held is None:
        return ""
    return "true" if held["fresh"] else "false"


# (header, value of a resource given its availability object as the API shows it)
Column = tuple[str, Callable[[Resource, dict[str, Any] | None], Any]]
COLUMNS: tuple[Column, ...] = (
    ("ucri", lambda r, a: r.ucri),
    ("name", lambda r, a: r.name),
    ("status", lambda r, a: r.status),
    ("kind", lambda r, a: r.kind),
    ("accelerator", lambda r, a: r.accelerator),
    ("accelerator_model", lambda r, a: r.accelerator_model),
    ("accelerator_count", lambda r, a: _number(r.accelerator_count)),
    ("node_count", lambda r, a: _number(r.node_count)),
    ("fp64_tflops", lambda r, a: _number(r.fp64_tflops)),
    ("fp16_tflops", lambda r, a: _number(r.fp16_tflops)),
    ("memory_gb", lambda r, a: _number(r.memory_gb)),
    ("price_per_hour", lambda r, a: _number(r.price_per_hour)),
    ("price_unit", lambda r, a: r.price_unit),
    ("price_per_million_tokens", lambda r, a: _number(r.price_per_million_tokens)),
    ("pue", lambda r, a: _number(r.pue)),
    ("green_ratio", lambda r, a: _number(r.green_ratio)),
    ("hub", lambda r, a: r.hub or ""),
    ("province", lambda r, a: r.province),
    ("provider_prefix", lambda r, a: r.provider.prefix),
    ("provider_name", lambda r, a: r.provider.name),
    ("site_name", lambda r, a: r.site.name),
    ("source", lambda r, a: r.source),
    ("available_units", lambda r, a: _number(a["available_units"]) if a else ""),
    ("availability_fresh", lambda r, a: _fresh(a)),
    ("availability_observed_at", lambda r, a: a["observed_at"] if a else ""),
    ("updated_at", lambda r, a: timestamp(r.updated_at)),
)
HEADER: tuple[str, ...] = tuple(name for name, _ in COLUMNS)


def neutralise(value: Any) -> str:
    """A cell as text that no spreadsheet evaluates as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


# What the columns and the ordering keys read, and nothing else: building a million full model rows
# (three models each, with their timestamps) is most of an export's time.
EXPORT_FIELDS = (
    "ucri", "name", "status", "kind", "accelerator", "accelerator_model", "accelerator_count", "node_count",
    "fp64_tflops", "fp16_tflops", "memory_gb", "price_per_hour", "price_unit", "price_per_million_tokens", "pue",
    "green_ratio", "hub", "province", "source", "updated_at", "provider__prefix", "provider__name", "site__name",
    "availability__available_units", "availability__queued_jobs", "availability__observed_at",
    "availability__expires_at",
)


def resource_chunks(queryset: QuerySet[Resource], ordering: Ordering, *, cursor: str | None = None,
                    chunk_size: int | None = None) -> Iterator[list[Resource]]:
    """The whole queryset in ``ordering``, ``chunk_size`` rows at a time, by keyset (as the API pages)."""
    chunk_size = chunk_size or CHUNK_SIZE
    queryset = queryset.select_related("availability").only(*EXPORT_FIELDS)
    while True:
        page = paginate(queryset, ordering, cursor=cursor, limit=chunk_size)
        if page.items:
            yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def rows(chunks: Iterable[Sequence[Resource]]) -> Iterator[list[list[str]]]:
    """Each chunk as CSV rows, with the same availability object the API puts on its items."""
    for chunk in chunks:
        now = timezone.now()  # per chunk: a long export judges freshness as it goes
        yield [_row(resource, availability.public(_held(resource), now)) for resource in chunk]


def _row(resource: Resource, held: dict[str, Any] | None) -> list[str]:
    return [neutralise(getter(resource, held)) for _, getter in COLUMNS]


def _held(resource: Resource) -> Availability | None:
    """The report loaded with the row (``select_related``); None when the resource has none."""
    try:
        return resource.availability
    except Availability.DoesNotExist:
        return None


def stream(chunks: Iterable[Sequence[Resource]]) -> Iterator[bytes]:
    """UTF-8 CSV text: a header row, then one row per resource, one piece per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> bytes:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode("utf-8")

    writer.writerow(HEADER)
    yield (BOM.encode("utf-8")) + flush()
    for chunk_rows in rows(chunks):
        writer.writerows(chunk_rows)
        yield flush()
