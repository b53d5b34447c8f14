"""Catalog writes. Every function is atomic, validates with ``full_clean`` and appends its outbox entry
(and, for operator events, an audit entry) in the same transaction. Admin, API, CSV import and
commands all call these; nothing else writes the catalog.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import audit, outbox
from core.errors import ApplicationError

from . import error_codes, identifiers, records
from .models import Delegation, Downtime, Platform, Provider, Resource, Site, Source
from .validators import validate_endpoints, validate_province, validate_uscc

RESOURCE_INPUT_FIELDS = frozenset(records.RESOURCE_FIELDS)
SITE_INPUT_FIELDS = frozenset({"name", "province", "hub", "pue", "wue", "cue", "green_ratio", "rack_availability"})
DOWNTIME_INPUT_FIELDS = frozenset({"resource", "site_id", "start", "end", "classification", "reason"})
MINT_ATTEMPTS = 5


# Helpers ------------------------------------------------------------------------------------------

def invalid(errors: Mapping[str, Any], detail: str = "The submitted fields are invalid.") -> ApplicationError:
    normalized = {field: [str(m) for m in (msgs if isinstance(msgs, list | tuple) else [msgs])]
                  for field, msgs in errors.items()}
    return ApplicationError(error_codes.INVALID_REQUEST, detail, status=400, extra={"errors": normalized})


def _full_clean(instance, exclude: list[str] | None = None) -> None:
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise invalid(exc.message_dict) from exc


def _reject_unknown(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise invalid({name: ["unknown field"] for name in unknown})


def _check_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise ApplicationError(error_codes.PRECONDITION_FAILED,
                               f"the object is at version {current}, not {expected}", status=412)


# This node's own record is written once (``node_init`` refuses any change), so each process keeps the
# copy it read outside a transaction (committed) for a while instead of reading it on every request.
# Reads inside a transaction neither use nor fill it. ``forget_this_node`` empties it (tests, node_init).
THIS_NODE_CACHE_SECONDS = 60.0
_this_node: tuple[float, Platform] | None = None


def this_node() -> Platform:
    global _this_node
    cacheable = not connection.in_atomic_block
    if cacheable and _this_node is not None and time.monotonic() - _this_node[0] < THIS_NODE_CACHE_SECONDS:
        return copy.copy(_this_node[1])
    node = Platform.objects.filter(is_self=True).first()
    if node is None:
        raise ApplicationError(error_codes.NODE_NOT_INITIALIZED,
                               "this node has not been initialised (run cir_node_init)", status=409)
    if cacheable:
        _this_node = (time.monotonic(), copy.copy(node))
    return node


def forget_this_node() -> None:
    global _this_node
    _this_node = None


# Node ---------------------------------------------------------------------------------------------

def node_init(*, role: str, code: str | None, entity_id: str, actor: str = "system") -> tuple[Platform, bool]:
    """First set-up of this node (CONTRACT §10). Returns (node, created); idempotent, refuses changes."""
    if role not in Platform.Role.values:
        raise invalid({"role": [f"must be one of {', '.join(Platform.Role.values)}"]})
    code = (code or "").strip().upper()
    if role == Platform.Role.NATIONAL:
        if code:
            raise invalid({"code": ["the national node takes no code; it owns 86"]})
        prefix = identifiers.ROOT
    else:
        if not code:
            raise invalid({"code": [f"a {role} node needs --code"]})
        prefix = f"{identifiers.ROOT}.{code}"
        if not identifiers.is_prefix(prefix):
            raise invalid({"code": [f"{code!r} does not form a valid prefix"]})
        if role == Platform.Role.PROVINCIAL and (code.count(".") or code not in _province_codes()):
            raise invalid({"code": ["a provincial node's code is its GB/T 2260 two-digit province code"]})
        if role == Platform.Role.MINISTERIAL and (code.count(".") or not code.startswith("M")):
            raise invalid({"code": ["a ministerial node's code starts with M (e.g. M01)"]})
        if role == Platform.Role.INDUSTRY and not code.count("."):
            raise invalid({"code": ["an industry node sits under a platform prefix (e.g. 52.IND1)"]})
    entity_id = _normalize_entity_id(entity_id)
    with transaction.atomic():
        existing = Platform.objects.select_for_update().filter(is_self=True).first()
        if existing is not None:
            if (existing.role, existing.code, existing.entity_id) == (role, code, entity_id):
                return existing, False
            raise ApplicationError(
                error_codes.NODE_ALREADY_INITIALIZED,
                f"this node is already initialised as {existing.role} {existing.prefix} at "
                f"{existing.entity_id}; refusing to change it",
                status=409,
            )
        node = Platform(entity_id=entity_id, role=role, code=code, prefix=prefix, is_self=True,
                        name=f"CIR {role} node {prefix}")
        _full_clean(node, exclude=["entity_id"])
        node.save()
        audit.record(actor=actor, action="node.initialised", target_type="platform", target_key=prefix,
                     data={"role": role, "entity_id": entity_id})
    forget_this_node()
    return node, True


def _province_codes() -> set[str]:
    from .reference import provinces

    return set(provinces())


def _normalize_entity_id(entity_id: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit((entity_id or "").strip())
    loopback = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if parts.scheme not in {"https", "http"} or not parts.hostname or (parts.scheme == "http" and not loopback):
        raise invalid({"entity_id": ["an entity ID is an https URL (http only for loopback hosts)"]})
    if parts.query or parts.fragment:
        raise invalid({"entity_id": ["an entity ID has no query or fragment"]})
    return (entity_id or "").strip().rstrip("/")


# Federation peers --------------------------------------------------------------------------------

def platform_delegate(*, entity_id: str, prefix: str, actor: str = "system") -> Platform:
    """Delegate ``prefix`` (directly under this node's) to a subordinate platform node."""
    node = this_node()
    entity_id = _normalize_entity_id(entity_id)
    try:
        prefix = identifiers.normalize_prefix(prefix)
    except identifiers.UCRIError as exc:
        raise invalid({"prefix": [str(exc)]}) from exc
    parent, _, code = prefix.rpartition(".")
    if parent != node.prefix:
        raise invalid({"prefix": [f"a subordinate's prefix is one segment under this node's {node.prefix}"]})
    if node.prefix == identifiers.ROOT:
        if code.isdigit() and len(code) == 2:
            if code not in _province_codes():
                raise invalid({"prefix": [f"{code} is not a GB/T 2260 province code"]})
            role = Platform.Role.PROVINCIAL
        elif code.startswith("M"):
            role = Platform.Role.MINISTERIAL
        else:
            raise ApplicationError(error_codes.PREFIX_RESERVED,
                                   "under 86, platforms take two-digit province codes or codes starting with M",
                                   status=409)
    else:
        role = Platform.Role.INDUSTRY
    with transaction.atomic():
        existing = Platform.objects.filter(entity_id=entity_id).first()
        if existing is not None:
            if existing.prefix == prefix and not existing.is_self:
                return existing
            raise ApplicationError(error_codes.PREFIX_TAKEN, f"{entity_id} is already known with prefix "
                                   f"{existing.prefix}", status=409)
        _delegate(prefix=prefix, parent=node.prefix, kind=Delegation.Kind.PLATFORM)
        platform = Platform.objects.create(entity_id=entity_id, role=role, code=prefix[len("86."):], prefix=prefix,
                                           name=f"CIR {role} node {prefix}")
        audit.record(actor=actor, action="platform.delegated", target_type="platform", target_key=prefix,
                     data={"entity_id": entity_id, "role": role})
    return platform


def platform_set_superior(*, entity_id: str, prefix: str, actor: str = "system") -> Platform:
    """Record this node's superior (the node that owns the prefix above ours)."""
    node = this_node()
    entity_id = _normalize_entity_id(entity_id)
    if entity_id == node.entity_id:
        raise invalid({"entity_id": ["a node cannot be its own superior"]})
    with transaction.atomic():
        current = Platform.objects.filter(is_superior=True).first()
        if current is not None and current.entity_id != entity_id:
            raise ApplicationError("superior_already_set", f"this node's superior is {current.entity_id}", status=409)
        superior, _ = Platform.objects.get_or_create(
            entity_id=entity_id, defaults={"role": Platform.Role.NATIONAL if prefix == identifiers.ROOT
                                           else Platform.Role.PROVINCIAL, "code": prefix[len("86."):],
                                           "prefix": prefix, "name": f"superior {prefix}"})
        if not superior.is_superior:
            superior.is_superior = True
            superior.save(update_fields=["is_superior"])
            audit.record(actor=actor, action="platform.superior_set", target_type="platform", target_key=prefix,
                         data={"entity_id": entity_id})
    return superior


# Providers ----------------------------------------------------------------------------------------

def provider_approve(*, name: str, uscc: str, code: str, actor: str = "system",
                     on_created: Callable[[Provider], None] | None = None) -> Provider:
    """Approve a provider under this node's prefix, delegating ``<node prefix>.<code>`` to it.

    ``on_created`` runs once the row exists and before its first outbox entry, so that the identity
    app can attach the first credential and the provider enters the feed once, at version 1.
    """
    node = this_node()
    code = (code or "").strip().upper()
    errors: dict[str, list[str]] = {}
    if not identifiers.is_segment(code):
        errors["code"] = ["1-8 characters from 0-9 and A-Z"]
    elif node.prefix == identifiers.ROOT and ((len(code) == 2 and code.isdigit()) or code.startswith("M")):
        raise ApplicationError(error_codes.PREFIX_RESERVED,
                               "under 86, two-digit codes and codes starting with M are kept for platforms",
                               status=409)
    try:
        uscc = validate_uscc((uscc or "").strip().upper())
    except ValidationError as exc:
        errors["uscc"] = exc.messages
    if not (name or "").strip():
        errors["name"] = ["required"]
    if errors:
        raise invalid(errors)
    prefix = identifiers.child_prefix(node.prefix, code)
    with transaction.atomic():
        _delegate(prefix=prefix, parent=node.prefix, kind=Delegation.Kind.PROVIDER)
        provider = Provider(prefix=prefix, code=code, name=name.strip(), uscc=uscc,
                            authority=node.entity_id, source=Source.LOCAL)
        _full_clean(provider)
        provider.save()
        if on_created is not None:
            on_created(provider)
            provider.save()
        outbox.append(_provider_change(provider))
        audit.record(actor=actor, action="provider.approved", target_type="provider", target_key=prefix,
                     data={"name": provider.name, "uscc": uscc})
    return provider


def _delegate(*, prefix: str, parent: str, kind: str) -> Delegation:
    try:
        with transaction.atomic():
            return Delegation.objects.create(prefix=prefix, parent=parent, kind=kind)
    except IntegrityError as exc:
        raise ApplicationError(error_codes.PREFIX_TAKEN, f"{prefix} is already delegated", status=409) from exc


def provider_update(*, provider: Provider, name: str, actor: str = "system") -> Provider:
    with transaction.atomic():
        provider = Provider.objects.select_for_update().get(pk=provider.pk)
        if provider.name == name.strip():
            return provider
        provider.name = name.strip()
        _full_clean(provider)
        provider.version += 1
        provider.save()
        outbox.append(_provider_change(provider))
        audit.record(actor=actor, action="provider.renamed", target_type="provider", target_key=provider.prefix,
                     data={"name": provider.name})
    return provider


def provider_set_status(*, provider: Provider, status: str, reason: str, actor: str = "system",
                        credential_status: str | None = None) -> Provider:
    """Change a provider's status (and, from the identity app, its credential status) as one change."""
    if status not in Provider.Status.values:
        raise invalid({"status": [f"must be one of {', '.join(Provider.Status.values)}"]})
    with transaction.atomic():
        provider = Provider.objects.select_for_update().get(pk=provider.pk)
        credential_status = credential_status or provider.credential_status
        if (provider.status, provider.credential_status) == (status, credential_status):
            return provider
        if provider.status == Provider.Status.REVOKED:
            raise ApplicationError("provider_revoked", "revocation is final", status=409)
        provider.status = status
        provider.credential_status = credential_status
        provider.version += 1
        provider.save()
        outbox.append(_provider_change(provider))
        audit.record(actor=actor, action=f"provider.{status}", target_type="provider",
                     target_key=provider.prefix, data={"reason": reason})
    return provider


def provider_record_credential(*, provider: Provider, credential: str, status: str,
                               expires_at) -> Provider:
    """Store the provider's current credential and its status (set by the identity app)."""
    with transaction.atomic():
        provider = Provider.objects.select_for_update().get(pk=provider.pk)
        if (provider.credential, provider.credential_status, provider.credential_expires_at) == (
                credential, status, expires_at):
            return provider
        provider.credential, provider.credential_status = credential, status
        provider.credential_expires_at = expires_at
        provider.version += 1
        provider.save()
        outbox.append(_provider_change(provider))
    return provider


def _provider_change(provider: Provider) -> outbox.Change:
    return outbox.Change("provider", "upsert", provider.prefix, provider.version, provider.authority,
                         records.provider_feed(provider))


def _require_writable_provider(provider: Provider) -> None:
    if provider.source != Source.LOCAL:
        raise ApplicationError(error_codes.NOT_FOUND, "no such provider at this node", status=404)
    if provider.status != Provider.Status.ACTIVE:
        raise ApplicationError(error_codes.PROVIDER_NOT_ACTIVE,
                               f"provider {provider.prefix} is {provider.status}", status=409)


# Sites --------------------------------------------------------------------------------------------

def _apply_site_fields(site: Site, data: Mapping[str, Any]) -> None:
    _reject_unknown(data, SITE_INPUT_FIELDS)
    given_hub = data.get("hub")
    for name, value in data.items():
        if name != "hub":
            setattr(site, name, value)
    _full_clean(site, exclude=["provider", "hub"])
    try:
        validate_province(site.province)
    except ValidationError as exc:
        raise invalid({"province": exc.messages}) from exc
    from .reference import hub_for_province

    derived = hub_for_province(site.province)
    if "hub" in data and given_hub not in (None, "") and given_hub != derived:
        raise invalid({"hub": [f"province {site.province} belongs to hub {derived or 'none'}, not {given_hub!r}"]})
    site.hub = derived


def site_create(*, provider: Provider, data: Mapping[str, Any]) -> Site:
    _require_writable_provider(provider)
    site = Site(provider=provider, authority=provider.authority, source=Source.LOCAL)
    _apply_site_fields(site, data)
    with transaction.atomic():
        if Site.objects.filter(provider=provider, name=site.name).exists():
            raise invalid({"name": ["this provider already has a site with this name"]})
        site.save()
        outbox.append(_site_change(site))
    return site


def site_update(*, site: Site, data: Mapping[str, Any], expected_version: int | None = None) -> Site:
    with transaction.atomic():
        site = Site.objects.select_for_update().select_related("provider").get(pk=site.pk)
        _require_writable_provider(site.provider)
        _check_version(site.version, expected_version)
        before = {name: getattr(site, name) for name in SITE_INPUT_FIELDS}
        _apply_site_fields(site, data)
        if {name: getattr(site, name) for name in SITE_INPUT_FIELDS} == before:
            return site
        if Site.objects.filter(provider=site.provider, name=site.name).exclude(pk=site.pk).exists():
            raise invalid({"name": ["this provider already has a site with this name"]})
        site.version += 1
        site.save()
        # Keep the resources' search copies of the site's facts in step (see Resource).
        Resource.objects.filter(site=site).update(province=site.province, hub=site.hub, pue=site.pue,
                                                  green_ratio=site.green_ratio, updated_at=timezone.now())
        outbox.append(_site_change(site))
    return site


def _site_change(site: Site) -> outbox.Change:
    return outbox.Change("site", "upsert", str(site.id), site.version, site.authority, records.site_feed(site))


# Resources ----------------------------------------------------------------------------------------

def _apply_resource_fields(resource: Resource, data: Mapping[str, Any], *, provider: Provider) -> None:
    _reject_unknown(data, RESOURCE_INPUT_FIELDS)
    errors: dict[str, list[str]] = {}
    for name, value in data.items():
        if name == "site_id":
            continue
        setattr(resource, name, value)
    if "site_id" in data:
        site = _own_site(provider, data["site_id"])
        if site is None:
            errors["site_id"] = ["no such site of this provider"]
        else:
            resource.site = site
    if "status" in data and data["status"] not in (Resource.Status.ACTIVE, Resource.Status.SUSPENDED):
        errors["status"] = ["must be active or suspended (retire with the retire action)"]
    if "endpoints" in data:
        try:
            resource.endpoints = validate_endpoints(data["endpoints"])
        except ValidationError as exc:
            errors["endpoints"] = exc.messages
    try:
        resource.full_clean(exclude=["provider", "site", "ucri", "province", "pue", "green_ratio", "endpoints"],
                            validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if resource.price_unit == Resource.PriceUnit.NODE and not resource.node_count and "node_count" not in errors:
        errors["node_count"] = ["required when price_unit is node"]
    if resource.site_id is None and "site_id" not in errors:
        errors["site_id"] = ["required"]
    if errors:
        raise invalid(errors)
    _copy_site_facts(resource, resource.site)


def _own_site(provider: Provider, site_id: Any) -> Site | None:
    if isinstance(site_id, Site):
        return site_id if site_id.provider_id == provider.pk else None
    try:
        site_uuid = uuid.UUID(str(site_id))
    except (TypeError, ValueError, AttributeError):
        return None
    return Site.objects.filter(pk=site_uuid, provider=provider).first()


def _copy_site_facts(resource: Resource, site: Site) -> None:
    resource.province, resource.hub, resource.pue, resource.green_ratio = (
        site.province, site.hub, site.pue, site.green_ratio)


def resource_create(*, provider: Provider, data: Mapping[str, Any]) -> Resource:
    """Mint a UCRI under the provider's prefix and register the resource."""
    _require_writable_provider(provider)
    missing = sorted(name for name in RESOURCE_INPUT_FIELDS - set(data)
                     if name in _REQUIRED_RESOURCE_FIELDS)
    if missing:
        raise invalid({name: ["required"] for name in missing})
    resource = Resource(provider=provider, authority=provider.authority, source=Source.LOCAL)
    _apply_resource_fields(resource, data, provider=provider)
    with transaction.atomic():
        if Resource.objects.filter(provider=provider, local_id=resource.local_id).exists():
            raise _local_id_conflict(resource.local_id)
        _insert_with_fresh_ucri(resource)
        outbox.append(_resource_change(resource))
    return resource


_REQUIRED_RESOURCE_FIELDS = frozenset({
    "local_id", "name", "kind", "site_id", "accelerator", "accelerator_model", "accelerator_count",
    "price_per_hour", "price_unit",
})


def _local_id_conflict(local_id: str) -> ApplicationError:
    return ApplicationError(error_codes.LOCAL_ID_CONFLICT,
                            f"this provider already has a resource with local_id {local_id!r}", status=409)


def _insert_with_fresh_ucri(resource: Resource) -> None:
    for _attempt in range(MINT_ATTEMPTS):
        resource.ucri = identifiers.mint(resource.provider.prefix)
        try:
            with transaction.atomic():
                resource.save(force_insert=True)
            return
        except IntegrityError as exc:
            if Resource.objects.filter(provider=resource.provider, local_id=resource.local_id).exists():
                raise _local_id_conflict(resource.local_id) from exc
            if not Resource.objects.filter(ucri=resource.ucri).exists():
                raise
            resource.pk = None
    raise RuntimeError("could not mint a unique UCRI")  # 60 random bits: practically unreachable


def resource_update(*, resource: Resource, data: Mapping[str, Any], expected_version: int | None = None) -> Resource:
    with transaction.atomic():
        resource = (Resource.objects.select_for_update(of=("self",))
                    .select_related("provider", "site").get(pk=resource.pk))
        _require_writable_provider(resource.provider)
        if resource.is_retired:
            raise ApplicationError(error_codes.RESOURCE_RETIRED, f"{resource.ucri} is retired", status=409)
        _check_version(resource.version, expected_version)
        if resource.operator_hold and data.get("status") == Resource.Status.ACTIVE:
            raise ApplicationError("suspended_by_operator", f"{resource.ucri} was suspended by a platform operator; "
                                   "only an operator can lift that", status=409)
        if "local_id" in data and data["local_id"] != resource.local_id and Resource.objects.filter(
                provider=resource.provider, local_id=data["local_id"]).exists():
            raise _local_id_conflict(data["local_id"])
        before = _resource_state(resource)
        _apply_resource_fields(resource, data, provider=resource.provider)
        if _resource_state(resource) == before:
            return resource
        resource.version += 1
        resource.save()
        outbox.append(_resource_change(resource))
    return resource


def _resource_state(resource: Resource) -> dict[str, Any]:
    return {name: getattr(resource, name) for name in records.RESOURCE_FIELDS}


def resource_retire(*, resource: Resource) -> Resource:
    """Retire for good: the UCRI keeps a tombstone and is never revived (idempotent)."""
    with transaction.atomic():
        resource = (Resource.objects.select_for_update(of=("self",))
                    .select_related("provider", "site").get(pk=resource.pk))
        if resource.source != Source.LOCAL:
            raise ApplicationError(error_codes.NOT_FOUND, "no such resource at this node", status=404)
        if resource.is_retired:
            return resource
        resource.status = Resource.Status.RETIRED
        resource.retired_at = timezone.now()
        resource.version += 1
        resource.save()
        outbox.append(_resource_change(resource))
    return resource


def operator_suspend_resource(*, resource: Resource, actor: str, reason: str = "") -> Resource:
    """A platform operator may suspend any local resource (CONTRACT §9); the provider cannot undo it."""
    with transaction.atomic():
        resource = resource_update(resource=resource, data={"status": Resource.Status.SUSPENDED})
        Resource.objects.filter(pk=resource.pk).update(operator_hold=True)
        resource.operator_hold = True
        audit.record(actor=actor, action="resource.suspended", target_type="resource", target_key=resource.ucri,
                     data={"reason": reason})
    return resource


def operator_release_resource(*, resource: Resource, actor: str, reason: str = "") -> Resource:
    """Lift an operator's hold; the resource stays suspended until its provider reactivates it."""
    with transaction.atomic():
        updated = Resource.objects.filter(pk=resource.pk, operator_hold=True).update(operator_hold=False)
        if updated:
            audit.record(actor=actor, action="resource.hold_lifted", target_type="resource",
                         target_key=resource.ucri, data={"reason": reason})
    resource.refresh_from_db()
    return resource


def _resource_change(resource: Resource) -> outbox.Change:
    op = "retire" if resource.is_retired else "upsert"
    return outbox.Change("resource", op, resource.ucri, resource.version, resource.authority,
                         records.resource_feed(resource))


# Downtimes ----------------------------------------------------------------------------------------

def downtime_create(*, provider: Provider, data: Mapping[str, Any]) -> Downtime:
    _require_writable_provider(provider)
    _reject_unknown(data, DOWNTIME_INPUT_FIELDS)
    downtime = Downtime(provider=provider, authority=provider.authority, source=Source.LOCAL)
    errors: dict[str, list[str]] = {}
    target_resource, target_site = data.get("resource"), data.get("site_id")
    if bool(target_resource) == bool(target_site):
        errors["resource"] = ["give exactly one of resource (a UCRI) or site_id"]
    elif target_resource:
        resource = _own_resource(provider, target_resource)
        if resource is None:
            errors["resource"] = ["no such resource of this provider"]
        elif resource.is_retired:
            errors["resource"] = ["the resource is retired"]
        else:
            downtime.resource = resource
    else:
        site = _own_site(provider, target_site)
        if site is None:
            errors["site_id"] = ["no such site of this provider"]
        else:
            downtime.site = site
    for name in ("start", "end", "classification", "reason"):
        if name in data:
            setattr(downtime, name, data[name])
    try:
        downtime.full_clean(exclude=["provider", "resource", "site"], validate_unique=False,
                            validate_constraints=False)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if not errors and downtime.end <= downtime.start:
        errors["end"] = ["must be after start"]
    if errors:
        raise invalid(errors)
    with transaction.atomic():
        downtime.save()
        outbox.append(outbox.Change("downtime", "upsert", str(downtime.id), downtime.version, downtime.authority,
                                    records.downtime_feed(downtime)))
    return downtime


def _own_resource(provider: Provider, ucri_text: Any) -> Resource | None:
    try:
        ucri = identifiers.canonicalize(str(ucri_text))
    except identifiers.UCRIError:
        return None
    return Resource.objects.filter(ucri=ucri, provider=provider).first()


def downtime_delete(*, downtime: Downtime) -> None:
    with transaction.atomic():
        downtime = (Downtime.objects.select_for_update(of=("self",)).select_related("provider", "resource")
                    .get(pk=downtime.pk))
        _require_writable_provider(downtime.provider)
        record = records.downtime_feed(downtime)
        key, version, authority = str(downtime.id), downtime.version + 1, downtime.authority
        record["version"] = version
        downtime.delete()
        outbox.append(outbox.Change("downtime", "retire", key, version, authority, record))
