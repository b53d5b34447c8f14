"""Plain-dict renderings of catalog objects: the §3 public record and the normalised feed records.

Written as small functions rather than DRF serializers because resolution and discovery are hot paths
(a million resources) and the same dicts feed the ETag, the change feed and the HTML page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from .models import Downtime, Provider, Resource, Site, Source

RESOURCE_FIELDS = (
    "local_id", "name", "kind", "site_id", "accelerator", "accelerator_model", "accelerator_count",
    "node_count", "status", "fp64_tflops", "fp32_tflops", "fp16_tflops", "int8_tops", "memory_gb",
    "storage_tb", "price_per_hour", "price_unit", "price_per_million_tokens", "endpoints",
)
SITE_FIELDS = ("name", "province", "hub", "pue", "wue", "cue", "green_ratio", "rack_availability")
# What ``resource_public`` reads of each object. Resolution loads only these columns (selectors); any
# other field is deferred, i.e. loaded by its own query if read, so a renderer that reads more stays
# correct, only slower (tests/registry/test_lean_reads.py compares with the full rendering).
PUBLIC_RECORD_FIELDS = {
    "resource": ("id", "ucri", "provider", "status", "version", "updated_at", *RESOURCE_FIELDS, "retired_at",
                 "authority", "source", "synced_at"),
    "provider": ("id", "name", "prefix", "credential_status", "credential_expires_at"),
    "site": ("id", "version", *SITE_FIELDS),
}


def timestamp(value: dt.datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def number(value: Any) -> Any:
    """Decimals leave as JSON numbers: integers when whole, floats otherwise."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _resource_fields(resource: Resource) -> dict[str, Any]:
    # number() inlined: a thousand records per batch resolve.
    fields = {name: number(v) if isinstance(v := getattr(resource, name), Decimal) else v for name in RESOURCE_FIELDS}
    fields["site_id"] = str(resource.site_id)
    return fields


def site_public(site: Site) -> dict[str, Any]:
    record: dict[str, Any] = {"id": str(site.id), "version": site.version}
    record.update({name: getattr(site, name) for name in SITE_FIELDS})
    return record


def downtime_public(downtime: Downtime, ucri_by_resource_id: dict[int, str] | None = None) -> dict[str, Any]:
    if downtime.resource_id is None:
        resource = None
    elif ucri_by_resource_id is not None and downtime.resource_id in ucri_by_resource_id:
        resource = ucri_by_resource_id[downtime.resource_id]
    else:
        resource = downtime.resource.ucri
    return {
        "id": str(downtime.id),
        "version": downtime.version,
        "resource": resource,
        "site_id": str(downtime.site_id) if downtime.site_id else None,
        "start": timestamp(downtime.start),
        "end": timestamp(downtime.end),
        "classification": downtime.classification,
        "reason": downtime.reason,
    }


def provider_brief(provider: Provider) -> dict[str, Any]:
    return {"name": provider.name, "prefix": provider.prefix,
            "credential_status": provider.effective_credential_status()}


def resource_public(resource: Resource, downtimes: Iterable[Downtime] = ()) -> dict[str, Any]:
    """The CONTRACT §3 record. ``resource.site`` and ``resource.provider`` should be preloaded."""
    record: dict[str, Any] = {
        "ucri": resource.ucri,
        "status": resource.status,
        "version": resource.version,
        "updated_at": timestamp(resource.updated_at),
    }
    record.update(_resource_fields(resource))
    if resource.retired_at is not None:
        record["retired_at"] = timestamp(resource.retired_at)
    record["provider"] = provider_brief(resource.provider)
    record["site"] = site_public(resource.site)
    ucris = {resource.pk: resource.ucri}
    record["downtimes"] = [downtime_public(d, ucris) for d in downtimes]
    record["authority"] = resource.authority
    record["source"] = resource.source
    if resource.source == Source.MIRROR:
        record["synced_at"] = timestamp(resource.synced_at)
    return record


def provider_public(provider: Provider) -> dict[str, Any]:
    """CONTRACT §3 ``GET /api/v1/providers/{prefix}``; ``credential`` arrives with the identity app."""
    return {
        "name": provider.name,
        "prefix": provider.prefix,
        "uscc": provider.uscc,
        "status": provider.status,
        "credential": provider.credential or None,
        "credential_status": provider.effective_credential_status(),
        "authority": provider.authority,
        "version": provider.version,
    }


# Normalised records for the outbox / change feed (CONTRACT §8) --------------------------------------

def resource_feed(resource: Resource) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ucri": resource.ucri,
        "provider": resource.provider.prefix,
        "status": resource.status,
        "version": resource.version,
        "created_at": timestamp(resource.created_at),
        "updated_at": timestamp(resource.updated_at),
        "retired_at": timestamp(resource.retired_at),
    }
    record.update(_resource_fields(resource))
    return record


def site_feed(site: Site) -> dict[str, Any]:
    record = site_public(site)
    record["provider"] = site.provider.prefix
    record["updated_at"] = timestamp(site.updated_at)
    return record


def downtime_feed(downtime: Downtime) -> dict[str, Any]:
    record = downtime_public(downtime)
    record["provider"] = downtime.provider.prefix
    return record


def provider_feed(provider: Provider) -> dict[str, Any]:
    record = provider_public(provider)
    # The stored status: a consumer derives "expired" from the credential's own exp, as we do.
    record["credential_status"] = provider.credential_status
    record["credential_expires_at"] = timestamp(provider.credential_expires_at)
    record["version"] = provider.version
    record["updated_at"] = timestamp(provider.updated_at)
    return record
