"""National compute indicators computed from the catalog (local and mirrored rows alike).

Selectors for the public dashboard (issue 8) and, later, the Prometheus ``/metrics`` endpoint: plain
dataclasses of numbers keyed by codes (hub, province, kind, price unit, accelerator model), with no names,
formatting or template concerns. Every figure is defined in ``docs/dashboard.md``.

Everything is aggregated in SQL, in six statements whatever the catalog size (resources with their fresh
availability grouped by site, kind, status and price unit; prices by model and by hub; sites by hub; all
sites; where each site is), so a million-resource catalog never reaches Python row by row. ``current()``
caches the result for ``CACHE_SECONDS``; the cache holds data, not HTML, so every language shares it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import Aggregate, Case, CharField, Count, F, FloatField, Q, Sum, Value, When
from django.utils import timezone

from . import reference
from .models import Resource, Site

CACHE_KEY = "cir:indicators:v1"  # bump the version when the dataclasses change shape
CACHE_SECONDS = 60  # how old the figures may be before a request recomputes them
STALE_SECONDS = 600  # how long they are kept to serve while one request recomputes them
LOCK_KEY = f"{CACHE_KEY}:computing"
LOCK_SECONDS = 120  # longer than a computation takes at a million resources
TFLOPS_PER_EFLOPS = 1e6

# The precision each kind of compute is counted at in China's compute statistics (CAICT white papers,
# the 2023 action plan): general compute at FP32, intelligent compute at FP16, supercomputing at FP64.
NATIVE_PRECISION = {
    Resource.Kind.GENERAL.value: "fp32",
    Resource.Kind.INTELLIGENT.value: "fp16",
    Resource.Kind.SUPER.value: "fp64",
}
PRECISIONS = ("fp64", "fp32", "fp16")

# Histogram bucket edges. PUE buckets are (low, high] so a site exactly at a target (1.2, 1.25) meets it;
# the ratio buckets are [low, high) deciles, the last one closed ([0.9, 1.0]).
PUE_EDGES = (1.1, 1.2, 1.25, 1.3, 1.4, 1.5)
RATIO_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RACK_REVIEW_BELOW = 0.5  # the action plan reviews new projects where rack availability is under 50%
PUE_TARGETS = {"west": 1.2, "east": 1.25}  # the 2022 hub plan, by hubs.csv region


# Medians ------------------------------------------------------------------------------------------

class _SqliteMedian:
    """SQLite aggregate for the embedded demo database, which has no percentile function."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: Any) -> None:
        if value is not None:
            self.values.append(float(value))

    def finalize(self) -> float | None:
        return statistics.median(self.values) if self.values else None


class Median(Aggregate):
    """The median (the 50th continuous percentile) of a column, NULLs ignored, as one SQL aggregate.

    PostgreSQL computes it natively with ``percentile_cont(0.5) WITHIN GROUP (ORDER BY ...)``. The embedded
    SQLite default (demos only) gets a Python aggregate registered on its connection, so every caller runs
    the same queryset on either database.
    """

    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()
    allow_distinct = False

    def as_sqlite(self, compiler, connection, **extra_context):
        connection.ensure_connection()
        # Idempotent; repeated because the embedded database opens a new connection per request.
        connection.connection.create_aggregate("cir_median", 1, _SqliteMedian)
        return self.as_sql(compiler, connection, function="cir_median", template="%(function)s(%(expressions)s)",
                           **extra_context)


# Results ------------------------------------------------------------------------------------------

@dataclass
class Scale:
    """Additive compute figures of a set of non-retired resources (TFLOPS; see docs/dashboard.md)."""

    resources: int = 0
    active: int = 0
    suspended: int = 0
    fp64_tflops: float = 0.0
    fp64_resources: int = 0  # resources publishing the figure
    fp32_tflops: float = 0.0
    fp32_resources: int = 0
    fp16_tflops: float = 0.0
    fp16_resources: int = 0
    native_tflops: float = 0.0  # each kind at its native precision (NATIVE_PRECISION)
    native_resources: int = 0
    intelligent_tflops: float = 0.0  # the intelligent kind's FP16 (the share's numerator)
    storage_tb: float = 0.0
    storage_resources: int = 0

    def add(self, other: Scale) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def fp64_eflops(self) -> float:
        return self.fp64_tflops / TFLOPS_PER_EFLOPS

    @property
    def fp16_eflops(self) -> float:
        return self.fp16_tflops / TFLOPS_PER_EFLOPS

    @property
    def native_eflops(self) -> float:
        return self.native_tflops / TFLOPS_PER_EFLOPS

    @property
    def intelligent_share(self) -> float | None:
        """Intelligent FP16 over the native-precision total; None when the total is zero."""
        return self.intelligent_tflops / self.native_tflops if self.native_tflops else None


@dataclass
class Live:
    """Live availability of the active resources of one hub (None: outside the hubs) and price unit."""

    hub: str | None
    unit: str
    active_resources: int = 0
    static_units: int = 0  # accelerator_count, or node_count for node-priced resources
    fresh_resources: int = 0  # active resources whose latest report has not expired
    fresh_units: int = 0  # the sum of those reports' available_units

    @property
    def fresh_share(self) -> float | None:
        return self.fresh_resources / self.active_resources if self.active_resources else None

    @property
    def available_share(self) -> float | None:
        return self.fresh_units / self.static_units if self.static_units else None


@dataclass
class SiteGroup:
    """Energy and rack figures of the sites of one hub (None: outside the hubs), or of all sites."""

    hub: str | None
    sites: int = 0
    median_pue: float | None = None
    median_green_ratio: float | None = None
    median_rack_availability: float | None = None
    pue_target: float | None = None  # None outside the hubs (and for the all-sites group)
    meeting_target: int = 0  # sites with PUE <= their hub's target
    rack_under_review: int = 0  # sites with rack availability under RACK_REVIEW_BELOW
    pue_buckets: list[int] = field(default_factory=lambda: [0] * (len(PUE_EDGES) + 1))
    green_buckets: list[int] = field(default_factory=lambda: [0] * (len(RATIO_EDGES) + 1))
    rack_buckets: list[int] = field(default_factory=lambda: [0] * (len(RATIO_EDGES) + 1))

    @property
    def meeting_share(self) -> float | None:
        """Share of sites meeting their hub's PUE target; None where no target applies."""
        return self.meeting_target / self.sites if self.sites and self.pue_target is not None else None

    @property
    def rack_under_review_share(self) -> float | None:
        return self.rack_under_review / self.sites if self.sites else None


@dataclass
class Sites:
    all: SiteGroup
    by_hub: dict[str | None, SiteGroup]
    in_hubs: int = 0  # sites inside a hub (each has a PUE target)
    in_hubs_meeting_target: int = 0

    @property
    def meeting_share(self) -> float | None:
        return self.in_hubs_meeting_target / self.in_hubs if self.in_hubs else None


@dataclass
class Price:
    """Median prices of the active resources of one group (an accelerator model, None = "other", or a hub)
    and price unit."""

    group: str | None
    unit: str
    resources: int
    median_price_per_hour: float | None
    token_resources: int  # resources publishing a price per million tokens
    median_price_per_million_tokens: float | None


@dataclass
class Target:
    """One action-plan indicator: the 2025 target and what this catalog covers (None: not measurable)."""

    indicator: str
    unit: str
    target_2025: float
    covered: float | None

    @property
    def progress(self) -> float | None:
        return self.covered / self.target_2025 if self.covered is not None and self.target_2025 else None


@dataclass
class Indicators:
    computed_at: dt.datetime
    total: Scale
    by_kind: dict[str, Scale]
    by_hub: dict[str | None, Scale]  # hubs.csv codes, None = outside the hubs
    by_province: dict[str, Scale]  # GB/T 2260 codes
    sites_with_resources: int  # sites holding at least one non-retired resource
    intelligent_centers: int  # sites holding at least one non-retired intelligent resource
    live: list[Live]
    sites: Sites
    price_by_model: list[Price]
    price_by_hub: list[Price]
    targets: list[Target]

    @property
    def fresh_share(self) -> float | None:
        """Share of all active resources whose availability is fresh (units differ, so only counts add up)."""
        active = sum(cell.active_resources for cell in self.live)
        return sum(cell.fresh_resources for cell in self.live) / active if active else None


# Computing ----------------------------------------------------------------------------------------

def _scale_of(row: Mapping[str, Any]) -> Scale:
    kind, status = row["kind"], row["status"]
    scale = Scale(resources=row["n"], active=row["n"] if status == Resource.Status.ACTIVE else 0,
                  suspended=row["n"] if status == Resource.Status.SUSPENDED else 0,
                  storage_tb=row["storage"] or 0.0, storage_resources=row["storage_n"])
    for precision in PRECISIONS:
        setattr(scale, f"{precision}_tflops", row[precision] or 0.0)
        setattr(scale, f"{precision}_resources", row[f"{precision}_n"])
    native = NATIVE_PRECISION.get(kind)
    if native is not None:
        scale.native_tflops = row[native] or 0.0
        scale.native_resources = row[f"{native}_n"]
    if kind == Resource.Kind.INTELLIGENT:
        scale.intelligent_tflops = row["fp16"] or 0.0
    return scale


def _resource_groups(now: dt.datetime) -> Iterable[dict[str, Any]]:
    """Non-retired resources grouped by site, kind, status and price unit, with their fresh availability
    (availability is one-to-one, so the outer join adds no rows).

    Not grouped by the resource's hub and province columns, although they are there: PostgreSQL would
    multiply their distinct counts with the sites', expect ~100,000 groups instead of a few hundred and
    sort a million rows on disk instead of hashing them (measured: 2.7 s against 1.5 s at 1M resources).
    The site fixes both (they are copies of the site's), so they come from the sites instead."""
    fresh = Q(availability__expires_at__gt=now)
    sums: dict[str, Any] = {"n": Count("pk"), "storage": Sum("storage_tb"), "storage_n": Count("storage_tb"),
                            "cards": Sum("accelerator_count"), "nodes": Sum("node_count"),
                            "fresh_n": Count("availability", filter=fresh),
                            "fresh_units": Sum("availability__available_units", filter=fresh)}
    for precision in PRECISIONS:
        sums[precision] = Sum(f"{precision}_tflops")
        sums[f"{precision}_n"] = Count(f"{precision}_tflops")
    return (Resource.objects.exclude(status=Resource.Status.RETIRED)
            .values("site_id", "kind", "status", "price_unit").annotate(**sums).order_by())


def _prices(group_by: Case | F) -> list[Price]:
    rows = (Resource.objects.filter(status=Resource.Status.ACTIVE).annotate(group=group_by)
            .values("group", "price_unit")
            .annotate(n=Count("pk"), price=Median("price_per_hour"), tokens_n=Count("price_per_million_tokens"),
                      tokens=Median("price_per_million_tokens"))
            .order_by())
    return [Price(group=row["group"], unit=row["price_unit"], resources=row["n"], median_price_per_hour=row["price"],
                  token_resources=row["tokens_n"], median_price_per_million_tokens=row["tokens"]) for row in rows]


def model_group() -> Case:
    """The accelerator models of the reference table by name; every other model groups as NULL ("other").
    NULL cannot collide with a real model: ``accelerator_model`` is NOT NULL."""
    return Case(When(accelerator_model__in=list(reference.accelerators()), then=F("accelerator_model")),
                default=Value(None), output_field=CharField())


def _buckets(name: str, edges: tuple[float, ...], *, closed_right: bool) -> dict[str, Count]:
    """Conditional counts, one per bucket: ``<name>_<i>``."""
    counts = {}
    bounds = [None, *edges, None]
    for i, (low, high) in enumerate(itertools.pairwise(bounds)):
        condition = Q()
        if low is not None:
            condition &= Q(**{f"{name}__gt" if closed_right else f"{name}__gte": low})
        if high is not None:
            condition &= Q(**{f"{name}__lte" if closed_right else f"{name}__lt": high})
        counts[f"{name}_{i}"] = Count("pk", filter=condition)
    return counts


def _sites() -> Sites:
    aggregates: dict[str, Any] = {
        "n": Count("pk"), "pue_med": Median("pue"), "green_med": Median("green_ratio"),
        "rack_med": Median("rack_availability"),
        "rack_low": Count("pk", filter=Q(rack_availability__lt=RACK_REVIEW_BELOW)),
        **{f"pue_le_{i}": Count("pk", filter=Q(pue__lte=target)) for i, target in enumerate(PUE_TARGETS.values())},
        **_buckets("pue", PUE_EDGES, closed_right=True),
        **_buckets("green_ratio", RATIO_EDGES, closed_right=False),
        **_buckets("rack_availability", RATIO_EDGES, closed_right=False),
    }
    targets = list(PUE_TARGETS.values())

    def group(hub: str | None, row: Mapping[str, Any]) -> SiteGroup:
        target = reference.pue_target(hub) if hub is not None else None
        return SiteGroup(
            hub=hub, sites=row["n"], median_pue=row["pue_med"], median_green_ratio=row["green_med"],
            median_rack_availability=row["rack_med"], pue_target=target,
            meeting_target=row[f"pue_le_{targets.index(target)}"] if target in targets else 0,
            rack_under_review=row["rack_low"],
            pue_buckets=[row[f"pue_{i}"] for i in range(len(PUE_EDGES) + 1)],
            green_buckets=[row[f"green_ratio_{i}"] for i in range(len(RATIO_EDGES) + 1)],
            rack_buckets=[row[f"rack_availability_{i}"] for i in range(len(RATIO_EDGES) + 1)],
        )

    by_hub = {row["hub"]: group(row["hub"], row)
              for row in Site.objects.values("hub").annotate(**aggregates).order_by()}
    everything = group(None, Site.objects.aggregate(**aggregates))
    in_hubs = [g for hub, g in by_hub.items() if hub is not None and g.pue_target is not None]
    return Sites(all=everything, by_hub=by_hub, in_hubs=sum(g.sites for g in in_hubs),
                 in_hubs_meeting_target=sum(g.meeting_target for g in in_hubs))


def _targets(total: Scale, intelligent_centers: int) -> list[Target]:
    """The action plan's 2025 targets beside what this catalog covers; None where a registry catalog
    cannot measure the indicator (networks, latency, storage technology)."""
    covered = {
        "compute scale": total.native_eflops,
        "intelligent computing centers": float(intelligent_centers),
        "intelligent compute share": None if total.intelligent_share is None else total.intelligent_share * 100,
        "total storage capacity": total.storage_tb / 1e6,  # TB -> EB
    }
    return [Target(indicator=row["indicator"], unit=row["unit"], target_2025=float(row["2025"]),
                   covered=covered.get(row["indicator"])) for row in reference.targets()]


def compute(now: dt.datetime | None = None) -> Indicators:
    """Compute every indicator now (uncached; six SQL statements)."""
    now = now or timezone.now()
    total, by_kind = Scale(), {kind: Scale() for kind in Resource.Kind.values}
    by_hub: dict[str | None, Scale] = {}
    by_province: dict[str, Scale] = {}
    live: dict[tuple[str | None, str], Live] = {}
    sites, intelligent_sites = set(), set()
    places = {pk: (hub, province) for pk, hub, province in Site.objects.values_list("pk", "hub", "province")}
    for row in _resource_groups(now):
        row["hub"], row["province"] = places[row["site_id"]]
        scale = _scale_of(row)
        total.add(scale)
        by_kind.setdefault(row["kind"], Scale()).add(scale)
        by_hub.setdefault(row["hub"], Scale()).add(scale)
        by_province.setdefault(row["province"], Scale()).add(scale)
        sites.add(row["site_id"])
        if row["kind"] == Resource.Kind.INTELLIGENT:
            intelligent_sites.add(row["site_id"])
        if row["status"] == Resource.Status.ACTIVE:  # live capacity: active resources only
            cell = live.setdefault((row["hub"], row["price_unit"]), Live(hub=row["hub"], unit=row["price_unit"]))
            cell.active_resources += row["n"]
            cell.static_units += (row["nodes"] if row["price_unit"] == Resource.PriceUnit.NODE else row["cards"]) or 0
            cell.fresh_resources += row["fresh_n"]
            cell.fresh_units += row["fresh_units"] or 0
    return Indicators(
        computed_at=now, total=total, by_kind=by_kind, by_hub=by_hub, by_province=by_province,
        sites_with_resources=len(sites), intelligent_centers=len(intelligent_sites),
        live=sorted(live.values(), key=lambda c: (c.hub is None, c.hub or "", c.unit)),
        sites=_sites(), price_by_model=_prices(model_group()), price_by_hub=_prices(F("hub")),
        targets=_targets(total, len(intelligent_sites)),
    )


def refresh() -> Indicators:
    """Compute the indicators and put them in the cache (for ``current()``, or a periodic task that keeps
    the cache warm so that no request ever waits for a computation)."""
    indicators = compute()
    cache.set(CACHE_KEY, indicators, STALE_SECONDS)
    return indicators


def current() -> Indicators:
    """The indicators, from the cache when computed less than CACHE_SECONDS ago.

    Past that, one request recomputes (it takes a short lock in the cache) while concurrent requests are
    served the previous figures, at most STALE_SECONDS old: a million-resource catalog costs seconds of
    SQL, and a crowd arriving when the entry expires must not run it once each.
    """
    held = cache.get(CACHE_KEY)
    if held is not None and timezone.now() - held.computed_at < dt.timedelta(seconds=CACHE_SECONDS):
        return held
    locked = cache.add(LOCK_KEY, True, LOCK_SECONDS)
    if held is not None and not locked:
        return held
    try:
        return refresh()
    finally:
        if locked:
            cache.delete(LOCK_KEY)
