"""Bulk CSV import and export of a provider's resources (CONTRACT §9).

Columns are the resource fields, with ``site`` naming one of the provider's sites and ``endpoints`` as
``type|url`` pairs separated by ``;``; an empty cell means null. Rows are keyed by ``local_id``: a known
one is updated through ``services.resource_update`` (which changes nothing when nothing differs), a new
one is created through ``services.resource_create``. The import is all-or-nothing: every row is tried
so that every error is reported at once, then the whole transaction is rolled back if any row failed.

Row numbers are spreadsheet rows: the header is row 1, the first resource row 2.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from core.errors import ApplicationError

from . import error_codes, records, services
from .models import Provider, Resource, Site, Source
from .validators import format_endpoints_cell, parse_endpoints_cell

COLUMNS: tuple[str, ...] = tuple("site" if name == "site_id" else name for name in records.RESOURCE_FIELDS)
MAX_ROWS = 50_000
# Each row is one service call (~3-5 ms on PostgreSQL, all in one transaction), so an admin request,
# which must finish within the server's timeout, takes fewer rows than a command or task would.
ADMIN_MAX_ROWS = 5_000
MAX_BYTES = 32 * 1024 * 1024

_INTEGERS = frozenset({"accelerator_count", "node_count"})
_FLOATS = frozenset({"fp64_tflops", "fp32_tflops", "fp16_tflops", "int8_tops", "memory_gb", "storage_tb"})
_DECIMALS = frozenset({"price_per_hour", "price_per_million_tokens"})
# ASCII only: int()/float() would also take "1_000", "nan", "inf" and non-ASCII digits.
_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Service error codes that concern one column although the service gives no field for them.
_CODE_COLUMNS = {error_codes.RESOURCE_RETIRED: "local_id", error_codes.LOCAL_ID_CONFLICT: "local_id"}


@dataclass(frozen=True)
class RowError:
    row: int  # spreadsheet row: 1 is the header
    column: str  # "" when the error concerns the whole row or file
    message: str

    def __str__(self) -> str:
        return f"row {self.row}{f', {self.column}' if self.column else ''}: {self.message}"


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)  # local_ids
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    applied: bool = False  # False for a dry run and whenever there are errors (nothing was written)

    @property
    def ok(self) -> bool:
        return not self.errors


def import_resources_csv(*, provider: Provider, file_text: str | bytes, dry_run: bool = False,
                         max_rows: int | None = None) -> ImportReport:
    """Create or update ``provider``'s resources from a CSV file; all rows or none."""
    report = ImportReport()
    text = _decode(file_text, report)
    if text is None:
        return report
    if provider.source != Source.LOCAL:
        report.errors.append(RowError(1, "", f"provider {provider.prefix} is held by another node"))
        return report
    if provider.status != Provider.Status.ACTIVE:
        report.errors.append(RowError(1, "", f"provider {provider.prefix} is {provider.status}; nothing can be "
                                             "imported for it"))
        return report
    rows = _read_rows(text, report, max_rows or MAX_ROWS)
    if not report.ok:
        return report  # a broken file: do not go on to row-level noise
    sites = {site.name: site for site in Site.objects.filter(provider=provider)}
    existing = {r.local_id: r for r in Resource.objects.filter(
        provider=provider, local_id__in=[cells["local_id"].strip() for _, cells in rows])}
    with transaction.atomic():
        for number, cells in rows:
            _import_row(provider, number, cells, sites, existing, report)
        report.applied = report.ok and not dry_run
        if not report.applied:
            transaction.set_rollback(True)
    return report


def _decode(file_text: str | bytes, report: ImportReport) -> str | None:
    if len(file_text) > MAX_BYTES:
        report.errors.append(RowError(1, "", f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it"))
        return None
    if isinstance(file_text, bytes):
        try:
            text = file_text.decode("utf-8-sig")  # spreadsheet programs often write a byte-order mark
        except UnicodeDecodeError as exc:
            line = file_text[:exc.start].count(b"\n") + 1
            report.errors.append(RowError(line, "", "the file is not UTF-8 text; save it as \"CSV UTF-8\""))
            return None
    else:
        text = file_text.removeprefix("\ufeff")
    if "\x00" in text:  # PostgreSQL text cannot hold NUL; reject before it becomes a database error
        line = text[:text.index("\x00")].count("\n") + 1
        report.errors.append(RowError(line, "", "the file contains a NUL character; it is not a CSV text file"))
        return None
    return text


def _read_rows(text: str, report: ImportReport, max_rows: int) -> list[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, dict[str, str]]] = []
    number = 0  # the last row read, for csv.Error
    try:
        header = next(reader, None)
        number = 1
        if header is None:
            report.errors.append(RowError(1, "", "the file is empty; the first row must name the columns"))
            return rows
        names = [name.strip() for name in header]
        report.errors.extend(_header_errors(names))
        if not report.ok:
            return rows
        for number, record in enumerate(reader, start=2):
            if not any(cell.strip() for cell in record):
                continue  # blank lines, e.g. at the end of the file
            if len(rows) == max_rows:
                report.errors.append(RowError(number, "", f"more than {max_rows} rows; split the file"))
                return rows
            if len(record) != len(names):
                report.errors.append(RowError(number, "", f"expected {len(names)} cells, found {len(record)}"))
                continue
            rows.append((number, dict(zip(names, record, strict=True))))
    except csv.Error as exc:
        report.errors.append(RowError(number + 1, "", f"unreadable CSV: {exc}"))
        return rows
    report.errors.extend(_duplicate_local_ids(rows))
    report.errors.sort(key=lambda error: error.row)
    return rows


def _header_errors(names: list[str]) -> list[RowError]:
    errors = [RowError(1, name, "unknown column") for name in names if name not in COLUMNS]
    errors += [RowError(1, name, "missing column") for name in COLUMNS if name not in names]
    errors += [RowError(1, name, "column appears more than once")
               for name in dict.fromkeys(names) if names.count(name) > 1]
    return errors


def _duplicate_local_ids(rows: list[tuple[int, dict[str, str]]]) -> list[RowError]:
    first_seen: dict[str, int] = {}
    errors = []
    for number, cells in rows:
        local_id = cells["local_id"].strip()
        if local_id in first_seen:
            errors.append(RowError(number, "local_id", f"{local_id!r} already appears in row {first_seen[local_id]}"))
        else:
            first_seen.setdefault(local_id, number)
    return errors


def _import_row(provider: Provider, number: int, cells: dict[str, str], sites: dict[str, Site],
                existing: dict[str, Resource], report: ImportReport) -> None:
    data: dict[str, Any] = {}
    cell_errors = []
    for column in COLUMNS:
        try:
            value = _parse_cell(column, cells[column].strip(), sites)
        except ValidationError as exc:
            cell_errors.append(RowError(number, column, "; ".join(exc.messages)))
            continue
        data["site_id" if column == "site" else column] = value
    if cell_errors:
        report.errors.extend(cell_errors)
        return
    local_id = data["local_id"]
    current = existing.get(local_id)
    if current is not None and _unchanged(current, data):
        report.unchanged.append(local_id)
        return
    try:
        with transaction.atomic():  # a failed row rolls back to here, so later rows can still be checked
            if current is None:
                services.resource_create(provider=provider, data=data)
                report.created.append(local_id)
                return
            updated = services.resource_update(resource=current, data=data)
    except ApplicationError as exc:
        report.errors.extend(_service_errors(number, exc))
        return
    (report.updated if updated.version != current.version else report.unchanged).append(local_id)


def _unchanged(resource: Resource, data: dict[str, Any]) -> bool:
    """What ``resource_update`` would find: nothing to change. Checked here first so that re-importing
    an unchanged file reads only, without a locking round trip per row; any difference (and anything
    about a retired resource) still goes to the service, which decides and validates."""
    return not resource.is_retired and all(
        getattr(resource, name) == (value.pk if name == "site_id" else value) for name, value in data.items())


def _parse_cell(column: str, text: str, sites: dict[str, Site]) -> Any:
    """One cell to the value the service takes, typed like the stored value so that re-importing an
    unchanged row compares equal (``"8.5"`` -> ``Decimal("8.5")`` == ``Decimal("8.5000")``)."""
    if column == "endpoints":
        return parse_endpoints_cell(text)  # an empty cell: no endpoints
    if column == "site":
        if text not in sites:
            # Worded the same whether or not another provider has such a site: nothing leaks.
            raise ValidationError(f"this provider has no site named {text!r}" if text else "required")
        return sites[text]  # services accept a Site of the provider in place of its id
    if not text:
        return None
    if column in _INTEGERS:
        if not _INTEGER_RE.fullmatch(text):
            raise ValidationError("must be a whole number")
        return int(text)
    if column in _FLOATS or column in _DECIMALS:
        if not _NUMBER_RE.fullmatch(text):
            raise ValidationError("must be a number")
        if column in _FLOATS:
            value = float(text)
            if not math.isfinite(value):
                raise ValidationError("number out of range")
            return value
        try:
            return Decimal(text)
        except InvalidOperation as exc:
            raise ValidationError("must be a number") from exc
    return text


def _service_errors(number: int, exc: ApplicationError) -> list[RowError]:
    field_errors = exc.extra.get("errors")
    if not field_errors:
        return [RowError(number, _CODE_COLUMNS.get(exc.code, ""), exc.detail)]
    return [RowError(number, "site" if name == "site_id" else name, message)
            for name, messages in field_errors.items() for message in messages]


# Export -------------------------------------------------------------------------------------------

def export_resources_csv(resources: Iterable[Resource]) -> Iterator[str]:
    """The same format, one line at a time (for a streaming response). Retired resources are left
    out: a retired resource cannot be imported back."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: Iterable[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(COLUMNS)
    for resource in resources:
        if not resource.is_retired:
            yield line(_export_cell(resource, column) for column in COLUMNS)


def _export_cell(resource: Resource, column: str) -> str:
    if column == "site":
        return resource.site.name
    value = getattr(resource, column)
    if column == "endpoints":
        return format_endpoints_cell(value)
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
