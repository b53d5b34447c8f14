"""Applying a page of another node's changes set-based (CONTRACT §8), with the appliers of
``registry.mirror``: the same validation, version rules and violations, far fewer statements.

A page's changes are cut into runs: providers, sites and resources; availability; each downtime on
its own (rare, through ``mirror.apply``). A catalog run prefetches what we hold for its keys (one
query per type, locked as ``mirror.apply`` locks them), runs every change through ``mirror.decide``
against those rows in page order (so a change sees the ones before it in the page: a site before its
resources, a retire after an upsert), and then writes what the run decided: new rows with ``COPY``,
changed rows with one ``UPDATE`` per table. Providers (a handful per catalog) are saved when decided.
An availability run reads its resources and held reports in two queries and upserts the newest
report per resource in one statement.

Each run is a savepoint. If the database refuses the run (a reused ``local_id``, a taken site name, a
row a concurrent writer added), it is rolled back and re-applied change by change with
``mirror.apply``, which turns each refusal into that change's ``conflict`` violation, as it always did.

Other databases (the embedded SQLite demo) apply every change with ``mirror.apply``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import operator
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DataError, IntegrityError, connection, models, transaction
from django.utils import timezone

from core import outbox

from . import availability, mirror
from .models import Availability, Provider, Resource, Site

VIOLATION = "violation"
CATALOG = frozenset({"provider", "site", "resource"})
RUNS = frozenset({"catalog", "availability"})  # applied a run at a time; the rest (downtimes) one by one
SMALL_UPDATE = 3  # fewer changed rows than this are updated one statement each, without a scratch table

Verifier = Callable[[Mapping[str, Any]], None] | None


@dataclass(frozen=True)
class Outcome:
    status: str  # mirror.APPLIED, mirror.STALE or VIOLATION
    reason: str = ""
    detail: str = ""
    relay: outbox.Change | None = None  # what our own feed carries on, for an applied change
    record: str | None = None  # the relayed record as JSON, when already encoded


def apply_changes(changes: Sequence[Mapping[str, Any]], *, now: dt.datetime,
                  verify_credential: Verifier = None) -> list[Outcome]:
    """One outcome per change, in order. Changes are of known types and inside the origin's delegation
    (the consumer checked); the caller holds the transaction and writes the relays and violations."""
    if connection.vendor != "postgresql":
        return [_one(change, now, verify_credential) for change in changes]
    outcomes: list[Outcome] = []
    for kind, run in _runs(changes):
        if kind == "catalog":
            outcomes += _catalog(run, now, verify_credential)
        elif kind == "availability":
            outcomes += _availability(run, now, verify_credential)
        else:
            outcomes += [_one(change, now, verify_credential) for change in run]
    return outcomes


def _runs(changes: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, list[Mapping[str, Any]]]]:
    run: list[Mapping[str, Any]] = []
    run_kind = None
    for change in changes:
        kind = "catalog" if change["type"] in CATALOG else change["type"]
        if run and (kind != run_kind or kind not in RUNS):
            yield run_kind, run
            run = []
        run_kind = kind
        run.append(change)
    if run:
        yield run_kind, run


def _one(change: Mapping[str, Any], now: dt.datetime, verify_credential: Verifier) -> Outcome:
    relay: list[outbox.Change] = []
    try:
        status = mirror.apply(change, now=now, verify_credential=verify_credential, relay=relay)
    except mirror.MirrorViolation as exc:
        return Outcome(VIOLATION, exc.reason, exc.detail)
    return Outcome(status, relay=relay[0] if relay else None)


def _catalog(changes: list[Mapping[str, Any]], now: dt.datetime, verify_credential: Verifier) -> list[Outcome]:
    try:
        with transaction.atomic():
            store = PageStore(changes)
            outcomes = []
            for change in changes:
                try:
                    record = mirror.encoded(change["record"])
                    status = mirror.decide(store, change, now=now, verify_credential=verify_credential)
                except mirror.MirrorViolation as exc:
                    outcomes.append(Outcome(VIOLATION, exc.reason, exc.detail))
                    continue
                outcomes.append(Outcome(status, relay=mirror.relayed(change), record=record)
                                if status == mirror.APPLIED else Outcome(status))
            store.flush()
        return outcomes
    except (IntegrityError, DataError):
        # Refused by the database: nothing of the run is left; redo it change by change, where each
        # refusal becomes that change's violation.
        return [_one(change, now, verify_credential) for change in changes]


def _availability(changes: list[Mapping[str, Any]], now: dt.datetime, verify_credential: Verifier) -> list[Outcome]:
    """Mirrored availability reports (never relayed here: our feed publishes its own, coalesced): the
    resources and held reports of the run in two queries, the newest report per resource in one upsert."""
    try:
        with transaction.atomic():
            resources = {ucri: (pk, source) for ucri, pk, source in Resource.objects.filter(
                ucri__in={change["key"] for change in changes}).values_list("ucri", "pk", "source")}
            held = dict(Availability.objects.filter(pk__in=[pk for pk, _ in resources.values()])
                        .values_list("pk", "observed_at"))
            rows: dict[int, tuple] = {}
            outcomes = []
            for change in changes:
                try:
                    mirror.encoded(change["record"])
                    resource = resources.get(change["key"])
                    row = availability.mirrored_row(change, resource, held.get(resource[0]) if resource else None,
                                                    timezone.now())
                except mirror.MirrorViolation as exc:
                    outcomes.append(Outcome(VIOLATION, exc.reason, exc.detail))
                    continue
                if row is None:
                    outcomes.append(Outcome(mirror.STALE))
                    continue
                rows[row[0]], held[row[0]] = row, row[3]  # a later report in the run is compared with this one
                outcomes.append(Outcome(mirror.APPLIED))
            availability._upsert(list(rows.values()))
        return outcomes
    except (IntegrityError, DataError):
        return [_one(change, now, verify_credential) for change in changes]


def _prefix_key(value: Any) -> str | None:
    """What ``Provider.objects.filter(prefix=value)`` compares with."""
    return None if value is None else value if isinstance(value, str) else str(value)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


class PageStore(mirror.Store):
    """A run's providers, sites and resources, prefetched and then kept as the run decides them."""

    def __init__(self, changes: Sequence[Mapping[str, Any]]) -> None:
        prefixes: set[str] = set()
        site_ids: set[uuid.UUID] = set()
        ucris: set[str] = set()
        kinds = {change["type"] for change in changes}
        for change in changes:
            kind, key, record = change["type"], change["key"], change["record"]
            if kind == "provider":
                prefixes.add(key)
                continue
            provider = _prefix_key(record.get("provider"))
            if provider is not None:
                prefixes.add(provider)
            site_id = _uuid(key if kind == "site" else record.get("site_id"))
            if site_id is not None:
                site_ids.add(site_id)
            if kind == "resource":
                ucris.add(key)
        self.providers = self._fetch(Provider.objects.filter(prefix__in=prefixes), prefixes,
                                     "prefix", lock="provider" in kinds)
        self.sites = self._fetch(Site.objects.filter(pk__in=site_ids), site_ids, "pk", lock="site" in kinds)
        self.resources = self._fetch(Resource.objects.filter(ucri__in=ucris), ucris, "ucri", lock=True)
        self.staged_sites: dict[uuid.UUID, Site] = {}
        self.staged_resources: dict[str, tuple[Resource, dt.datetime | None]] = {}

    @staticmethod
    def _fetch(query: models.QuerySet, keys: set, attribute: str, *, lock: bool) -> dict:
        if not keys:
            return {}
        if lock:
            query = query.select_for_update()
        return {getattr(row, attribute): row for row in query.order_by("pk")}

    # A locked lookup hands out a copy: the applier changes it before it knows whether the change
    # holds, and a refused change must leave the run's rows as they were. Other lookups only read.

    def provider(self, prefix: Any, *, lock: bool = False) -> Provider | None:
        held = self.providers.get(_prefix_key(prefix))
        return copy.copy(held) if lock and held is not None else held

    def site(self, site_id: uuid.UUID, *, lock: bool = False) -> Site | None:
        held = self.sites.get(site_id)
        return copy.copy(held) if lock and held is not None else held

    def resource(self, ucri: str) -> Resource | None:
        held = self.resources.get(ucri)
        return copy.copy(held) if held is not None else None

    def save_provider(self, provider: Provider) -> None:
        provider.save()  # at once: the run's sites and resources refer to its primary key
        self.providers[provider.prefix] = provider

    def save_site(self, site: Site) -> None:
        self.sites[site.pk] = self.staged_sites[site.pk] = site

    def save_resource(self, resource: Resource, updated_at: dt.datetime | None) -> None:
        self.resources[resource.ucri] = resource
        self.staged_resources[resource.ucri] = (resource, updated_at)

    def flush(self) -> None:
        """Write what the run decided: the last state of each key."""
        now = timezone.now()
        sites = list(self.staged_sites.values())
        for site in sites:
            site.updated_at = now
            if site._state.adding:
                site.created_at = now
        resources = []
        for resource, updated_at in self.staged_resources.values():
            # The site's facts as the run leaves them (mirror.DatabaseStore copies a changed site's
            # facts onto its resources; a resource decided before that change in the page gets them here).
            site = self.sites[resource.site_id]
            resource.province, resource.hub, resource.pue, resource.green_ratio = (
                site.province, site.hub, site.pue, site.green_ratio)
            resource.updated_at = updated_at or now
            if resource._state.adding:
                resource.created_at = now
            resources.append(resource)
        insert(Site, [s for s in sites if s._state.adding])
        update(Site, [s for s in sites if not s._state.adding])
        insert(Resource, [r for r in resources if r._state.adding])
        update(Resource, [r for r in resources if not r._state.adding])
        for site in sites:
            if not site._state.adding:
                Resource.objects.filter(site_id=site.pk).update(province=site.province, hub=site.hub, pue=site.pue,
                                                                green_ratio=site.green_ratio)


# Set-based writes (PostgreSQL) ---------------------------------------------------------------------

def _fields(model: type[models.Model], *, with_auto_pk: bool) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields
            if with_auto_pk or not isinstance(f, models.fields.AutoFieldMixin)]


def _rows(fields: Sequence[models.Field], objs: Sequence[models.Model]) -> Iterator[list[Any]]:
    """COPY rows: values as full_clean left them (Python types psycopg dumps); JSON as its text."""
    values = operator.attrgetter(*(f.attname for f in fields))
    json_at = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    for obj in objs:
        row = list(values(obj))
        for i in json_at:
            if row[i] is not None:
                row[i] = json.dumps(row[i])
        yield row


def _copy(table: str, fields: Sequence[models.Field], objs: Sequence[models.Model]) -> None:
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor, connection.wrap_database_errors, \
            cursor.copy(f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN") as writer:
        for row in _rows(fields, objs):
            writer.write_row(row)


def insert(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """New rows, with every column the instances hold (database-assigned ids left to the database)."""
    if objs:
        _copy(model._meta.db_table, _fields(model, with_auto_pk=False), objs)


def update(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """Every column of rows we hold, as ``save()`` writes them (``auto_now`` fields as the instance holds them)."""
    if not objs:
        return
    pk = model._meta.pk
    fields = [f for f in model._meta.concrete_fields if f is not pk]
    if len(objs) < SMALL_UPDATE:
        for obj in objs:
            model._base_manager.filter(pk=obj.pk).update(**{f.attname: getattr(obj, f.attname) for f in fields})
        return
    quote = connection.ops.quote_name
    table, scratch = model._meta.db_table, f"cir_mirror_{model._meta.db_table}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {quote(scratch)} (LIKE {quote(table)}) ON COMMIT DROP")
        _copy(scratch, [pk, *fields], objs)
        # Names only from the model's metadata, never from a record.
        assignments = ", ".join(f"{quote(f.column)} = s.{quote(f.column)}" for f in fields)
        cursor.execute(f"UPDATE {quote(table)} AS t SET {assignments} FROM {quote(scratch)} AS s "  # noqa: S608
                       f"WHERE t.{quote(pk.column)} = s.{quote(pk.column)}")
        cursor.execute(f"DELETE FROM {quote(scratch)}")  # noqa: S608
