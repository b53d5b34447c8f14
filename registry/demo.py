"""A realistic, deterministic demo catalog (``cir_demo``, CONTRACT §10).

The plan is pure: ``plan_providers(seed)`` draws the providers and their sites, ``resource_spec(plan,
seed, index)`` draws resource ``index`` from its own RNG seeded with (seed, index), so resource i is the
same whatever the catalog size and a bigger run only adds the missing indexes.

``build`` writes the plan. Providers and sites are few and go through the services (approval, audit,
outbox). Resources go through the bulk path: batches of ``BATCH_SIZE`` rows, each in one transaction
with ``bulk_create`` and one ``outbox.append_many`` draw, and the same feed records the services write.
A retired resource is written as the services would leave it after ``resource_create`` then
``resource_retire``: inserted at version 1, then updated to retired at version 2 in the same batch, with
two feed entries (``upsert`` v1, then ``retire`` v2 carrying the tombstone).

Re-running with the same seed changes nothing: providers are found by prefix, sites by name, resources by
``local_id`` (``demo-<index>``), and only what is missing is written.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import reset_queries, transaction
from django.utils import timezone
from stdnum.cn import uscc as uscc_module

from core import outbox
from core.errors import ApplicationError

from . import error_codes, identifiers, records, reference, services
from .models import Platform, Provider, Resource, Site, Source

PROVIDERS = 40
BATCH_SIZE = 5000
MAX_RESOURCES = 10**9  # local_ids carry nine zero-padded digits, so they sort in index order
LOCAL_ID_PREFIX = "demo-"
RETIRE_EVERY = 200  # 0.5% retired: index % 200 == 50, so even a 300-resource demo has two
SUSPENDED_SHARE = 0.03
ACTOR = "command:cir_demo"

# Provider types: code tag, legal-name wording, site wording, how many of the PROVIDERS.
PROVIDER_TYPES = {
    "AI": ("Intelligent Computing", "AIDC", 14),
    "DC": ("Data Center", "Data Center", 12),
    "CL": ("Cloud Technology", "Cloud Region", 10),
    "SC": ("Supercomputing", "Supercomputing Center", 4),
}
BRANDS = (
    "Tianshu", "Xinghe", "Huayu", "Lingxi", "Qiming", "Ruiheng", "Boyuan", "Jingwei", "Yunfan", "Zhiyuan",
    "Haoyu", "Chenguang", "Hengtong", "Jinqiao", "Longmai", "Mingde", "Ningyuan", "Shanhai", "Taihe",
    "Xinyuan", "Yaoguang", "Anxin", "Beidou", "Cuiwei", "Dingsheng", "Fengyun", "Guangyao", "Hongtu",
    "Jiahe", "Kaiyuan", "Lanxin", "Mingyue", "Qingyun", "Ruixing", "Suyuan", "Tongda", "Weilan", "Xiangrui",
    "Yuheng", "Zhaoyang", "Chuangxin", "Huiyun",
)
# Provinces outside the hubs where some providers live (the rest sit in the eight hubs).
NON_HUB_PROVINCES = ("37", "42", "61", "35", "43", "41", "21", "53")
CITIES = {
    "11": ("Yizhuang", "Haidian"), "12": ("Binhai",), "13": ("Zhangjiakou", "Langfang"), "15": ("Horinger", "Ulanqab"),
    "31": ("Lingang", "Songjiang"), "32": ("Wuxi", "Suzhou", "Nanjing"), "33": ("Hangzhou", "Huzhou"),
    "34": ("Wuhu", "Hefei"), "44": ("Shaoguan", "Shenzhen", "Guangzhou"), "50": ("Liangjiang", "Xiyong"),
    "51": ("Tianfu", "Ya'an"), "52": ("Gui'an", "Guiyang"), "62": ("Qingyang", "Lanzhou"),
    "64": ("Zhongwei", "Yinchuan"), "37": ("Jinan", "Qingdao"), "42": ("Wuhan",), "61": ("Xi'an", "Xixian"),
    "35": ("Fuzhou",), "43": ("Changsha",), "41": ("Zhengzhou",), "21": ("Shenyang", "Dalian"), "53": ("Kunming",),
}
GRID_CO2_KG_PER_KWH = 0.5703  # national grid average emission factor (2022), for CUE

# Accelerators the reference table does not list (it has no FPGA or ASIC); figures per card.
EXTRA_ACCELERATORS = {
    a.model: a for a in (
        reference.Accelerator("Alveo U250", "AMD", "FPGA", "intelligent", None, None, None, 33.3, 64, "2-4"),
        reference.Accelerator("Kunlun R200", "Kunlunxin", "ASIC", "intelligent", None, 32, 128, 256, 32, "2-5"),
    )
}
SUNWAY = "SW26010-Pro (node)"
SUNWAY_CORES_PER_NODE = 390
SUNWAY_PRICE = (6.0, 15.0)  # yuan per node-hour; the reference table gives none
CARDS_PER_NODE = {"GPU": 8, "NPU": 8, "ASIC": 8, "FPGA": 4}

# (model, kind, purpose, weight) offered by each provider type.
Offering = tuple[str, str, str, int]
_XEON, _EPYC, _KUNPENG = "Xeon Platinum 8480+ (56 cores)", "EPYC 9654 (96 cores)", "Kunpeng 920 (64 cores)"
OFFERINGS: dict[str, tuple[Offering, ...]] = {
    "AI": (("A100 SXM 80GB", "intelligent", "training", 20), ("H100 SXM 80GB", "intelligent", "training", 10),
           ("H20 96GB", "intelligent", "inference", 12), ("L20 48GB", "intelligent", "inference", 10),
           ("Ascend 910B", "intelligent", "training", 18), ("Ascend 910B", "intelligent", "inference", 8),
           ("MLU370-X8", "intelligent", "inference", 6), ("Kunlun R200", "intelligent", "inference", 2),
           ("Alveo U250", "intelligent", "inference", 1), (_XEON, "general", "general compute", 5)),
    "DC": ((_XEON, "general", "general compute", 30), (_EPYC, "general", "general compute", 25),
           (_KUNPENG, "general", "general compute", 25), ("L20 48GB", "intelligent", "inference", 8),
           ("Ascend 910B", "intelligent", "inference", 5), ("Alveo U250", "intelligent", "inference", 2),
           ("Kunlun R200", "intelligent", "inference", 1)),
    "CL": ((_XEON, "general", "general compute", 20), (_EPYC, "general", "general compute", 15),
           (_KUNPENG, "general", "general compute", 10), ("A100 SXM 80GB", "intelligent", "training", 10),
           ("H20 96GB", "intelligent", "inference", 10), ("L20 48GB", "intelligent", "inference", 10),
           ("Ascend 910B", "intelligent", "training", 10), ("MLU370-X8", "intelligent", "inference", 5),
           ("Alveo U250", "intelligent", "inference", 3), ("Kunlun R200", "intelligent", "inference", 2)),
    "SC": ((SUNWAY, "super", "HPC partition", 35), (_EPYC, "super", "HPC partition", 20),
           (_XEON, "super", "HPC partition", 20), ("A100 SXM 80GB", "super", "GPU partition", 15),
           (_KUNPENG, "super", "HPC partition", 10)),
}
POOL_NAMES = {"training": "training pool", "inference": "inference pool"}
# (nodes, weight): pool sizes.
CARD_NODES = ((1, 4), (2, 8), (4, 12), (8, 16), (16, 14), (32, 10), (64, 6), (128, 3), (256, 1))
CPU_NODES = ((1, 6), (2, 10), (4, 14), (8, 14), (16, 10), (32, 6), (64, 3))
HPC_NODES = ((16, 4), (32, 8), (64, 10), (128, 8), (256, 5), (512, 2))
SUNWAY_NODES = ((64, 2), (128, 4), (256, 6), (512, 5), (1024, 3), (2048, 1))


@dataclass(frozen=True)
class SiteSpec:
    name: str
    slug: str
    province: str
    pue: float
    wue: float
    cue: float
    green_ratio: float
    rack_availability: float

    def data(self) -> dict[str, Any]:
        return {"name": self.name, "province": self.province, "pue": self.pue, "wue": self.wue, "cue": self.cue,
                "green_ratio": self.green_ratio, "rack_availability": self.rack_availability}


@dataclass(frozen=True)
class ProviderSpec:
    code: str
    type: str
    name: str
    uscc: str
    domain: str
    weight: float
    sites: tuple[SiteSpec, ...]


@dataclass(frozen=True)
class ResourceSpec:
    index: int
    body: str  # the UCRI body; the prefix is the provider's, which depends on the node
    provider: int  # index into the plan
    site: int  # index into the provider's sites
    retired: bool
    fields: dict[str, Any]

    @property
    def local_id(self) -> str:
        return local_id(self.index)


@dataclass(frozen=True)
class Plan:
    providers: tuple[ProviderSpec, ...]
    cum_weights: tuple[float, ...]


@dataclass(frozen=True)
class Summary:
    seed: int
    prefix: str
    created: dict[str, int]
    resources: int
    sample: list[str]
    retired_sample: list[str]


def local_id(index: int) -> str:
    return f"{LOCAL_ID_PREFIX}{index:09d}"


# The plan (pure) ----------------------------------------------------------------------------------

def plan_providers(seed: int) -> Plan:
    rng = random.Random(f"cir-demo/{seed}/providers")
    types = [tag for tag, (_, _, count) in PROVIDER_TYPES.items() for _ in range(count)]
    rng.shuffle(types)
    brands = rng.sample(BRANDS, PROVIDERS)
    hubs = list(reference.hubs())
    hub_provinces = {hub: [c for c, p in reference.provinces().items() if p.hub == hub and c in CITIES] for hub in hubs}
    providers = []
    for n, (tag, brand) in enumerate(zip(types, brands, strict=True)):
        # Every fifth provider lives outside the hubs; the others cycle through all eight hubs.
        home = (rng.choice(NON_HUB_PROVINCES) if n % 5 == 4
                else rng.choice(hub_provinces[hubs[(n - n // 5) % len(hubs)]]))
        code = f"{tag}{n + 1:03d}"
        name = f"{reference.provinces()[home].name_en} {brand} {PROVIDER_TYPES[tag][0]} Co., Ltd."
        domain = f"{brand.lower()}-{code.lower()}.example.com"
        sites = _plan_sites(rng, tag, home, hub_provinces)
        providers.append(ProviderSpec(code=code, type=tag, name=name, uscc=_uscc(rng, home), domain=domain,
                                      weight=rng.lognormvariate(0, 0.7), sites=sites))
    cum, total = [], 0.0
    for spec in providers:
        total += spec.weight
        cum.append(total)
    return Plan(providers=tuple(providers), cum_weights=tuple(cum))


def _plan_sites(rng: random.Random, tag: str, home: str, hub_provinces: dict[str, list[str]]) -> tuple[SiteSpec, ...]:
    west = [c for hub, codes in hub_provinces.items() if reference.hubs()[hub].region == "west" for c in codes]
    home_is_west = home in west
    sites = []
    for k in range(rng.choice((1, 2)) if tag == "SC" else rng.choice((1, 1, 2, 2, 3))):
        province = home
        # East data, west compute: eastern and non-hub providers put many second sites in the west.
        if k and not home_is_west and rng.random() < 0.6:
            province = rng.choice(west)
        city = rng.choice(CITIES[province])
        hub = reference.hub_for_province(province)
        region = reference.hubs()[hub].region if hub else None
        pue_range, green_range, rack_range = {
            "west": ((1.08, 1.25), (0.45, 0.85), (0.35, 0.8)),
            "east": ((1.15, 1.35), (0.15, 0.45), (0.1, 0.5)),
            None: ((1.25, 1.5), (0.1, 0.35), (0.2, 0.6)),
        }[region]
        pue, green = round(rng.uniform(*pue_range), 3), round(rng.uniform(*green_range), 3)
        sites.append(SiteSpec(
            name=f"{city} {PROVIDER_TYPES[tag][1]} {k + 1}", slug=f"{re.sub('[^a-z]', '', city.lower())}{k + 1}",
            province=province, pue=pue, wue=round(rng.uniform(0.3, 1.6), 2),
            cue=round(pue * GRID_CO2_KG_PER_KWH * (1 - green), 3), green_ratio=green,
            rack_availability=round(rng.uniform(*rack_range), 2),
        ))
    return tuple(sites)


def _uscc(rng: random.Random, province: str) -> str:
    """GB 32100-2015: '9' (market regulator) '1' (enterprise), a region code of the province, a GB 11714
    organisation code (here the post-2015 'MA' form, with its own check character), the check character."""
    region = f"{province}{rng.randint(1, 9):02d}{rng.choice(('00', '02', '03', '11', '21'))}"
    org = "MA" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(6))
    org_total = sum(int(ch, 36) * w for ch, w in zip(org, (3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    check = 11 - org_total % 11
    org_check = "X" if check == 10 else "0" if check == 11 else str(check)
    body = f"91{region}{org}{org_check}"
    return body + uscc_module.calc_check_digit(body)


def _accelerator(model: str) -> reference.Accelerator:
    return reference.accelerators().get(model) or EXTRA_ACCELERATORS[model]


def _price_range(accelerator: reference.Accelerator) -> tuple[float, float]:
    low, high = re.match(r"([\d.]+)-([\d.]+)", accelerator.typical_price).groups()
    return float(low), float(high)


def _weighted(rng: random.Random, pairs: tuple[tuple[int, int], ...]) -> int:
    return rng.choices([value for value, _ in pairs], weights=[weight for _, weight in pairs])[0]


def _total(per_unit: float | None, units: int) -> float | None:
    return None if per_unit is None else round(per_unit * units, 3)


def resource_spec(plan: Plan, seed: int, index: int) -> ResourceSpec:
    rng = random.Random(f"cir-demo/{seed}/resource/{index}")
    body = identifiers.random_body(rng.getrandbits)  # drawn first: the UCRI never depends on the rest
    p = rng.choices(range(len(plan.providers)), cum_weights=plan.cum_weights)[0]
    provider = plan.providers[p]
    s = rng.randrange(len(provider.sites))
    site = provider.sites[s]
    offerings = OFFERINGS[provider.type]
    model, kind, purpose, _ = rng.choices(offerings, weights=[o[3] for o in offerings])[0]
    accel = _accelerator(model)
    fields: dict[str, Any] = {"kind": kind, "accelerator": accel.type, "accelerator_model": model}
    if model == SUNWAY:
        nodes = _weighted(rng, SUNWAY_NODES)
        units, count, unit = nodes, nodes * SUNWAY_CORES_PER_NODE, Resource.PriceUnit.NODE
        price, memory = rng.uniform(*SUNWAY_PRICE), 96.0 * nodes
        storage = rng.choice((500, 1000, 2000))
    elif accel.type == "CPU":
        nodes = _weighted(rng, HPC_NODES if kind == "super" else CPU_NODES)
        cores_per_cpu = int(re.search(r"\((\d+) cores\)", model).group(1))
        units = nodes * 2  # two sockets per node; the reference figures are per processor
        count, unit = units * cores_per_cpu, Resource.PriceUnit.CORE
        price, memory = rng.uniform(*_price_range(accel)), float(nodes * rng.choice((256, 512, 1024)))
        storage = rng.choice((500, 1000)) if kind == "super" else round(nodes * rng.choice((1.92, 3.84)), 2)
    else:
        nodes = _weighted(rng, CARD_NODES)
        units = count = nodes * CARDS_PER_NODE[accel.type]
        unit = Resource.PriceUnit.CARD
        price, memory = rng.uniform(*_price_range(accel)), _total(accel.memory_gb, count)
        storage = round(nodes * rng.choice((3.84, 7.68, 15.36)), 2)
    label = re.sub(r" [(].*[)]", "", model)
    fields.update(
        name=f"{label} {POOL_NAMES.get(purpose, purpose)}, {nodes} node" + ("s" if nodes > 1 else ""),
        accelerator_count=count, node_count=nodes,
        fp64_tflops=_total(accel.fp64_tflops, units), fp32_tflops=_total(accel.fp32_tflops, units),
        fp16_tflops=_total(accel.fp16_tflops, units), int8_tops=_total(accel.int8_tops, units),
        memory_gb=memory, storage_tb=None if rng.random() < 0.1 else float(storage),
        price_per_hour=Decimal(f"{price:.3f}" if unit == Resource.PriceUnit.CORE else f"{price:.2f}"),
        price_unit=unit, price_per_million_tokens=None,
        status=Resource.Status.SUSPENDED if rng.random() < SUSPENDED_SHARE else Resource.Status.ACTIVE,
    )
    host = f"{site.slug}.{provider.domain}"
    if kind == "super":
        endpoints = [{"type": "slurm", "url": f"https://slurm.{host}/slurmrestd"},
                     {"type": "hpc-portal", "url": f"https://hpc.{provider.domain}/"}]
    elif kind == "general":
        endpoints = [{"type": "openstack", "url": f"https://cloud.{host}:5000/v3"}]
        if rng.random() < 0.3:
            endpoints.append({"type": "kubernetes", "url": f"https://k8s.{host}:6443"})
    else:
        endpoints = [{"type": "kubernetes", "url": f"https://k8s.{host}:6443"}]
        if purpose == "inference" and rng.random() < 0.6:
            fields["price_per_million_tokens"] = Decimal(f"{rng.uniform(0.5, 16):.2f}")
            endpoints.append({"type": "api", "url": f"https://api.{provider.domain}/v1/pools/{local_id(index)}"})
    fields["endpoints"] = endpoints
    return ResourceSpec(index=index, body=body, provider=p, site=s, retired=index % RETIRE_EVERY == 50,
                        fields=fields)


# Writing ------------------------------------------------------------------------------------------

def build(*, seed: int, resources: int, batch_size: int = BATCH_SIZE,
          on_batch: Callable[[int], None] | None = None) -> Summary:
    """Write the demo catalog of ``seed`` with ``resources`` resources (only what is missing)."""
    if not 0 <= resources <= MAX_RESOURCES:
        raise services.invalid({"resources": [f"must be between 0 and {MAX_RESOURCES}"]})
    node = services.this_node()
    plan = plan_providers(seed)
    providers, providers_created = _ensure_providers(plan, node, seed)
    sites, sites_created = _ensure_sites(plan, providers)
    provider_ids = [p.pk for p in providers]
    created = 0
    for start in range(0, resources, batch_size):
        stop = min(start + batch_size, resources)
        created += _write_batch(plan, seed, providers, sites, range(start, stop))
        reset_queries()  # DEBUG=1 keeps the last 9000 statements, megabytes each here: gigabytes at 1M
        if on_batch is not None:
            on_batch(stop - start)
    demo = Resource.objects.filter(provider_id__in=provider_ids, local_id__startswith=LOCAL_ID_PREFIX)
    return Summary(
        seed=seed, prefix=node.prefix,
        created={"providers": providers_created, "sites": sites_created, "resources": created},
        resources=demo.count(),
        sample=list(demo.filter(status=Resource.Status.ACTIVE).order_by("local_id")
                    .values_list("ucri", flat=True)[:20]),
        retired_sample=list(demo.filter(status=Resource.Status.RETIRED).order_by("local_id")
                            .values_list("ucri", flat=True)[:5]),
    )


def _ensure_providers(plan: Plan, node: Platform, seed: int) -> tuple[list[Provider], int]:
    prefixes = [identifiers.child_prefix(node.prefix, spec.code) for spec in plan.providers]
    existing = Provider.objects.in_bulk(prefixes, field_name="prefix")
    # Check every code before writing anything: never add demo rows to someone else's provider.
    for prefix, spec in zip(prefixes, plan.providers, strict=True):
        found = existing.get(prefix)
        if found is not None and (found.name, found.uscc, found.source) != (spec.name, spec.uscc, Source.LOCAL):
            raise ApplicationError(
                error_codes.PREFIX_TAKEN,
                f"{prefix} is held by {found.name!r}, not by the demo catalog of seed {seed} "
                f"(was this node's demo built with another seed?)", status=409)
    providers = []
    for prefix, spec in zip(prefixes, plan.providers, strict=True):
        providers.append(existing.get(prefix)
                         or services.provider_approve(name=spec.name, uscc=spec.uscc, code=spec.code, actor=ACTOR))
    return providers, len(prefixes) - len(existing)


def _ensure_sites(plan: Plan, providers: list[Provider]) -> tuple[list[list[Site]], int]:
    found = {(s.provider_id, s.name): s for s in Site.objects.filter(provider__in=providers)}
    sites, created = [], 0
    for provider, spec in zip(providers, plan.providers, strict=True):
        row = []
        for site_spec in spec.sites:
            site = found.get((provider.pk, site_spec.name))
            if site is None:
                site = services.site_create(provider=provider, data=site_spec.data())
                created += 1
            site.provider = provider  # feed records read provider.prefix: no query per row
            row.append(site)
        sites.append(row)
    return sites, created


def _write_batch(plan: Plan, seed: int, providers: list[Provider], sites: list[list[Site]],
                 indexes: range) -> int:
    # local_ids are fixed-width, so one range scan of the (provider, local_id) index finds the batch.
    present = set(Resource.objects.filter(
        provider__in=providers, local_id__gte=local_id(indexes[0]), local_id__lte=local_id(indexes[-1]),
    ).values_list("local_id", flat=True))
    specs = [resource_spec(plan, seed, i) for i in indexes if local_id(i) not in present]
    if not specs:
        return 0
    rows = [_resource(spec, providers[spec.provider], sites[spec.provider][spec.site]) for spec in specs]
    inactive = sorted({r.provider.prefix for r in rows if r.provider.status != Provider.Status.ACTIVE})
    if inactive:
        raise ApplicationError(error_codes.PROVIDER_NOT_ACTIVE,
                               f"demo provider(s) {', '.join(inactive)} are not active", status=409)
    # One transaction per batch: the outbox counter (and so every other writer) waits for one batch at
    # most, never for the whole run. Bodies are 60 random bits, so a UCRI clash (an IntegrityError for the
    # batch) is about as likely as N^2 / 2^61: once in millions of million-resource demos.
    with transaction.atomic():
        Resource.objects.bulk_create(rows, batch_size=1000)
        changes = [_change(row) for row in rows]
        retired = [row for row, spec in zip(rows, specs, strict=True) if spec.retired]
        if retired:
            now = timezone.now()
            Resource.objects.filter(pk__in=[row.pk for row in retired]).update(
                status=Resource.Status.RETIRED, retired_at=now, updated_at=now, version=2)
            for row in retired:
                row.status, row.retired_at, row.updated_at, row.version = Resource.Status.RETIRED, now, now, 2
                changes.append(_change(row))
        outbox.append_many(changes)
    return len(rows)


def _resource(spec: ResourceSpec, provider: Provider, site: Site) -> Resource:
    return Resource(
        ucri=identifiers.compose(provider.prefix, spec.body), provider=provider, site=site,
        local_id=spec.local_id, authority=provider.authority, source=Source.LOCAL, version=1,
        province=site.province, hub=site.hub, pue=site.pue, green_ratio=site.green_ratio,  # see Resource
        **spec.fields,
    )


def _change(resource: Resource) -> outbox.Change:
    op = "retire" if resource.is_retired else "upsert"
    return outbox.Change("resource", op, resource.ucri, resource.version, resource.authority,
                         records.resource_feed(resource))
