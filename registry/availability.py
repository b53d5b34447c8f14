"""Live availability (CONTRACT §13): the latest report per resource, cheap to write (a hot path:
providers report every few seconds), coalesced into the change feed one entry per resource per pull."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core import outbox
from core.errors import ApplicationError

from . import identifiers
from .models import Availability, Provider, Resource, Source
from .records import timestamp

MAX_REPORTS = 1000
VALID_FOR = (10, 3600)
FUTURE_LEEWAY = dt.timedelta(seconds=60)
MAX_AGE = dt.timedelta(days=1)  # older reports are history, not availability (and ancient dates break readers)
MAX_UNITS = 2**31 - 1
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})\Z")
REPORT_MEMBERS = frozenset({"ucri", "available_units", "queued_jobs", "observed_at", "valid_for"})

# One statement per batch; a report older than the one held changes nothing (the WHERE).
_UPSERT = """
INSERT INTO registry_availability
    (resource_id, available_units, queued_jobs, observed_at, valid_for, expires_at, authority, unpublished)
VALUES {values}
ON CONFLICT (resource_id) DO UPDATE SET
    available_units = excluded.available_units, queued_jobs = excluded.queued_jobs,
    observed_at = excluded.observed_at, valid_for = excluded.valid_for, expires_at = excluded.expires_at,
    authority = excluded.authority, unpublished = TRUE
WHERE excluded.observed_at > registry_availability.observed_at
RETURNING resource_id
"""


def _bad(index: int, message: str) -> ApplicationError:
    return ApplicationError("invalid_report", f"report {index}: {message}", extra={"report": index})


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(index: int, report: Any, now: dt.datetime) -> dict[str, Any]:
    if not isinstance(report, dict) or not {"ucri", "available_units", "observed_at", "valid_for"} <= set(report) \
            or set(report) - REPORT_MEMBERS:
        raise _bad(index, "a report has ucri, available_units, observed_at, valid_for and optionally queued_jobs")
    if not isinstance(report["ucri"], str):
        raise _bad(index, "ucri must be a string")
    try:
        ucri = identifiers.canonicalize(report["ucri"])
    except identifiers.UCRIError as exc:
        raise ApplicationError(exc.code, f"report {index}: {exc}", extra={"report": index}) from exc
    units, queued, valid_for = report["available_units"], report.get("queued_jobs"), report["valid_for"]
    if not _int(units) or not 0 <= units <= MAX_UNITS:
        raise _bad(index, "available_units is a non-negative integer")
    if queued is not None and (not _int(queued) or not 0 <= queued <= MAX_UNITS):
        raise _bad(index, f"queued_jobs is an integer from 0 to {MAX_UNITS}")
    if not _int(valid_for) or not VALID_FOR[0] <= valid_for <= VALID_FOR[1]:
        raise _bad(index, f"valid_for is {VALID_FOR[0]}..{VALID_FOR[1]} seconds")
    raw = report["observed_at"]
    try:
        observed = parse_datetime(raw) if isinstance(raw, str) and RFC3339.match(raw) else None
        observed = observed.astimezone(dt.UTC) if observed is not None and observed.tzinfo else None
    except (ValueError, OverflowError):  # well-formed but impossible: 2026-02-30, 25:00, +24:00, year 0
        observed = None
    if observed is None:
        raise _bad(index, "observed_at is an RFC 3339 time with an offset")
    if observed > now + FUTURE_LEEWAY:
        raise _bad(index, "observed_at is more than 60 s in the future")
    if observed < now - MAX_AGE:
        raise _bad(index, f"observed_at is more than {MAX_AGE.days} day old")
    return {"ucri": ucri, "available_units": units, "queued_jobs": queued, "observed_at": observed,
            "valid_for": valid_for}


def capacity(resource: Resource) -> int:
    """The most units a report may claim: nodes for node-priced resources, else cards or cores."""
    if resource.price_unit == Resource.PriceUnit.NODE:
        return resource.node_count or 0
    return resource.accelerator_count


def _upsert(rows: Sequence[tuple]) -> int:
    """Returns how many rows were inserted or updated (reports newer than the one held)."""
    if not rows:
        return 0
    stamp = Availability._meta.get_field("observed_at")
    adapted = [(pk, units, queued, stamp.get_db_prep_value(observed, connection), valid_for,
                stamp.get_db_prep_value(expires, connection), authority)
               for pk, units, queued, observed, valid_for, expires, authority in rows]
    adapted.sort(key=lambda row: row[0])  # one lock order for every writer: no deadlocks between batches
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, TRUE)"] * len(adapted))
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(values=values), [v for row in adapted for v in row])
        return len(cursor.fetchall())


def report(*, provider: Provider, reports: Any, now: dt.datetime | None = None) -> int:
    """Accept a provider's batch, all or nothing; returns how many reports were newer than the held ones."""
    now = now or timezone.now()
    if not isinstance(reports, list) or not reports:
        raise ApplicationError("invalid_request", 'the body is {"reports": [ ... ]} with at least one report')
    if len(reports) > MAX_REPORTS:
        raise ApplicationError("batch_too_large", f"at most {MAX_REPORTS} reports per request")
    parsed = [_parse(i, r, now) for i, r in enumerate(reports)]
    wanted = {p["ucri"] for p in parsed}
    resources = {r.ucri: r for r in Resource.objects.filter(ucri__in=wanted, provider=provider, source=Source.LOCAL)
                 .only("pk", "ucri", "price_unit", "node_count", "accelerator_count", "status")}
    newest: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(parsed):
        resource = resources.get(item["ucri"])
        if resource is None:  # another provider's UCRI is exactly as unknown as a missing one
            raise ApplicationError("not_found", f"report {index}: no resource {item['ucri']} of this provider",
                                   status=404, extra={"report": index})
        if resource.status == Resource.Status.RETIRED:
            raise ApplicationError("resource_retired", f"report {index}: {item['ucri']} is retired", status=409,
                                   extra={"report": index})
        if item["available_units"] > capacity(resource):
            raise _bad(index, f"available_units exceeds the resource's {capacity(resource)} {resource.price_unit}s")
        held = newest.get(item["ucri"])
        if held is None or item["observed_at"] > held["observed_at"]:
            newest[item["ucri"]] = item
    rows = [(resources[u].pk, i["available_units"], i["queued_jobs"], i["observed_at"], i["valid_for"],
             i["observed_at"] + dt.timedelta(seconds=i["valid_for"]), provider.authority) for u, i in newest.items()]
    with transaction.atomic():
        # Counted from the rows the upsert wrote, so concurrent batches never double-count.
        return _upsert(rows)


def public(availability: Availability | None, now: dt.datetime | None = None) -> dict[str, Any] | None:
    if availability is None:
        return None
    now = now or timezone.now()
    return {"available_units": availability.available_units, "queued_jobs": availability.queued_jobs,
            "observed_at": timestamp(availability.observed_at), "expires_at": timestamp(availability.expires_at),
            "fresh": availability.expires_at > now}


def feed_record(availability: Availability, ucri: str) -> dict[str, Any]:
    return {"ucri": ucri, "available_units": availability.available_units, "queued_jobs": availability.queued_jobs,
            "observed_at": timestamp(availability.observed_at), "valid_for": availability.valid_for,
            "expires_at": timestamp(availability.expires_at)}


def publish_pending(limit: int = 10000) -> int:
    """Put each resource's newest unpublished report into the outbox once (called before a feed page
    is read), so a busy provider adds at most one entry per resource per pull."""
    with transaction.atomic():
        pending = list(Availability.objects.select_for_update(skip_locked=True, of=("self",))
                       .filter(unpublished=True).select_related("resource")[:limit])
        if not pending:
            return 0
        outbox.append_many(outbox.Change("availability", "upsert", a.resource.ucri, None, a.authority,
                                         feed_record(a, a.resource.ucri)) for a in pending)
        Availability.objects.filter(pk__in=[a.pk for a in pending]).update(unpublished=False)
    return len(pending)


def apply_mirrored(change: Mapping[str, Any]) -> str:
    """A mirrored report: keep the newest ``observed_at`` per UCRI; relayed by our own publish_pending."""
    from .mirror import APPLIED, STALE

    resource = Resource.objects.filter(ucri=change["key"]).values_list("pk", "source").first()
    held = None
    if resource is not None:
        held = Availability.objects.filter(pk=resource[0]).values_list("observed_at", flat=True).first()
    row = mirrored_row(change, resource, held, timezone.now())
    if row is None:
        return STALE
    _upsert([row])
    return APPLIED


def mirrored_row(change: Mapping[str, Any], resource: tuple[int, str] | None, held: dt.datetime | None,
                 now: dt.datetime) -> tuple | None:
    """The row a mirrored report upserts, given the resource's (pk, source) and the ``observed_at`` we
    hold for it; None when the report is not newer. Raises ``MirrorViolation``."""
    from .mirror import MirrorViolation

    record = change["record"]
    if resource is None:
        raise MirrorViolation("unknown_reference", f"{change['key']} is not mirrored")
    if resource[1] == Source.LOCAL:
        raise MirrorViolation("local_record", f"{change['key']} is this node's own")
    try:
        item = _parse(0, {k: record.get(k) for k in ("ucri", "available_units", "queued_jobs", "observed_at",
                                                     "valid_for") if k in record}, now)
    except ApplicationError as exc:
        raise MirrorViolation("invalid_record", exc.detail) from exc
    if held is not None and held >= item["observed_at"]:
        return None
    return (resource[0], item["available_units"], item["queued_jobs"], item["observed_at"], item["valid_for"],
            item["observed_at"] + dt.timedelta(seconds=item["valid_for"]), change["authority"])


def for_resources(resources: Iterable[Resource]) -> dict[int, Availability]:
    return {a.resource_id: a for a in Availability.objects.filter(resource__in=list(resources))}
