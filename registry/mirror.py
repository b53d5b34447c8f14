"""Applying another node's changes to our catalog as mirrored records (CONTRACT §8).

Each change is validated as strictly as a local write, applied idempotently (the highest ``version``
per key wins; a retired resource stays retired; a local record is never overwritten) and, when
applied, relayed through our own outbox so our superior receives it too. The caller (federation)
has already checked the page's signature and that the key lies inside the origin's prefixes.

The appliers decide; a ``Store`` reads what we hold and writes what they decide. ``apply`` runs one
change against the database (``DatabaseStore``); ``registry.mirror_batch`` runs a page's changes through
the same appliers against rows it prefetched, and writes them set-based.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, transaction
from django.db.models import signals
from django.db.models.base import ModelState
from django.db.models.expressions import DatabaseDefault
from django.utils.dateparse import parse_datetime

from core import outbox

from . import identifiers, records
from .models import Downtime, MirrorTombstone, Provider, Resource, Site, Source
from .reference import hub_for_province
from .validators import validate_endpoints, validate_province, validate_uscc

APPLIED, STALE = "applied", "stale"
MAX_RECORD_BYTES = 64 * 1024
KNOWN_TYPES = ("provider", "site", "resource", "downtime", "availability")
CREDENTIAL_STATUSES = (None, "valid", "suspended", "revoked")


class MirrorViolation(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _violation(reason: str, detail: str) -> MirrorViolation:
    return MirrorViolation(reason, detail)


def _time(value: Any, name: str, *, required: bool = True) -> dt.datetime | None:
    if value is None and not required:
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None or parsed.tzinfo is None:
        raise _violation("invalid_record", f"{name} must be an RFC 3339 time with an offset")
    return parsed


def _version(change: Mapping[str, Any]) -> int:
    version = change.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _violation("invalid_record", "version must be a positive integer")
    record_version = change["record"].get("version")
    if record_version != version:
        raise _violation("invalid_record", "the record's version differs from the entry's")
    return version


def _clean(instance, exclude: list[str]) -> None:
    try:
        full_clean(instance, exclude)
    except ValidationError as exc:
        detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        raise _violation("invalid_record", detail) from exc


# Field.clean() of the same value gives the same answer: it depends on the field and the value only
# (the fields cleaned here are plain columns; relations are excluded). A sync cleans a million records
# whose kinds, models, statuses, prices and versions repeat, so each answer is kept: the value, or
# the field's errors. Keyed by type and repr where equal values differ (0.0 and -0.0, Decimal("1.0")
# and Decimal("1.00000"), one instant in two offsets).
_EXACT_KEY = (str, int, bool, type(None))
_REPR_KEY = (float, Decimal, dt.datetime, dt.date)
_cleaned: dict[tuple, tuple[bool, Any]] = {}
_CLEANED_MAX = 50_000  # answers kept (then forgotten all at once): a few MB
_LONGEST_KEPT = 256  # longer texts (names are unique anyway) are cleaned every time


def _field_clean(field, raw: Any, instance) -> Any:
    kind = type(raw)
    if kind in _EXACT_KEY and not (kind is str and len(raw) > _LONGEST_KEPT):
        key = (field, kind, raw)
    elif kind in _REPR_KEY:
        key = (field, kind, repr(raw))
    else:
        return field.clean(raw, instance)
    answer = _cleaned.get(key)
    if answer is None:
        try:
            answer = (True, field.clean(raw, instance))
        except ValidationError as exc:
            answer = (False, exc.error_list)
        if len(_cleaned) >= _CLEANED_MAX:
            _cleaned.clear()
        _cleaned[key] = answer
    if answer[0]:
        return answer[1]
    raise ValidationError(answer[1])


def full_clean(instance, exclude: list[str]) -> None:
    """``instance.full_clean(exclude, validate_unique=False, validate_constraints=False)``: Django's
    clean_fields() and clean(), step for step, with each field's answer kept (``_field_clean``)."""
    excluded = set(exclude)
    field_errors: dict[str, list[ValidationError]] = {}
    for field in instance._meta.fields:
        if field.name in excluded or field.generated:
            continue
        raw = getattr(instance, field.attname)
        if (field.blank and raw in field.empty_values) or isinstance(raw, DatabaseDefault):
            continue
        try:
            setattr(instance, field.attname, _field_clean(field, raw, instance))
        except ValidationError as exc:
            field_errors[field.name] = exc.error_list
    errors: dict[str, list[ValidationError]] = {}
    if field_errors:
        errors = ValidationError(field_errors).update_error_dict(errors)
    try:
        instance.clean()
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    if errors:
        raise ValidationError(errors)


def key_prefix(change: Mapping[str, Any]) -> str:
    """The prefix a change's key lies in, which the consumer checks against the origin's delegation."""
    kind, key, record = change["type"], change["key"], change["record"]
    if kind in ("resource", "availability"):
        try:
            canonical = identifiers.canonicalize(key)
        except identifiers.UCRIError as exc:
            raise _violation("invalid_key", f"{key!r} is not a UCRI") from exc
        if canonical != key:
            raise _violation("invalid_key", "a feed key must be the canonical UCRI")
        return identifiers.prefix_of(key)
    prefix = key if kind == "provider" else record.get("provider")
    if not isinstance(prefix, str) or not identifiers.is_prefix(prefix):
        raise _violation("invalid_key", f"{kind} {key!r} names no valid provider prefix")
    return prefix


class Store:
    """What the appliers read and write. Lookups return instances the applier may change; a write
    takes the instance as the applier left it."""

    def provider(self, prefix: Any, *, lock: bool = False) -> Provider | None:
        raise NotImplementedError

    def site(self, site_id: uuid.UUID, *, lock: bool = False) -> Site | None:
        raise NotImplementedError

    def resource(self, ucri: str) -> Resource | None:
        """Locked: the applier may overwrite it."""
        raise NotImplementedError

    def save_provider(self, provider: Provider) -> None:
        raise NotImplementedError

    def save_site(self, site: Site) -> None:
        """Writes the site and copies its searchable facts onto its resources."""
        raise NotImplementedError

    def save_resource(self, resource: Resource, updated_at: dt.datetime | None) -> None:
        """Writes the resource; ``updated_at`` (the origin's) replaces the save time when given."""
        raise NotImplementedError


class DatabaseStore(Store):
    """One change at a time, straight to the database."""

    def provider(self, prefix: Any, *, lock: bool = False) -> Provider | None:
        query = Provider.objects.select_for_update() if lock else Provider.objects
        return query.filter(prefix=prefix).first()

    def site(self, site_id: uuid.UUID, *, lock: bool = False) -> Site | None:
        query = Site.objects.select_for_update() if lock else Site.objects
        return query.filter(pk=site_id).first()

    def resource(self, ucri: str) -> Resource | None:
        return Resource.objects.select_for_update().filter(ucri=ucri).first()

    def save_provider(self, provider: Provider) -> None:
        provider.save()

    def save_site(self, site: Site) -> None:
        site.save()
        Resource.objects.filter(site=site).update(province=site.province, hub=site.hub, pue=site.pue,
                                                  green_ratio=site.green_ratio)

    def save_resource(self, resource: Resource, updated_at: dt.datetime | None) -> None:
        resource.save()
        if updated_at is not None:
            Resource.objects.filter(pk=resource.pk).update(updated_at=updated_at)


def _mirrored_provider(store: Store, prefix: Any) -> Provider:
    provider = store.provider(prefix)
    if provider is None:
        raise _violation("unknown_reference", f"provider {prefix} has not been mirrored yet")
    if provider.source == Source.LOCAL:
        raise _violation("local_record", f"provider {prefix} is this node's own")
    return provider


def _apply_provider(store: Store, change, record, authority: str, now: dt.datetime,
                    verify_credential: Callable[[Mapping[str, Any]], None] | None) -> str:
    prefix, version = change["key"], _version(change)
    if record.get("prefix") != prefix:
        raise _violation("invalid_record", "the record's prefix differs from the key")
    existing = store.provider(prefix, lock=True)
    if existing is not None and existing.source == Source.LOCAL:
        raise _violation("local_record", f"provider {prefix} is this node's own")
    if existing is not None and existing.version >= version:
        return STALE
    if existing is not None and Provider.Status.REVOKED in (existing.status, existing.credential_status) and \
            Provider.Status.REVOKED not in (record.get("status"), record.get("credential_status")):
        raise _violation("revocation_is_final", f"provider {prefix} was revoked; it cannot come back")
    if record.get("credential_status") not in CREDENTIAL_STATUSES:
        raise _violation("invalid_record", "credential_status must be valid, suspended, revoked or null")
    credential = record.get("credential") or ""
    if not isinstance(credential, str):
        raise _violation("invalid_record", "credential must be a compact JWS or null")
    if credential and verify_credential is not None:
        verify_credential(record)
    try:
        uscc = validate_uscc(record.get("uscc") or "")
    except ValidationError as exc:
        raise _violation("invalid_record", f"uscc: {' '.join(exc.messages)}") from exc
    provider = existing or Provider(prefix=prefix, code=prefix.rpartition(".")[2], source=Source.MIRROR)
    provider.name, provider.uscc, provider.status = record.get("name"), uscc, record.get("status")
    provider.credential, provider.credential_status = credential, record.get("credential_status")
    provider.credential_expires_at = _time(record.get("credential_expires_at"), "credential_expires_at",
                                           required=False)
    provider.version, provider.authority, provider.synced_at = version, authority, now
    _clean(provider, exclude=["prefix", "code"])
    store.save_provider(provider)
    return APPLIED


def _apply_site(store: Store, change, record, authority: str, now: dt.datetime) -> str:
    version = _version(change)
    try:
        site_id = uuid.UUID(change["key"])
    except (ValueError, TypeError) as exc:
        raise _violation("invalid_key", "a site key is a UUID") from exc
    if record.get("id") != str(site_id):
        raise _violation("invalid_record", "the record's id differs from the key")
    provider = _mirrored_provider(store, record["provider"])
    existing = store.site(site_id, lock=True)
    if existing is not None and (existing.source == Source.LOCAL or existing.provider_id != provider.pk):
        raise _violation("local_record" if existing.source == Source.LOCAL else "invalid_record",
                         f"site {site_id} belongs elsewhere")
    if existing is not None and existing.version >= version:
        return STALE
    site = existing or Site(id=site_id, provider=provider, source=Source.MIRROR)
    for name in ("name", "province", "pue", "wue", "cue", "green_ratio", "rack_availability"):
        setattr(site, name, record.get(name))
    try:
        validate_province(site.province)
    except ValidationError as exc:
        raise _violation("invalid_record", f"province: {' '.join(exc.messages)}") from exc
    site.hub = hub_for_province(site.province)
    if record.get("hub") != site.hub:
        raise _violation("invalid_record", f"hub {record.get('hub')!r} disagrees with province {site.province}")
    site.version, site.authority, site.synced_at = version, authority, now
    _clean(site, exclude=["provider", "hub"])
    store.save_site(site)
    return APPLIED


_prototypes: dict[type[Resource], Resource] = {}


def _new_resource(**values: Any) -> Resource:
    """``Resource(**values)`` for a mirrored resource, a copy of one built by ``__init__`` instead of
    ``__init__``'s per-field work (the hot path of a sync; the appliers set every field a record has).
    ``__init__`` itself wherever init signals are connected."""
    if signals.pre_init.has_listeners(Resource) or signals.post_init.has_listeners(Resource):
        return Resource(**values)
    prototype = _prototypes.get(Resource)
    if prototype is None:
        prototype = _prototypes[Resource] = Resource()
    resource = Resource.__new__(Resource)
    resource.__dict__.update(prototype.__dict__)
    resource.endpoints = []  # the one mutable default
    resource._state = ModelState()
    for name, value in values.items():
        setattr(resource, name, value)
    return resource


def _apply_resource(store: Store, change, record, authority: str, now: dt.datetime) -> str:
    ucri, version = change["key"], _version(change)
    if record.get("ucri") != ucri:
        raise _violation("invalid_record", "the record's ucri differs from the key")
    provider = _mirrored_provider(store, record.get("provider"))
    if identifiers.prefix_of(ucri) != provider.prefix:
        raise _violation("invalid_record", f"{ucri} is not under its provider's prefix {provider.prefix}")
    existing = store.resource(ucri)
    if existing is not None and existing.source == Source.LOCAL:
        raise _violation("local_record", f"{ucri} is this node's own")
    if existing is not None and (existing.is_retired or existing.version >= version):
        return STALE  # retirement is final; older or equal versions change nothing
    status = record.get("status")
    if (change["op"] == "retire") != (status == Resource.Status.RETIRED):
        raise _violation("invalid_record", "op retire goes with status retired, and only with it")
    try:
        site = store.site(uuid.UUID(str(record.get("site_id"))))
    except ValueError:
        site = None
    if site is not None and site.provider_id != provider.pk:
        site = None
    if site is None:
        raise _violation("unknown_reference", f"site {record.get('site_id')} of {provider.prefix} is not mirrored")
    resource = existing or _new_resource(ucri=ucri, provider=provider, source=Source.MIRROR)
    for name in records.RESOURCE_FIELDS:
        if name not in ("site_id", "endpoints"):
            setattr(resource, name, record.get(name))
    for name in ("price_per_hour", "price_per_million_tokens"):
        value = getattr(resource, name)
        if isinstance(value, float):
            # JSON numbers arrive as floats; their shortest repr is the decimal the origin sent.
            setattr(resource, name, Decimal(repr(value)))
    try:
        resource.endpoints = validate_endpoints(record.get("endpoints"))
    except ValidationError as exc:
        raise _violation("invalid_record", f"endpoints: {' '.join(exc.messages)}") from exc
    resource.site = site
    resource.retired_at = _time(record.get("retired_at"), "retired_at", required=status == Resource.Status.RETIRED)
    resource.version, resource.authority, resource.synced_at = version, authority, now
    resource.province, resource.hub, resource.pue, resource.green_ratio = (
        site.province, site.hub, site.pue, site.green_ratio)
    # endpoints: validate_endpoints left a list of {type, url} strings, which the JSON field accepts.
    _clean(resource, exclude=["provider", "site", "ucri", "province", "pue", "green_ratio", "endpoints"])
    if resource.price_unit == Resource.PriceUnit.NODE and not resource.node_count:
        raise _violation("invalid_record", "node_count is required when price_unit is node")
    store.save_resource(resource, _time(record.get("updated_at"), "updated_at", required=False))
    return APPLIED


def _apply_downtime(store: Store, change, record, authority: str, now: dt.datetime) -> str:
    version = _version(change)
    try:
        downtime_id = uuid.UUID(change["key"])
    except (ValueError, TypeError) as exc:
        raise _violation("invalid_key", "a downtime key is a UUID") from exc
    provider = _mirrored_provider(store, record.get("provider"))
    existing = Downtime.objects.select_for_update(of=("self",)).filter(pk=downtime_id).first()
    if existing is not None and (existing.source == Source.LOCAL or existing.provider_id != provider.pk):
        raise _violation("local_record", f"downtime {downtime_id} belongs elsewhere")
    if existing is not None and existing.version >= version:
        return STALE
    tombstone = MirrorTombstone.objects.filter(type="downtime", key=str(downtime_id)).first()
    if tombstone is not None and tombstone.version >= version:
        return STALE  # deleted at its origin: an older upsert never brings it back
    if change["op"] == "retire":
        MirrorTombstone.objects.update_or_create(type="downtime", key=str(downtime_id),
                                                 defaults={"version": version})
        if existing is None:
            return STALE
        existing.delete()
        return APPLIED
    downtime = existing or Downtime(id=downtime_id, provider=provider, source=Source.MIRROR)
    target_ucri, target_site = record.get("resource"), record.get("site_id")
    if bool(target_ucri) == bool(target_site):
        raise _violation("invalid_record", "a downtime names exactly one of resource or site_id")
    if target_ucri:
        downtime.resource = Resource.objects.filter(ucri=target_ucri, provider=provider).first()
        downtime.site = None
        if downtime.resource is None:
            raise _violation("unknown_reference", f"resource {target_ucri} is not mirrored")
    else:
        downtime.site = Site.objects.filter(pk=target_site, provider=provider).first()
        downtime.resource = None
        if downtime.site is None:
            raise _violation("unknown_reference", f"site {target_site} is not mirrored")
    downtime.start, downtime.end = _time(record.get("start"), "start"), _time(record.get("end"), "end")
    if downtime.end <= downtime.start:
        raise _violation("invalid_record", "end must be after start")
    downtime.classification, downtime.reason = record.get("classification"), record.get("reason") or ""
    downtime.version, downtime.authority, downtime.synced_at = version, authority, now
    _clean(downtime, exclude=["provider", "resource", "site"])
    downtime.save()
    return APPLIED


_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)  # json.dumps(..., separators, default), built once


def encoded(record: Mapping[str, Any]) -> str:
    """The record as compact JSON (what a relay stores), refused when over ``MAX_RECORD_BYTES``."""
    text = _COMPACT.encode(record)
    if len(text) > MAX_RECORD_BYTES:
        raise _violation("oversized_record", f"a record is at most {MAX_RECORD_BYTES} bytes")
    return text


def decide(store: Store, change: Mapping[str, Any], *, now: dt.datetime,
           verify_credential: Callable[[Mapping[str, Any]], None] | None = None) -> str:
    """Validate a provider, site or resource change against ``store`` and write it there when it is
    newer; returns APPLIED or STALE, raises ``MirrorViolation`` having written nothing."""
    kind, record, authority = change["type"], change["record"], change["authority"]
    if kind == "provider":
        return _apply_provider(store, change, record, authority, now, verify_credential)
    if kind == "site":
        return _apply_site(store, change, record, authority, now)
    if kind == "resource":
        return _apply_resource(store, change, record, authority, now)
    if kind == "downtime":
        return _apply_downtime(store, change, record, authority, now)
    raise ValueError(f"{kind} changes are applied elsewhere")


def relayed(change: Mapping[str, Any]) -> outbox.Change:
    """An applied change as our own feed carries it on (with its origin's ``authority``)."""
    return outbox.Change(change["type"], change["op"], change["key"], change.get("version"), change["authority"],
                         dict(change["record"]))


def apply(change: Mapping[str, Any], *, now: dt.datetime,
          verify_credential: Callable[[Mapping[str, Any]], None] | None = None,
          relay: list[outbox.Change] | None = None) -> str:
    """Apply one validated-in-shape change; returns APPLIED or STALE, raises ``MirrorViolation``.

    Runs in a savepoint: a violation leaves nothing behind. An applied change is relayed: appended to
    ``relay`` when given (the caller writes a page's relays with one sequence draw), else at once.
    """
    kind, record = change["type"], change["record"]
    if kind not in KNOWN_TYPES:
        raise ValueError(f"unknown type {kind}")
    encoded(record)
    try:
        return _apply(change, kind, now, verify_credential, relay)
    except (IntegrityError, DataError) as exc:
        # A record that collides with what we hold (a reused local_id or site name) or exceeds a
        # column: refused like any other invalid record, never a crashed pull.
        raise conflict(exc) from exc


def conflict(exc: Exception) -> MirrorViolation:
    return _violation("conflict", f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}")


def _apply(change, kind, now, verify_credential, relay) -> str:
    if kind == "availability":
        from .availability import apply_mirrored

        with transaction.atomic():
            return apply_mirrored(change)  # relayed coalesced by our own feed (availability.publish_pending)
    with transaction.atomic():
        outcome = decide(DatabaseStore(), change, now=now, verify_credential=verify_credential)
        if outcome == APPLIED:
            if relay is None:
                outbox.append(relayed(change))
            else:
                relay.append(relayed(change))
    return outcome
