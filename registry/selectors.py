"""Catalog reads: resolution, discovery and per-provider visibility."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from core.errors import ApplicationError

from . import error_codes, identifiers, records
from .models import Delegation, Downtime, Platform, Provider, Resource, Site

# Visibility ---------------------------------------------------------------------------------------

def provider_of_user(user) -> Provider | None:
    """The provider a staff user is bound to (CONTRACT §14), or None for operators and superusers."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    membership = getattr(user, "provider_membership", None)
    return membership.provider if membership is not None else None


def is_operator(user) -> bool:
    return bool(user and user.is_authenticated and (
        user.is_superuser or (user.is_staff and provider_of_user(user) is None
                              and user.groups.filter(name=OPERATOR_GROUP).exists())))


OPERATOR_GROUP = "Platform operators"


def visible_to(queryset: QuerySet, user, *, provider_field: str = "provider") -> QuerySet:
    """Restrict a provider-owned queryset to what ``user`` may see privately: operators see all,
    provider staff their own provider's rows, anyone else nothing."""
    if user is not None and user.is_authenticated and user.is_superuser:
        return queryset
    provider = provider_of_user(user)
    if provider is not None:
        return queryset.filter(**{provider_field: provider})
    if is_operator(user):
        return queryset
    return queryset.none()


# Resolution ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resolution:
    """What a resolve answers: a live record (200), a tombstone (410) or a problem (4xx)."""

    status: int
    body: dict[str, Any]

    @property
    def is_record(self) -> bool:
        return self.status == 200


def _resources_with_relations() -> QuerySet[Resource]:
    return Resource.objects.select_related("provider", "site")


def current_downtimes(resources: Sequence[Resource]) -> dict[int, list[Downtime]]:
    """Ongoing and announced downtimes of each resource, its own and its site's, in start order."""
    if not resources:
        return {}
    now = timezone.now()
    resource_ids = [r.pk for r in resources]
    site_ids = {r.site_id for r in resources}
    rows = (Downtime.objects.filter(end__gt=now)
            .filter(Q(resource_id__in=resource_ids) | Q(site_id__in=site_ids))
            .order_by("start", "id"))
    by_resource: dict[int, list[Downtime]] = defaultdict(list)
    by_site: dict[Any, list[Downtime]] = defaultdict(list)
    for row in rows:
        (by_resource[row.resource_id] if row.resource_id else by_site[row.site_id]).append(row)
    result = {}
    for resource in resources:
        merged = by_resource.get(resource.pk, []) + by_site.get(resource.site_id, [])
        merged.sort(key=lambda d: (d.start, str(d.id)))
        result[resource.pk] = merged
    return result


def records_for(resources: Sequence[Resource]) -> list[dict[str, Any]]:
    downtimes = current_downtimes(resources)
    return [records.resource_public(r, downtimes.get(r.pk, ())) for r in resources]


def _ucri_problem(code: str, status: int, detail: str, **extra: Any) -> Resolution:
    from core.problems import problem_body

    return Resolution(status, problem_body(status, code, detail, **extra))


def resolve(text: str) -> Resolution:
    try:
        ucri = identifiers.canonicalize(text)
    except identifiers.UCRIError as exc:
        return _ucri_problem(exc.code, 400, str(exc))
    resource = _resources_with_relations().filter(ucri=ucri).first()
    if resource is None:
        return _unknown(ucri)
    return _answer(resource)


def _answer(resource: Resource, record: dict[str, Any] | None = None) -> Resolution:
    record = record or records_for([resource])[0]
    if resource.is_retired:
        return _ucri_problem(error_codes.UCRI_RETIRED, 410, f"{resource.ucri} was retired; its tombstone is kept",
                             record=record)
    return Resolution(200, record)


def _unknown(ucri: str) -> Resolution:
    """No record here: refer to the node to ask next, or answer unknown (CONTRACT §3)."""
    prefix = identifiers.prefix_of(ucri)
    node = self_node()
    next_node = None
    if node is not None and identifiers.prefix_within(prefix, node.prefix):
        # Inside our subtree: the subordinate holding a delegated prefix over it, if any.
        holders = [p for p in Platform.objects.filter(is_self=False, is_superior=False)
                   if identifiers.prefix_within(prefix, p.prefix)]
        next_node = max(holders, key=lambda p: len(p.prefix), default=None)
    elif node is not None:
        next_node = Platform.objects.filter(is_superior=True).first()
    if next_node is None:
        return _ucri_problem(error_codes.UCRI_UNKNOWN, 404, f"no resource is registered as {ucri}")
    location = f"{next_node.entity_id}/api/v1/resolve/{ucri}"
    return _ucri_problem(error_codes.UCRI_REFERRAL, 404, f"{ucri} is not held here; ask {next_node.entity_id}",
                         next_node=next_node.entity_id, location=location)


def resolve_many(texts: Iterable[str]) -> dict[str, Resolution]:
    """Batch resolve: each answer exactly what the single resolve would give."""
    texts = list(dict.fromkeys(texts))
    answers: dict[str, Resolution] = {}
    canonical: dict[str, str] = {}
    for text in texts:
        try:
            canonical[text] = identifiers.canonicalize(text)
        except identifiers.UCRIError as exc:
            answers[text] = _ucri_problem(exc.code, 400, str(exc))
    found = {r.ucri: r for r in _resources_with_relations().filter(ucri__in=set(canonical.values()))}
    rendered = dict(zip(found, records_for(list(found.values())), strict=True))
    for text, ucri in canonical.items():
        resource = found.get(ucri)
        answers[text] = _answer(resource, rendered[ucri]) if resource else _unknown(ucri)
    return {text: answers[text] for text in texts}


def provider_by_prefix(text: str) -> Provider:
    try:
        prefix = identifiers.normalize_prefix(text)
    except identifiers.UCRIError as exc:
        raise ApplicationError(exc.code, str(exc), status=400) from exc
    provider = Provider.objects.filter(prefix=prefix).first()
    if provider is None:
        raise ApplicationError(error_codes.NOT_FOUND, f"no provider holds the prefix {prefix}", status=404)
    return provider


# Discovery ----------------------------------------------------------------------------------------

def discovery_queryset(*, include_downtime: bool) -> QuerySet[Resource]:
    queryset = _resources_with_relations()
    if not include_downtime:
        now = timezone.now()
        ongoing = Downtime.objects.filter(start__lte=now, end__gt=now)
        queryset = queryset.exclude(Exists(ongoing.filter(resource_id=OuterRef("pk")))).exclude(
            Exists(ongoing.filter(site_id=OuterRef("site_id"))))
    return queryset


def under_prefix(queryset: QuerySet[Resource], prefix: str) -> QuerySet[Resource]:
    """Every resource whose UCRI lies under ``prefix`` (segment-wise)."""
    return queryset.filter(Q(ucri__startswith=prefix + "/") | Q(ucri__startswith=prefix + "."))


def self_node() -> Platform | None:
    return Platform.objects.filter(is_self=True).first()


def sites_of(provider: Provider) -> QuerySet[Site]:
    return Site.objects.filter(provider=provider)


def delegations_under(prefix: str) -> QuerySet[Delegation]:
    return Delegation.objects.filter(parent=prefix)
