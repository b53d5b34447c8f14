"""Discovery over HTTP (CONTRACT §4): every filter, combinations, strict parameters, stable order."""

import datetime as dt

import pytest
from django.utils import timezone

from registry import services
from registry.filters import ORDERINGS, ResourceFilterSet
from registry.models import Resource
from tests.support import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(node):
    """A small catalog spread over hubs, kinds, accelerators, prices and green metrics."""
    gz = factories.provider(code="GZ01")
    bj = factories.provider(code="BJ01")
    gz_site = factories.site(gz, name="Gui'an", province="52", pue=1.12, green_ratio=0.8)
    bj_site = factories.site(bj, name="Zhangjiakou", province="13", pue=1.24, green_ratio=0.3)
    sx_site = factories.site(bj, name="Taiyuan", province="14", pue=1.4, green_ratio=0.1)  # no hub
    rows = {
        "gz_a100": factories.resource(gz_site, accelerator="GPU", fp16_tflops=19968.0, price_per_hour="8.5"),
        "gz_910b": factories.resource(gz_site, accelerator="NPU", accelerator_model="Ascend 910B",
                                      fp64_tflops=None, fp16_tflops=40064.0, price_per_hour="6"),
        "gz_cpu": factories.resource(gz_site, kind="general", accelerator="CPU", accelerator_model="Kunpeng 920",
                                     fp16_tflops=None, memory_gb=16384.0, price_per_hour="0.15", price_unit="core"),
        "bj_h100": factories.resource(bj_site, accelerator="GPU", accelerator_model="H100 SXM 80GB",
                                      fp64_tflops=2176.0, fp16_tflops=63296.0, price_per_hour="20"),
        "bj_hpc": factories.resource(bj_site, kind="super", accelerator="CPU", accelerator_model="SW26010-Pro",
                                     fp16_tflops=None, price_per_hour="60", price_unit="node", node_count=512),
        "sx_l20": factories.resource(sx_site, accelerator="GPU", accelerator_model="L20 48GB",
                                     fp16_tflops=956.0, price_per_hour="4", status="suspended"),
    }
    return rows


def _ucris(response):
    assert response.status_code == 200, response.content
    return [item["ucri"] for item in response.json()["results"]]


def _names(catalog, response):
    by_ucri = {r.ucri: name for name, r in catalog.items()}
    return {by_ucri[u] for u in _ucris(response)}


def test_default_lists_active_resources_in_ucri_order(reader, catalog):
    response = reader.get("/api/v1/resources")
    ucris = _ucris(response)
    assert ucris == sorted(ucris)
    assert set(ucris) == {r.ucri for name, r in catalog.items() if name != "sx_l20"}
    body = response.json()
    assert body["next"] is None
    assert body["results"][0]["site"]["pue"] in (1.12, 1.24)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kind=general", {"gz_cpu"}),
        ("kind=super", {"bj_hpc"}),
        ("accelerator=NPU", {"gz_910b"}),
        ("accelerator=GPU", {"gz_a100", "bj_h100"}),
        ("min_fp64_tflops=1000", {"bj_h100"}),
        ("min_fp16_tflops=30000", {"gz_910b", "bj_h100"}),
        ("min_memory_gb=10000", {"gz_cpu"}),
        ("hub=gz", {"gz_a100", "gz_910b", "gz_cpu"}),
        ("hub=jjj", {"bj_h100", "bj_hpc"}),
        ("province=13", {"bj_h100", "bj_hpc"}),
        ("provider=86.52.GZ01", {"gz_a100", "gz_910b", "gz_cpu"}),
        ("provider=86.52.gz01", {"gz_a100", "gz_910b", "gz_cpu"}),
        ("provider=86.52", set()),  # exact provider prefix only
        ("prefix=86.52", {"gz_a100", "gz_910b", "gz_cpu", "bj_h100", "bj_hpc"}),
        ("prefix=86.52.BJ01", {"bj_h100", "bj_hpc"}),
        ("prefix=86.11", set()),
        ("status=suspended", {"sx_l20"}),
        ("max_price=7&price_unit=card", {"gz_910b"}),
        ("price_unit=core", {"gz_cpu"}),
        ("max_pue=1.2", {"gz_a100", "gz_910b", "gz_cpu"}),
        ("min_green_ratio=0.5", {"gz_a100", "gz_910b", "gz_cpu"}),
        ("source=local", {"gz_a100", "gz_910b", "gz_cpu", "bj_h100", "bj_hpc"}),
        ("source=mirror", set()),
    ],
)
def test_each_filter(reader, catalog, query, expected):
    assert _names(catalog, reader.get(f"/api/v1/resources?{query}")) == expected


def test_filters_combine(reader, catalog):
    response = reader.get("/api/v1/resources?accelerator=GPU&hub=jjj&min_fp16_tflops=1000&max_pue=1.3")
    assert _names(catalog, response) == {"bj_h100"}
    response = reader.get("/api/v1/resources?kind=intelligent&prefix=86.52.GZ01&max_price=10&price_unit=card"
                       "&min_green_ratio=0.7")
    assert _names(catalog, response) == {"gz_a100", "gz_910b"}


def test_the_prefix_filter_is_segment_wise(reader, node):
    p1 = factories.provider(code="AB")
    p2 = factories.provider(code="ABC")
    r1 = factories.resource(factories.site(p1))
    factories.resource(factories.site(p2))
    assert _ucris(reader.get("/api/v1/resources?prefix=86.52.AB")) == [r1.ucri]


@pytest.mark.parametrize(
    ("order", "key", "reverse"),
    [("price", "price_per_hour", False), ("-fp16_tflops", "fp16_tflops", True), ("pue", None, False),
     ("-green_ratio", None, True), ("updated_at", "updated_at", False)],
)
def test_orders_are_stable_with_ucri_tie_break(reader, catalog, order, key, reverse):
    query = f"order={order}" + ("&price_unit=card" if order == "price" else "")
    items = reader.get(f"/api/v1/resources?{query}").json()["results"]

    def sort_key(item):
        value = item["site"][order.lstrip("-")] if key is None else item[key]
        missing = value is None
        if reverse and not missing:
            value = -value if not isinstance(value, str) else value
        return (missing, value if not missing else 0, item["ucri"])

    if order == "updated_at":
        assert [i["ucri"] for i in items] == [i["ucri"] for i in sorted(items, key=lambda i: (i["updated_at"],
                                                                                               i["ucri"]))]
    else:
        assert [i["ucri"] for i in items] == [i["ucri"] for i in sorted(items, key=sort_key)]
    assert len(items) >= 2


def test_nulls_sort_last_in_descending_fp16(reader, catalog):
    items = reader.get("/api/v1/resources?order=-fp16_tflops").json()["results"]
    values = [i["fp16_tflops"] for i in items]
    assert values[:3] == [63296.0, 40064.0, 19968.0]
    assert values[3:] == [None, None]


def test_every_ordering_is_reachable():
    assert set(ORDERINGS) == {"ucri", "price", "-fp16_tflops", "pue", "-green_ratio", "updated_at",
                              "-available_units"}


@pytest.mark.parametrize("order", ["ucri", "price", "-fp16_tflops", "pue", "-green_ratio", "updated_at",
                                   "-available_units"])
def test_cursor_pages_cover_everything_once(reader, node, order):
    provider = factories.provider(code="PG")
    sites = [factories.site(provider, pue=1.1 + i / 100, green_ratio=i / 10) for i in range(3)]
    made = {factories.resource(sites[i % 3], price_per_hour=str(1 + i % 4),
                               fp16_tflops=None if i % 5 == 0 else float(i % 3)).ucri for i in range(23)}
    query = f"/api/v1/resources?limit=5&order={order}" + ("&price_unit=card" if order == "price" else "")
    seen, url, pages = [], query, 0
    while url:
        body = reader.get(url).json()
        assert len(body["results"]) <= 5
        seen.extend(item["ucri"] for item in body["results"])
        url = body["next"]
        pages += 1
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == made
    unpaged = _ucris(reader.get(query.replace("limit=5", "limit=500")))
    assert seen == unpaged


def test_cursor_survives_inserts_between_pages(reader, node):
    provider = factories.provider(code="INS")
    site = factories.site(provider)
    for _ in range(6):
        factories.resource(site)
    first = reader.get("/api/v1/resources?limit=3").json()
    factories.resource(site)
    rest = []
    url = first["next"]
    while url:
        body = reader.get(url).json()
        rest.extend(i["ucri"] for i in body["results"])
        url = body["next"]
    page_one = [i["ucri"] for i in first["results"]]
    assert not set(page_one) & set(rest)
    assert all(u > page_one[-1] for u in rest)


@pytest.mark.parametrize(
    "query",
    ["colour=red", "kind=general&bogus=1", "ordering=price", "page=2", "format=json"],
)
def test_unknown_parameters_are_400(reader, catalog, query):
    response = reader.get(f"/api/v1/resources?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "unknown_parameter"


@pytest.mark.parametrize(
    "query",
    ["kind=quantum", "accelerator=gpu", "accelerator=TPU", "hub=xx", "province=99", "status=deleted",
     "min_fp16_tflops=lots", "min_fp16_tflops=-1", "min_fp16_tflops=NaN", "max_pue=inf", "price_unit=hour",
     "source=remote", "include_downtime=maybe", "order=name", "order=-price", "provider=nonsense",
     "prefix=87.52", "prefix=86.52/", "kind=", "kind=general&kind=super", "limit=0", "limit=501",
     "limit=ten", "cursor=bm9wZQ", "cursor=%%%",
     "cursor=eyJvIjoidWNyaSIsInYiOlsiXHUwMDAwIl19",  # {"o":"ucri","v":["\u0000"]}: NUL would reach SQL
     "order=price&price_unit=card&cursor=eyJvIjoicHJpY2UiLCJ2IjpbImFiYyIsIjg2LjUyIl19",  # price "abc"
     "min_fp16_tflops=1e400"],
)
def test_invalid_values_are_400_invalid_filter(reader, catalog, query):
    response = reader.get(f"/api/v1/resources?{query}")
    assert response.status_code == 400, query
    assert response.json()["code"] == "invalid_filter", query


def test_huge_but_finite_numbers_are_fine(reader, catalog):
    response = reader.get("/api/v1/resources?max_price=123456789012345678901234567890&price_unit=card")
    assert _names(catalog, response) == {"gz_a100", "gz_910b", "bj_h100"}


def test_cursor_from_another_order_is_rejected(reader, catalog):
    cursor = reader.get("/api/v1/resources?limit=1").json()["next"].split("cursor=")[1]
    response = reader.get(f"/api/v1/resources?limit=1&order=pue&cursor={cursor}")
    assert response.json()["code"] == "invalid_filter"


@pytest.mark.parametrize("query", ["order=price", "max_price=10"])
def test_price_without_unit_is_400(reader, catalog, query):
    response = reader.get(f"/api/v1/resources?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "price_unit_required"


def test_ongoing_downtime_is_left_out_unless_asked(reader, catalog):
    now = timezone.now()
    gz_a100, bj_h100 = catalog["gz_a100"], catalog["bj_h100"]
    services.downtime_create(provider=gz_a100.provider, data={
        "resource": gz_a100.ucri, "start": now - dt.timedelta(hours=1), "end": now + dt.timedelta(hours=1),
        "classification": "unscheduled", "reason": "fan failure"})
    services.downtime_create(provider=bj_h100.provider, data={
        "site_id": str(bj_h100.site_id), "start": now - dt.timedelta(hours=1), "end": now + dt.timedelta(hours=1),
        "classification": "scheduled", "reason": "power work"})
    services.downtime_create(provider=gz_a100.provider, data={
        "site_id": str(gz_a100.site_id), "start": now + dt.timedelta(days=1), "end": now + dt.timedelta(days=2),
        "classification": "scheduled", "reason": "announced"})
    default = _names(catalog, reader.get("/api/v1/resources"))
    assert default == {"gz_910b", "gz_cpu"}
    everything = reader.get("/api/v1/resources?include_downtime=true").json()["results"]
    assert {i["ucri"] for i in everything} >= {gz_a100.ucri, bj_h100.ucri}
    a100 = next(i for i in everything if i["ucri"] == gz_a100.ucri)
    # The item's downtimes include its site's (the announced one) and its own (ongoing).
    assert [d["reason"] for d in a100["downtimes"]] == ["fan failure", "announced"]
    assert _names(catalog, reader.get("/api/v1/resources?include_downtime=false")) == default


def test_retired_resources_only_with_status_retired(reader, catalog):
    services.resource_retire(resource=catalog["gz_cpu"])
    assert "gz_cpu" not in _names(catalog, reader.get("/api/v1/resources"))
    assert _names(catalog, reader.get("/api/v1/resources?status=retired")) == {"gz_cpu"}


def test_items_are_the_resolve_record(reader, catalog):
    item = reader.get("/api/v1/resources?kind=super").json()["results"][0]
    single = reader.get(f"/api/v1/resolve/{item['ucri']}").json()
    assert item.pop("availability") is None  # discovery adds live availability (CONTRACT §13)
    assert item == single


def test_every_resource_field_worth_searching_has_a_filter():
    """NetBox habit: a searchable model field without a filter is a test failure, not an oversight."""
    searchable = {"kind", "accelerator", "fp64_tflops", "fp16_tflops", "memory_gb", "hub", "province",
                  "provider", "status", "price_per_hour", "price_unit", "pue", "green_ratio", "source"}
    covered = {f.field_name.split("__")[0] for f in ResourceFilterSet.base_filters.values()}
    assert searchable <= covered
    assert {f.name for f in Resource._meta.get_fields()} >= searchable
