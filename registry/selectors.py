"""Catalog reads: resolution, discovery and per-provider visibility."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.functional import cached_property

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


def current_downtimes(resources: Sequence[Resource], now=None) -> dict[int, list[Downtime]]:
    """Ongoing and announced downtimes of each resource, its own and its site's, in start order."""
    if not resources:
        return {}
    now = now or timezone.now()
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
    """The §3 records. Resources from ``public_page`` say whether any current downtime concerns them
    (``has_current_downtime``): only those are looked up."""
    now = timezone.now()
    downtimes = current_downtimes([r for r in resources if getattr(r, "has_current_downtime", True)], now)
    return [records.resource_public(r, downtimes.get(r.pk, ())) for r in resources]


class _RecordRows:
    """Resolution's lookup by UCRI as one statement built once per process: each resource row with its
    provider and site, and whether any current downtime concerns it.

    At 1,000,000 resources PostgreSQL answers the point lookup in a fraction of the time the ORM spent
    compiling the ``select_related`` query and the downtime query on every request (bench/resolve.py,
    docs/benchmarks.md). It reads the columns the record shows (``records.PUBLIC_RECORD_FIELDS``; the
    others are deferred) into the instances ``select_related`` would build, database converters applied,
    so records render exactly as before; the downtime query runs only for resources that have one.
    """

    MODELS = ((Resource, "r", "resource"), (Provider, "p", "provider"), (Site, "s", "site"))

    @cached_property
    def _layout(self) -> tuple[str, list[tuple[type, list[str], list[tuple[int, list, Any]]]], str]:
        alias = Resource.objects.db
        connection = connections[alias]
        qn = connection.ops.quote_name
        columns, layout = [], []
        for model, table, name in self.MODELS:
            wanted = {model._meta.get_field(n) for n in records.PUBLIC_RECORD_FIELDS[name]} | {model._meta.pk}
            fields = [f for f in model._meta.concrete_fields if f in wanted]
            converters = []
            for i, f in enumerate(fields):
                col = f.get_col(table)
                functions = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
                if functions:
                    converters.append((i, functions, col))
            layout.append((model, [f.attname for f in fields], converters))
            columns += [f"{table}.{qn(f.column)}" for f in fields]
        r_provider, r_site = (Resource._meta.get_field(n).column for n in ("provider", "site"))
        d_end, d_resource, d_site = (Downtime._meta.get_field(n).column for n in ("end", "resource", "site"))
        # Identifiers only (quoted names from the models); values are parameters.
        has_downtime = (f"EXISTS (SELECT 1 FROM {qn(Downtime._meta.db_table)} d WHERE d.{qn(d_end)} > %s"  # noqa: S608
                        f" AND (d.{qn(d_resource)} = r.{qn(Resource._meta.pk.column)}"
                        f" OR d.{qn(d_site)} = r.{qn(r_site)}))")
        sql = (f"SELECT {', '.join(columns)}, {has_downtime}"  # noqa: S608
               f" FROM {qn(Resource._meta.db_table)} r"
               f" INNER JOIN {qn(Provider._meta.db_table)} p ON r.{qn(r_provider)} = p.{qn(Provider._meta.pk.column)}"
               f" INNER JOIN {qn(Site._meta.db_table)} s ON r.{qn(r_site)} = s.{qn(Site._meta.pk.column)}"
               f" WHERE r.{qn(Resource._meta.get_field('ucri').column)}")
        return sql, layout, alias

    def fetch(self, ucris: Sequence[str], now) -> tuple[list[Resource], set[int]]:
        """Resources with these UCRIs (provider and site loaded), and the pks of those with a current downtime."""
        if not ucris:
            return [], set()
        sql, layout, alias = self._layout
        connection = connections[alias]
        if len(ucris) == 1:
            sql, params = sql + " = %s", [ucris[0]]
        elif connection.vendor == "postgresql":
            sql, params = sql + " = ANY(%s)", [list(ucris)]  # one parameter, however many UCRIs
        else:
            sql, params = sql + f" IN ({', '.join(['%s'] * len(ucris))})", list(ucris)
        with _statement_cursor(connection) as cursor:
            cursor.execute(sql, [connection.ops.adapt_datetimefield_value(now), *params])
            rows = cursor.fetchall()
        provider_field, site_field = Resource._meta.get_field("provider"), Resource._meta.get_field("site")
        resources, flagged = [], set()
        for row in rows:
            start, objects = 0, []
            for model, attnames, converters in layout:
                end = start + len(attnames)
                values = row[start:end]
                if converters:
                    values = list(values)
                    for i, functions, col in converters:
                        for convert in functions:
                            values[i] = convert(values[i], col, connection)
                objects.append(model.from_db(alias, attnames, values))
                start = end
            resource, provider, site = objects
            provider_field.set_cached_value(resource, provider)
            site_field.set_cached_value(resource, site)
            resources.append(resource)
            if row[start]:
                flagged.add(resource.pk)
        return resources, flagged


_record_rows = _RecordRows()


def _statement_cursor(connection):
    """A cursor for a fixed statement run on every request: on PostgreSQL (psycopg 3) it binds parameters
    on the server, so psycopg prepares the statement after ``prepare_threshold`` runs on a connection (the
    database setting's ``OPTIONS``) and PostgreSQL stops planning it each time; Django's cursors bind on
    the client and never prepare. Otherwise, when ``prepare_threshold`` is None, and while queries are
    logged (``DEBUG``, tests counting queries: a prepared run has no SQL text to log), Django's own cursor."""
    if (connection.vendor != "postgresql" or connection.settings_dict["OPTIONS"].get("prepare_threshold") is None
            or connection.queries_logged):
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    # What connection.cursor() does, with a server-binding psycopg cursor inside Django's wrapper (error
    # translation, execute wrappers and the health check behave as for any other query).
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        raw = ServerBindingCursor(connection.connection)
    return connection.make_cursor(raw)


def _found_records(ucris: Sequence[str]) -> dict[str, tuple[Resource, dict[str, Any]]]:
    """Resource and §3 record of each UCRI held here, rendered as ``records_for`` renders them."""
    now = timezone.now()
    resources, flagged = _record_rows.fetch(ucris, now)
    downtimes = current_downtimes([r for r in resources if r.pk in flagged], now)
    return {r.ucri: (r, records.resource_public(r, downtimes.get(r.pk, ()))) for r in resources}


def _ucri_problem(code: str, status: int, detail: str, **extra: Any) -> Resolution:
    from core.problems import problem_body

    return Resolution(status, problem_body(status, code, detail, **extra))


def resolve(text: str) -> Resolution:
    try:
        ucri = identifiers.canonicalize(text)
    except identifiers.UCRIError as exc:
        return _ucri_problem(exc.code, 400, str(exc))
    found = _found_records([ucri]).get(ucri)
    if found is None:
        return _unknown(ucri)
    return _answer(*found)


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
    found = _found_records(list(dict.fromkeys(canonical.values())))
    for text, ucri in canonical.items():
        answers[text] = _answer(*found[ucri]) if ucri in found else _unknown(ucri)
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


# What availability.public reads of a held report.
AVAILABILITY_FIELDS = ("available_units", "queued_jobs", "observed_at", "expires_at")


def public_page(queryset: QuerySet[Resource], order_fields: Iterable[str] = ()) -> QuerySet[Resource]:
    """A discovery queryset shaped for rendering its page as §3 records with availability, in one query:
    only the columns the records read (``records.PUBLIC_RECORD_FIELDS``, plus ``order_fields`` for the
    cursor; the rest deferred), each resource's held availability report joined, and whether any current
    downtime concerns it (``has_current_downtime``, so ``records_for`` looks up downtimes only for those).
    Use ``held_availability`` to read the report."""
    now = timezone.now()
    concrete = {f.name for f in Resource._meta.concrete_fields}
    fields = set(records.PUBLIC_RECORD_FIELDS["resource"]) | {f for f in order_fields if f in concrete}
    fields |= {f"provider__{f}" for f in records.PUBLIC_RECORD_FIELDS["provider"]}
    fields |= {f"site__{f}" for f in records.PUBLIC_RECORD_FIELDS["site"]}
    fields |= {f"availability__{f}" for f in AVAILABILITY_FIELDS}
    current = Downtime.objects.filter(Q(resource_id=OuterRef("pk")) | Q(site_id=OuterRef("site_id")), end__gt=now)
    return (queryset.select_related("provider", "site", "availability").only(*sorted(fields))
            .annotate(has_current_downtime=Exists(current)))


def held_availability(resource: Resource):
    """The resource's held availability report, or None (after ``public_page``: no query)."""
    from django.core.exceptions import ObjectDoesNotExist

    try:
        return resource.availability
    except ObjectDoesNotExist:
        return None


def under_prefix(queryset: QuerySet[Resource], prefix: str) -> QuerySet[Resource]:
    """Every resource whose UCRI lies under ``prefix`` (segment-wise)."""
    return queryset.filter(Q(ucri__startswith=prefix + "/") | Q(ucri__startswith=prefix + "."))


def self_node() -> Platform | None:
    return Platform.objects.filter(is_self=True).first()


def sites_of(provider: Provider) -> QuerySet[Site]:
    return Site.objects.filter(provider=provider)


def delegations_under(prefix: str) -> QuerySet[Delegation]:
    return Delegation.objects.filter(parent=prefix)
