"""The national compute dashboard (issue 8): every figure equals what plain Python computes from the
records, the page renders for anyone in both languages and on an empty catalog, and the cache is used."""

from __future__ import annotations

import bisect
import datetime as dt
import html
import re
import sqlite3
import statistics
from collections import defaultdict

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry import availability, indicators, services
from registry.models import Availability, Provider, Resource, Site, Source
from registry.records import timestamp
from tests.support import factories

pytestmark = pytest.mark.django_db

NATIVE = {"general": "fp32_tflops", "intelligent": "fp16_tflops", "super": "fp64_tflops"}
REFERENCE_MODELS = {"A100 SXM 80GB", "H100 SXM 80GB", "H20 96GB", "L20 48GB", "Ascend 910B", "MLU370-X8",
                    "Xeon Platinum 8480+ (56 cores)", "EPYC 9654 (96 cores)", "Kunpeng 920 (64 cores)",
                    "SW26010-Pro (node)"}  # ../shared/data/accelerators.csv
WEST_HUBS, EAST_HUBS = {"gz", "nm", "gs", "nx"}, {"jjj", "yrd", "gba", "cy"}  # ../shared/data/hubs.csv


def _card(**overrides):
    """An intelligent card-priced resource with no figures unless given."""
    data = {"kind": "intelligent", "accelerator": "GPU", "accelerator_model": "A100 SXM 80GB", "accelerator_count": 8,
            "node_count": 1, "fp64_tflops": None, "fp32_tflops": None, "fp16_tflops": None, "int8_tops": None,
            "price_per_hour": "8.5", "price_unit": "card"}
    data.update(overrides)
    return data


def _report(ucri: str, units: int, *, ago: int = 0, valid_for: int = 300) -> dict:
    observed = timezone.now() - dt.timedelta(seconds=ago)
    return {"ucri": ucri, "available_units": units, "observed_at": timestamp(observed), "valid_for": valid_for}


@pytest.fixture
def catalog(node):
    """Several kinds, hubs (west and east) and provinces, a site outside the hubs, a site without resources,
    a mirrored provider with its site and resource, a retired and two suspended resources, fresh and
    stale availability, card, core and node prices, prices per million tokens."""
    own = factories.provider(code="GZ01")
    gz1 = factories.site(own, name="Gui'an 1", province="52", pue=1.15, green_ratio=0.62, rack_availability=0.72)
    gz2 = factories.site(own, name="Gui'an 2", province="52", pue=1.2, green_ratio=0.81, rack_availability=0.4)
    bj = factories.site(own, name="Yizhuang 1", province="11", pue=1.24, green_ratio=0.3, rack_availability=0.45)
    hb = factories.site(own, name="Zhangjiakou 1", province="13", pue=1.28, green_ratio=0.5, rack_availability=0.5)
    sh = factories.site(own, name="Lingang 1", province="31", pue=1.31, green_ratio=0.2, rack_availability=0.55)
    sd = factories.site(own, name="Jinan 1", province="37", pue=1.45, green_ratio=0.1, rack_availability=0.3)
    factories.site(own, name="Zhongwei 1", province="64", pue=1.1, green_ratio=0.95, rack_availability=0.9)  # empty

    made = {
        "a1": factories.resource(gz1, **_card(accelerator_count=64, node_count=8, fp64_tflops=620.8,
                                              fp32_tflops=1248.0, fp16_tflops=19968.0, price_per_hour="8.5")),
        "a2": factories.resource(bj, **_card(accelerator_count=16, node_count=2, fp64_tflops=155.2, fp32_tflops=312.0,
                                             fp16_tflops=4992.0, price_per_hour="7.0")),
        "a3": factories.resource(sh, **_card(accelerator_count=8, fp16_tflops=2496.0, price_per_hour="9.25")),
        "ascend": factories.resource(gz2, **_card(accelerator="NPU", accelerator_model="Ascend 910B",
                                                  accelerator_count=128, node_count=16, fp16_tflops=40064.0,
                                                  price_per_hour="6", price_per_million_tokens="2.0")),
        "kunlun": factories.resource(sh, **_card(accelerator="ASIC", accelerator_model="Kunlun R200",
                                                 accelerator_count=32, node_count=4, fp32_tflops=1024.0,
                                                 fp16_tflops=4096.0, price_per_hour="3.0",
                                                 price_per_million_tokens="1.5")),
        "kunpeng": factories.resource(sd, kind="general", accelerator="CPU", accelerator_model="Kunpeng 920 (64 cores)",
                                      accelerator_count=4096, node_count=32, fp64_tflops=83.2, fp32_tflops=172.8,
                                      fp16_tflops=None, int8_tops=None, price_per_hour="0.15", price_unit="core"),
        "xeon": factories.resource(gz1, kind="general", accelerator="CPU",
                                   accelerator_model="Xeon Platinum 8480+ (56 cores)", accelerator_count=1792,
                                   node_count=16, fp64_tflops=115.2, fp32_tflops=230.4, fp16_tflops=None,
                                   int8_tops=None, price_per_hour="0.2", price_unit="core", status="suspended"),
        "epyc": factories.resource(hb, kind="general", accelerator="CPU", accelerator_model="EPYC 9654 (96 cores)",
                                   accelerator_count=768, node_count=4, fp64_tflops=None, fp32_tflops=59.2,
                                   fp16_tflops=None, int8_tops=None, price_per_hour="0.25", price_unit="core"),
        "sunway": factories.resource(gz2, kind="super", accelerator="CPU", accelerator_model="SW26010-Pro (node)",
                                     accelerator_count=199680, node_count=512, fp64_tflops=7168.0, fp32_tflops=7168.0,
                                     fp16_tflops=None, int8_tops=None, price_per_hour="12", price_unit="node"),
        "gpu_super": factories.resource(bj, **_card(kind="super", accelerator_count=32, node_count=4,
                                                    fp64_tflops=310.4, fp32_tflops=624.0, fp16_tflops=9984.0,
                                                    price_per_hour="10.0")),
        "h20_suspended": factories.resource(bj, **_card(accelerator_model="H20 96GB", accelerator_count=64,
                                                        node_count=8, fp16_tflops=9472.0, price_per_hour="6.0",
                                                        status="suspended")),
        "retired": factories.resource(gz1, **_card(accelerator_model="H100 SXM 80GB", accelerator_count=256,
                                                   node_count=32, fp64_tflops=8704.0, fp16_tflops=253184.0,
                                                   price_per_hour="20")),
    }
    services.resource_retire(resource=made["retired"])

    # A provider mirrored from another node: its rows carry source=mirror (as the federation consumer writes
    # them) and count like local ones.
    peer = factories.provider(code="GD01")
    gd = factories.site(peer, name="Shaoguan 1", province="44", pue=1.19, green_ratio=0.35, rack_availability=0.6)
    made["mirrored"] = factories.resource(gd, **_card(accelerator_model="H100 SXM 80GB", accelerator_count=64,
                                                      fp64_tflops=2176.0, fp32_tflops=4288.0, fp16_tflops=63296.0,
                                                      price_per_hour="18.0", price_per_million_tokens="5.0"))
    Provider.objects.filter(pk=peer.pk).update(source=Source.MIRROR)
    Site.objects.filter(pk=gd.pk).update(source=Source.MIRROR)
    Resource.objects.filter(pk=made["mirrored"].pk).update(source=Source.MIRROR)

    availability.report(provider=own, reports=[
        _report(made["a1"].ucri, 10),
        _report(made["a2"].ucri, 5, ago=7200, valid_for=60),  # stale
        _report(made["kunpeng"].ucri, 1000),
        _report(made["sunway"].ucri, 100),
        _report(made["xeon"].ucri, 50),  # fresh but suspended: not live capacity
    ])
    observed = timezone.now()
    Availability.objects.create(resource=made["mirrored"], available_units=20, observed_at=observed, valid_for=120,
                                expires_at=observed + dt.timedelta(seconds=120), authority="https://peer.example")
    return made


# Independent expectations: plain Python over the stored records --------------------------------------

def _counted() -> list[Resource]:
    return [r for r in Resource.objects.all() if r.status != "retired"]


def _native(r: Resource) -> float:
    return getattr(r, NATIVE[r.kind]) or 0.0


def _group(r: Resource) -> str | None:
    return r.accelerator_model if r.accelerator_model in REFERENCE_MODELS else None


def _medians(rows, key, value):
    groups = defaultdict(list)
    for row in rows:
        if value(row) is not None:
            groups[key(row)].append(float(value(row)))
    return {k: statistics.median(v) for k, v in groups.items()}


def _bucket(value: float, edges, *, closed_right: bool) -> int:
    return bisect.bisect_left(edges, value) if closed_right else bisect.bisect_right(edges, value)


def test_totals_equal_sums_over_the_records(catalog):
    data = indicators.compute()
    counted = _counted()
    assert len(counted) == 12 and all(r.ucri != catalog["retired"].ucri for r in counted)

    assert data.total.resources == len(counted) == 12
    assert data.total.active == sum(r.status == "active" for r in counted) == 10
    assert data.total.suspended == 2
    for precision in ("fp64", "fp32", "fp16"):
        published = [v for v in (getattr(r, f"{precision}_tflops") for r in counted) if v is not None]
        assert getattr(data.total, f"{precision}_tflops") == pytest.approx(sum(published))
        assert getattr(data.total, f"{precision}_resources") == len(published)
    assert data.total.fp64_eflops == pytest.approx(sum(r.fp64_tflops or 0 for r in counted) / 1e6)
    assert data.total.fp16_eflops == pytest.approx(sum(r.fp16_tflops or 0 for r in counted) / 1e6)

    native_total = sum(_native(r) for r in counted)
    intelligent = sum(r.fp16_tflops or 0 for r in counted if r.kind == "intelligent")
    assert data.total.native_eflops == pytest.approx(native_total / 1e6)
    assert data.total.intelligent_share == pytest.approx(intelligent / native_total)
    # By hand: the intelligent FP16 (incl. the suspended H20 and the mirrored H100, not the retired H100)...
    assert intelligent == pytest.approx(19968 + 4992 + 2496 + 40064 + 4096 + 9472 + 63296)
    # ...over it plus general FP32 (Kunpeng, Xeon, EPYC) plus supercomputing FP64 (Sunway, GPU partition).
    assert native_total == pytest.approx(intelligent + 172.8 + 230.4 + 59.2 + 7168 + 310.4)
    for kind, column in NATIVE.items():
        assert data.by_kind[kind].native_tflops == pytest.approx(sum(getattr(r, column) or 0 for r in counted
                                                                     if r.kind == kind))
        assert data.by_kind[kind].resources == sum(r.kind == kind for r in counted)

    assert data.total.storage_tb == pytest.approx(sum(r.storage_tb or 0 for r in counted))
    assert data.sites_with_resources == len({r.site_id for r in counted}) == 7
    assert data.intelligent_centers == len({r.site_id for r in counted if r.kind == "intelligent"}) == 5


def test_hubs_and_provinces_equal_sums_over_the_records(catalog):
    data = indicators.compute()
    counted = _counted()
    for attribute, key in (("by_hub", "hub"), ("by_province", "province")):
        expected = defaultdict(lambda: [0, 0, 0.0, 0.0])
        for r in counted:
            row = expected[getattr(r, key)]
            row[0] += 1
            row[1] += r.status == "active"
            row[2] += _native(r)
            row[3] += r.fp16_tflops or 0
        got = {code: [s.resources, s.active, pytest.approx(s.native_tflops), pytest.approx(s.fp16_tflops)]
               for code, s in getattr(data, attribute).items()}
        assert got == dict(expected)
    assert set(data.by_hub) == {"gz", "jjj", "yrd", "gba", None}  # None: Shandong, outside the hubs
    assert data.by_hub["gba"].resources == 1  # the mirrored resource counts
    assert data.by_hub[None].resources == 1 and data.by_province["37"].resources == 1
    assert data.by_province["13"].native_tflops == pytest.approx(59.2)


def test_site_energy_and_racks_equal_the_records(catalog):
    sites = list(Site.objects.all())
    data = indicators.compute().sites
    assert data.all.sites == len(sites) == 8  # the empty Zhongwei site and the mirrored one included
    assert data.all.median_pue == pytest.approx(statistics.median(s.pue for s in sites))
    assert data.all.median_green_ratio == pytest.approx(statistics.median(s.green_ratio for s in sites))
    assert data.all.median_rack_availability == pytest.approx(statistics.median(s.rack_availability for s in sites))
    assert data.all.rack_under_review == sum(s.rack_availability < 0.5 for s in sites) == 3  # 0.5 is not under

    def target(hub):
        return 1.2 if hub in WEST_HUBS else 1.25 if hub in EAST_HUBS else None

    for hub in {s.hub for s in sites}:
        mine = [s for s in sites if s.hub == hub]
        group = data.by_hub[hub]
        assert group.sites == len(mine)
        assert group.median_pue == pytest.approx(statistics.median(s.pue for s in mine))
        assert group.pue_target == target(hub)
        if target(hub) is not None:
            assert group.meeting_target == sum(s.pue <= target(hub) for s in mine)
    in_hubs = [s for s in sites if target(s.hub) is not None]
    assert data.in_hubs == len(in_hubs)
    # Gui'an 1.15 and 1.2 (<= 1.2), Zhongwei 1.1, Yizhuang 1.24 and Shaoguan 1.19 (<= 1.25); not Zhangjiakou,
    # Lingang.
    assert data.in_hubs_meeting_target == sum(s.pue <= target(s.hub) for s in in_hubs) == 5
    assert data.meeting_share == pytest.approx(5 / 7)

    pue_edges, ratio_edges = [1.1, 1.2, 1.25, 1.3, 1.4, 1.5], [i / 10 for i in range(1, 10)]
    expected_pue, expected_green, expected_rack = [0] * 7, [0] * 10, [0] * 10
    for s in sites:
        expected_pue[_bucket(s.pue, pue_edges, closed_right=True)] += 1
        expected_green[_bucket(s.green_ratio, ratio_edges, closed_right=False)] += 1
        expected_rack[_bucket(s.rack_availability, ratio_edges, closed_right=False)] += 1
    assert data.all.pue_buckets == expected_pue
    assert data.all.green_buckets == expected_green
    assert data.all.rack_buckets == expected_rack
    assert sum(data.all.pue_buckets[:2]) == 4  # at or under 1.2: 1.1, 1.15, 1.19, 1.2


def test_live_availability_equals_the_fresh_reports(catalog):
    now = timezone.now()
    data = indicators.compute(now)
    active = [r for r in Resource.objects.all() if r.status == "active"]
    fresh = {a.resource_id: a for a in Availability.objects.all() if a.expires_at > now}
    expected = defaultdict(lambda: [0, 0, 0, 0])
    for r in active:
        row = expected[(r.hub, r.price_unit)]
        row[0] += 1
        row[1] += r.node_count if r.price_unit == "node" else r.accelerator_count
        if r.pk in fresh:
            row[2] += 1
            row[3] += fresh[r.pk].available_units
    got = {(c.hub, c.unit): [c.active_resources, c.static_units, c.fresh_resources, c.fresh_units] for c in data.live}
    assert got == dict(expected)
    # a1, Kunpeng, Sunway and the mirrored H100; not the stale a2 nor the suspended Xeon.
    assert sum(c.fresh_resources for c in data.live) == 4
    assert data.fresh_share == pytest.approx(4 / len(active))
    assert got[("gz", "node")] == [1, 512, 1, 100]
    assert got[("jjj", "card")][2:] == [0, 0]


def test_price_medians_equal_the_records(catalog):
    data = indicators.compute()
    active = [r for r in Resource.objects.all() if r.status == "active"]
    by_model = _medians(active, lambda r: (_group(r), r.price_unit), lambda r: r.price_per_hour)
    assert {(p.group, p.unit): pytest.approx(p.median_price_per_hour) for p in data.price_by_model} == by_model
    by_hub = _medians(active, lambda r: (r.hub, r.price_unit), lambda r: r.price_per_hour)
    assert {(p.group, p.unit): pytest.approx(p.median_price_per_hour) for p in data.price_by_hub} == by_hub
    tokens = _medians(active, lambda r: (_group(r), r.price_unit), lambda r: r.price_per_million_tokens)
    assert {(p.group, p.unit): pytest.approx(p.median_price_per_million_tokens)
            for p in data.price_by_model if p.token_resources} == tokens
    counts = defaultdict(int)
    for r in active:
        counts[(_group(r), r.price_unit)] += 1
    assert {(p.group, p.unit): p.resources for p in data.price_by_model} == dict(counts)
    # By hand: active A100 cards are 8.5, 7.0 and 9.25 plus the GPU partition's 10.0 -> (8.5 + 9.25) / 2.
    assert by_model[("A100 SXM 80GB", "card")] == pytest.approx(8.875)
    assert by_model[(None, "card")] == 3.0  # Kunlun R200 is not a reference model: "other"
    assert ("H20 96GB", "card") not in by_model  # suspended: not offered, so not priced


def test_targets_report_what_the_catalog_covers(catalog):
    data = indicators.compute()
    targets = {t.indicator: t for t in data.targets}
    assert targets["compute scale"].target_2025 == 300
    assert targets["compute scale"].covered == pytest.approx(data.total.native_eflops)
    assert targets["intelligent computing centers"].covered == 5
    assert targets["intelligent computing centers"].progress == pytest.approx(5 / 50)
    assert targets["intelligent compute share"].covered == pytest.approx(data.total.intelligent_share * 100)
    assert targets["total storage capacity"].covered == pytest.approx(
        sum(r.storage_tb or 0 for r in _counted()) / 1e6)
    assert targets["OTN coverage of key application sites"].covered is None
    assert targets["OTN coverage of key application sites"].progress is None


def test_compute_runs_a_fixed_handful_of_queries(catalog, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        indicators.compute()


# The page -----------------------------------------------------------------------------------------

def _value(body: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}" data-value="([^"]*)"', body)
    assert match, f"no {testid}"
    return match.group(1)


def _text(body: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', body)
    assert match, f"no {testid}"
    return html.unescape(match.group(1)).strip()


def test_page_renders_anonymously_with_the_headline_figures(client, catalog):
    response = client.get("/dashboard")
    assert response.status_code == 200
    body = response.content.decode()
    counted = _counted()
    native = sum(_native(r) for r in counted)
    intelligent = sum(r.fp16_tflops or 0 for r in counted if r.kind == "intelligent")
    assert float(_value(body, "total-eflops-fp64")) == pytest.approx(sum(r.fp64_tflops or 0 for r in counted) / 1e6)
    assert float(_value(body, "total-eflops-fp16")) == pytest.approx(sum(r.fp16_tflops or 0 for r in counted) / 1e6)
    assert float(_value(body, "total-eflops-native")) == pytest.approx(native / 1e6)
    assert float(_value(body, "intelligent-share")) == pytest.approx(intelligent / native)
    assert _text(body, "intelligent-share") == f"{100 * intelligent / native:.1f}%"
    assert _text(body, "total-eflops-fp16") == f"{sum(r.fp16_tflops or 0 for r in counted) / 1e6:.3f}"
    assert _value(body, "resource-count") == "12"
    assert _value(body, "intelligent-centers") == "5"
    for testid in ("dashboard-hubs", "hub-row", "dashboard-provinces", "province-row", "dashboard-energy",
                   "pue-histogram", "green-histogram", "rack-histogram", "rack-under-review", "dashboard-live",
                   "live-row", "fresh-share", "dashboard-prices", "price-model-row", "price-hub-row",
                   "price-token-row", "dashboard-targets", "target-row", "computed-at"):
        assert f'data-testid="{testid}"' in body, testid
    assert "Beijing-Tianjin-Hebei" in body and "Outside the hubs" in body and "Shandong" in body
    # Ranked by compute scale: Guizhou (A100, Ascend, Sunway, Xeon: 67,430 TFLOPS) before the Greater Bay Area
    # (the mirrored H100: 63,296); the eight hubs are always listed, then "outside the hubs".
    hubs = re.findall(r'data-testid="hub-row" data-hub="([^"]*)"', body)
    assert hubs[:2] == ["gz", "gba"] and len(hubs) == 9 and set(hubs) >= {"nx", ""}
    assert 'data-indicator="OTN coverage of key application sites"' in body
    assert "Not measured by a registry catalog" in body
    assert "/static/cir/dashboard.css" in body


def test_page_in_chinese_by_header_and_by_cookie(client, catalog):
    body = client.get("/dashboard", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert '<html lang="zh-hans">' in body
    assert "京津冀" in body and "贵州" in body and "粤港澳大湾区" in body and "山东" in body
    assert "Beijing-Tianjin-Hebei" not in body
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    body = client.get("/dashboard").content.decode()
    assert "长三角" in body and "上海" in body and "Yangtze River Delta" not in body


def test_empty_catalog_renders_without_dividing_by_zero(client, node):
    data = indicators.compute()
    assert data.total.resources == 0 and data.total.intelligent_share is None and data.fresh_share is None
    assert data.sites.all.sites == 0 and data.sites.meeting_share is None and data.sites.all.median_pue is None
    assert data.price_by_model == [] and data.live == []
    assert all(t.progress in (0, None) for t in data.targets)
    response = client.get("/dashboard")
    assert response.status_code == 200
    body = response.content.decode()
    assert _value(body, "total-eflops-fp64") == "0.0" and _text(body, "total-eflops-fp64") == "0.000"
    assert _value(body, "intelligent-share") == "" and _text(body, "intelligent-share") == "–"
    assert _value(body, "fresh-share") == ""


def test_resources_without_native_figures_give_no_share(client, node):
    site = factories.site(factories.provider())
    factories.resource(site, **_card())  # publishes nothing
    data = indicators.compute()
    assert data.total.resources == 1 and data.total.native_tflops == 0 and data.total.intelligent_share is None
    assert client.get("/dashboard").status_code == 200


def test_second_request_is_served_from_the_cache_in_any_language(client, catalog):
    assert client.get("/dashboard").status_code == 200
    with CaptureQueriesContext(connection) as queries:
        english = client.get("/dashboard")
        chinese = client.get("/dashboard", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert english.status_code == chinese.status_code == 200
    assert not [q["sql"] for q in queries if "registry_" in q["sql"]]
    figure = "total-eflops-fp16"
    assert _value(english.content.decode(), figure) == _value(chinese.content.decode(), figure)
    # The cached figures are data: a new resource shows only once the entry is recomputed.
    factories.resource(Site.objects.get(name="Gui'an 1"), **_card(fp16_tflops=1e6))
    assert _value(client.get("/dashboard").content.decode(), "resource-count") == "12"
    cache.delete(indicators.CACHE_KEY)
    assert _value(client.get("/dashboard").content.decode(), "resource-count") == "13"


def test_expired_figures_are_recomputed_unless_another_request_is_at_it(catalog):
    old = indicators.compute(timezone.now() - dt.timedelta(seconds=indicators.CACHE_SECONDS + 5))
    cache.set(indicators.CACHE_KEY, old, indicators.STALE_SECONDS)
    cache.add(indicators.LOCK_KEY, True, indicators.LOCK_SECONDS)
    with CaptureQueriesContext(connection) as queries:
        assert indicators.current() is not None
    assert not [q for q in queries if "registry_" in q["sql"]]  # served the stale figures
    cache.delete(indicators.LOCK_KEY)
    with CaptureQueriesContext(connection) as queries:
        fresh = indicators.current()
    assert [q for q in queries if "registry_resource" in q["sql"]]
    assert fresh.computed_at > old.computed_at
    assert cache.get(indicators.LOCK_KEY) is None


def test_sqlite_median_matches_statistics_median():
    """The embedded demo database's median aggregate (PostgreSQL uses percentile_cont)."""
    db = sqlite3.connect(":memory:")
    db.create_aggregate("cir_median", 1, indicators._SqliteMedian)
    db.execute("create table t (g text, v decimal)")
    values = {"a": [3, 1, 2], "b": [4.5, 1.5, None, 2.5, 10], "c": [None]}
    db.executemany("insert into t values (?, ?)", [(g, v) for g, vs in values.items() for v in vs])
    got = dict(db.execute("select g, cir_median(v) from t group by g"))
    assert got == {"a": 2, "b": statistics.median([4.5, 1.5, 2.5, 10]), "c": None}


def test_the_beat_task_warms_the_cache_so_pages_run_no_aggregates(client, catalog):
    from registry.tasks import refresh_indicators

    assert settings.CELERY_BEAT_SCHEDULE["refresh-indicators"]["task"] == "registry.tasks.refresh_indicators"
    cache.clear()
    assert refresh_indicators() == Resource.objects.exclude(status=Resource.Status.RETIRED).count()
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/dashboard").status_code == 200
    assert not [q for q in queries.captured_queries if "registry_" in q["sql"]]
