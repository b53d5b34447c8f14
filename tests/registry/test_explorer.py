"""The catalog explorer page and its CSV export: who may use it, and that it shows exactly what
discovery (``GET /api/v1/resources``) shows for the same parameters, page by page and in the export."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry import availability, exports
from registry.models import ProviderMembership, Resource
from registry.selectors import OPERATOR_GROUP
from tests.support import factories

pytestmark = pytest.mark.django_db

ROW = re.compile(r'data-testid="explorer-row" data-ucri="([^"]+)"')


def make_user(username: str, *, provider=None, operator: bool = False, staff: bool = True):
    user = get_user_model().objects.create_user(username, is_staff=staff)
    if provider is not None:
        ProviderMembership.objects.create(user=user, provider=provider)
    if operator:
        user.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    return user


@pytest.fixture
def catalog(node):
    """Resources over hubs, kinds, accelerators, units, prices and green metrics, two with availability."""
    gz = factories.provider(code="GZ01", name="Guizhou Cloud")
    bj = factories.provider(code="BJ01", name="Zhangjiakou Compute")
    gz_site = factories.site(gz, name="Gui'an", province="52", pue=1.12, green_ratio=0.8)
    bj_site = factories.site(bj, name="Zhangjiakou", province="13", pue=1.24, green_ratio=0.3)
    sx_site = factories.site(bj, name="Taiyuan", province="14", pue=1.4, green_ratio=0.1)  # outside the hubs
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
                                     fp16_tflops=956.0, price_per_hour="4"),
        "sx_off": factories.resource(sx_site, accelerator="GPU", accelerator_model="L20 48GB",
                                     fp16_tflops=956.0, price_per_hour="4", status="suspended"),
    }
    now = timezone.now()
    availability.report(provider=gz, now=now, reports=[
        {"ucri": rows["gz_a100"].ucri, "available_units": 40, "observed_at": _rfc(now), "valid_for": 600}])
    availability.report(provider=bj, now=now, reports=[
        {"ucri": rows["bj_h100"].ucri, "available_units": 10,
         "observed_at": _rfc(now - dt.timedelta(minutes=5)), "valid_for": 60}])  # stale by now
    return rows


def _rfc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def operator(db):
    return make_user("olga", operator=True)


@pytest.fixture
def staff_gz(catalog):
    return make_user("alice", provider=catalog["gz_a100"].provider)


@pytest.fixture
def browser(client, operator):
    client.force_login(operator)
    return client


def page_ucris(response) -> list[str]:
    assert response.status_code == 200, response.content.decode()[:2000]
    return ROW.findall(response.content.decode())


def api_ucris(reader, query: str) -> list[str]:
    response = reader.get(f"/api/v1/resources?{query}")
    assert response.status_code == 200, response.content
    return [item["ucri"] for item in response.json()["results"]]


def href_of(response, testid: str) -> str | None:
    match = re.search(rf'href="([^"]*)"[^>]*data-testid="{testid}"', response.content.decode())
    return html.unescape(match.group(1)) if match else None


def csv_rows(response) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


# Who may use it ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/explorer?kind=intelligent", "/explorer/export.csv?kind=intelligent"])
def test_anonymous_people_are_sent_to_sign_in(client, catalog, path):
    response = client.get(path)
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/admin/login/"
    assert dict(parse_qsl(location.query)) == {"next": path}


@pytest.mark.parametrize("path", ["/explorer", "/explorer/export.csv"])
@pytest.mark.parametrize("staff", [True, False])
def test_a_signed_in_user_without_a_role_is_refused(client, catalog, path, staff):
    client.force_login(make_user("bob", staff=staff))
    response = client.get(path)
    assert response.status_code == 403
    assert 'data-testid="explorer-denied"' in response.content.decode()
    assert catalog["gz_a100"].ucri not in response.content.decode()


def test_operators_see_the_catalog_as_discovery_does(browser, reader, catalog):
    ucris = page_ucris(browser.get("/explorer"))
    assert ucris == api_ucris(reader, "")
    assert set(ucris) == {r.ucri for name, r in catalog.items() if name != "sx_off"}


def test_provider_staff_see_other_providers_active_resources_like_discovery(client, reader, catalog, staff_gz):
    client.force_login(staff_gz)
    ucris = page_ucris(client.get("/explorer"))
    assert ucris == api_ucris(reader, "")
    assert catalog["bj_h100"].ucri in ucris  # another provider's active resource
    assert catalog["sx_off"].ucri not in ucris  # suspended: not discovered by default
    assert page_ucris(client.get("/explorer?provider=86.52.BJ01")) == api_ucris(reader, "provider=86.52.BJ01")


def test_superusers_may_explore(client, catalog):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.cn", "pw-long-enough-123"))
    assert len(page_ucris(client.get("/explorer"))) == 6


# The same results as the API ------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "kind=general", "kind=super", "accelerator=GPU", "accelerator=NPU", "hub=gz", "hub=jjj", "province=14",
    "min_fp16_tflops=30000", "min_fp64_tflops=1000", "min_memory_gb=10000", "max_pue=1.2",
    "min_green_ratio=0.5", "price_unit=core", "max_price=7&price_unit=card", "order=price&price_unit=card",
    "order=-fp16_tflops", "order=pue", "order=-green_ratio", "order=updated_at", "order=-available_units",
    "min_available_units=20", "fresh_only=true", "status=suspended", "source=local", "source=mirror",
    "prefix=86.52.GZ01", "accelerator=GPU&hub=jjj&min_fp16_tflops=1000&max_pue=1.3",
])
def test_filters_narrow_results_exactly_like_the_api(browser, reader, catalog, query):
    assert page_ucris(browser.get(f"/explorer?{query}")) == api_ucris(reader, query)


def test_the_submitted_form_with_blank_fields_filters_like_the_api(browser, reader, catalog):
    """A GET form sends every field; the blank ones mean "no filter", not an invalid value."""
    blanks = {name: "" for name in ("kind", "accelerator", "hub", "province", "min_fp16_tflops", "min_fp64_tflops",
                                    "min_memory_gb", "min_available_units", "price_unit", "max_price", "max_pue",
                                    "min_green_ratio", "fresh_only", "include_downtime", "status", "source",
                                    "provider", "prefix", "order", "limit")}
    response = browser.get("/explorer", {**blanks, "accelerator": "GPU", "max_pue": "1.3"})
    assert page_ucris(response) == api_ucris(reader, "accelerator=GPU&max_pue=1.3")
    assert set(page_ucris(response)) == {catalog["gz_a100"].ucri, catalog["bj_h100"].ucri}


def test_the_form_shows_every_api_parameter_and_keeps_the_values(browser, catalog):
    from registry.filters import DISCOVERY_PARAMETERS

    body = browser.get("/explorer?hub=gz&max_pue=1.3&order=pue&limit=2").content.decode()
    assert 'data-testid="explorer-filters"' in body
    for name in DISCOVERY_PARAMETERS - {"cursor"}:
        assert f'name="{name}" data-testid="filter-{name}"' in body or \
            re.search(rf'name="{name}"[^>]*data-testid="filter-{name}"', body, re.S), name
    assert '<option value="gz" selected>' in body and '<option value="pue" selected>' in body
    assert '<option value="2" selected>' in body  # a limit from the address stays selected
    assert re.search(r'name="max_pue"[^>]*value="1.3"', body, re.S)


def test_downtime_leaves_resources_out_unless_asked_like_the_api(browser, reader, catalog):
    from registry import services

    resource = catalog["gz_910b"]
    services.downtime_create(provider=resource.provider, data={
        "resource": resource.ucri, "start": timezone.now() - dt.timedelta(hours=1),
        "end": timezone.now() + dt.timedelta(hours=1), "classification": "unscheduled", "reason": "fan"})
    assert resource.ucri not in page_ucris(browser.get("/explorer"))
    with_downtime = page_ucris(browser.get("/explorer?include_downtime=true"))
    assert resource.ucri in with_downtime
    assert with_downtime == api_ucris(reader, "include_downtime=true")


def test_rows_show_the_record_and_the_apis_availability(browser, reader, catalog):
    body = browser.get("/explorer?hub=jjj&accelerator=GPU").content.decode()
    h100 = catalog["bj_h100"]
    row = body[body.index(f'data-ucri="{h100.ucri}"'):]
    row = row[:row.index("</tr>")]
    assert f'href="/r/{h100.ucri}"' in row
    assert "H100 SXM 80GB" in row and "64 ×" in row and "63296" in row and "2176" in row
    assert "¥20 per card-hour" in row and "1.24" in row and "30%" in row and "Zhangjiakou Compute" in row
    assert "Beijing-Tianjin-Hebei" in row
    item = reader.get("/api/v1/resources?hub=jjj&accelerator=GPU").json()["results"][0]
    assert item["availability"]["fresh"] is False and item["availability"]["available_units"] == 10
    assert 'data-fresh="false"' in row and "10 cards free" in row
    fresh = browser.get("/explorer?hub=gz&accelerator=GPU").content.decode()
    assert 'data-fresh="true"' in fresh and "40 cards free" in fresh
    assert 'data-fresh="none"' in browser.get("/explorer?kind=general").content.decode()


def test_no_count_over_the_catalog(browser, catalog):
    with CaptureQueriesContext(connection) as queries:
        assert browser.get("/explorer?limit=2").status_code == 200
    assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


# Errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "code", "words"), [
    ("kind=quantum", "invalid_filter", "kind"),
    ("hub=xx", "invalid_filter", "hub"),
    ("min_green_ratio=1.5", "invalid_filter", "min_green_ratio"),
    ("max_pue=abc", "invalid_filter", "max_pue"),
    ("color=blue", "unknown_parameter", "color"),
    ("kind=general&kind=super", "invalid_filter", "exactly one"),
    ("max_price=5", "price_unit_required", "price_unit"),
    ("order=price", "price_unit_required", "price_unit"),
    ("cursor=not-a-cursor", "invalid_filter", "cursor"),
    ("limit=0", "invalid_filter", "limit"),
    ("limit=501", "invalid_filter", "limit"),
])
@pytest.mark.parametrize("path", ["/explorer", "/explorer/export.csv"])
def test_bad_parameters_are_a_400_page_with_the_code(browser, reader, catalog, query, code, words, path):
    response = browser.get(f"{path}?{query}")
    assert response.status_code == 400
    assert not isinstance(response, StreamingHttpResponse)
    body = response.content.decode()
    assert f'data-testid="filter-error" data-code="{code}"' in body
    assert words in body
    assert 'data-testid="explorer-row"' not in body
    api = reader.get(f"/api/v1/resources?{query}")
    assert api.status_code == 400 and api.json()["code"] == code  # the API says the same


# Pagination -------------------------------------------------------------------------------------------

def test_next_links_walk_every_page_keeping_the_filters(browser, reader, catalog):
    query = "accelerator=GPU&order=-fp16_tflops&limit=1&status=active"
    seen, url, pages = [], f"/explorer?{query}", 0
    while url:
        response = browser.get(url)
        seen += page_ucris(response)
        pages += 1
        url = href_of(response, "explorer-next")
        if url:
            kept = dict(parse_qsl(urlsplit(url).query))
            assert {k: kept[k] for k in ("accelerator", "order", "limit", "status")} == dict(parse_qsl(query))
            assert kept["cursor"]
    assert pages == 3
    assert seen == api_ucris(reader, "accelerator=GPU&order=-fp16_tflops")
    assert len(seen) == len(set(seen)) == 3


def test_api_and_csv_links_carry_the_same_parameters(browser, reader, catalog):
    response = browser.get("/explorer?hub=gz&order=-green_ratio&limit=2")
    api_link = href_of(response, "explorer-api-link")
    assert urlsplit(api_link).path == "/api/v1/resources"
    assert dict(parse_qsl(urlsplit(api_link).query)) == {"hub": "gz", "order": "-green_ratio", "limit": "2"}
    assert api_ucris(reader, urlsplit(api_link).query) == page_ucris(response)
    csv_link = href_of(response, "explorer-csv")
    assert urlsplit(csv_link).path == "/explorer/export.csv"
    assert dict(parse_qsl(urlsplit(csv_link).query)) == {"hub": "gz", "order": "-green_ratio"}  # all pages
    second = browser.get(href_of(response, "explorer-next"))
    assert dict(parse_qsl(urlsplit(href_of(second, "explorer-api-link")).query))["cursor"]
    assert href_of(second, "explorer-first") == "/explorer?hub=gz&order=-green_ratio&limit=2"


# CSV export -------------------------------------------------------------------------------------------

def test_the_csv_is_the_whole_filtered_set_streamed_in_chunks(browser, reader, catalog, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_SIZE", 2)
    query = "order=-fp16_tflops&status=active"
    with CaptureQueriesContext(connection) as queries:
        response = browser.get(f"/explorer/export.csv?{query}")
        before = len(queries.captured_queries)
        assert isinstance(response, StreamingHttpResponse)
        pieces = list(response.streaming_content)
        after = len(queries.captured_queries)
    # Nothing is read before the body is consumed; then one keyset query per chunk (availability joined).
    streamed = [q["sql"] for q in queries.captured_queries[before:after]]
    assert len(streamed) == 3 and all('FROM "registry_resource"' in sql for sql in streamed)
    assert not any('FROM "registry_resource"' in q["sql"] for q in queries.captured_queries[:before])
    assert len(pieces) == 1 + 3  # the header, then 6 resources in 3 chunks of 2
    text = b"".join(pieces).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["ucri"] for r in rows] == api_ucris(reader, query)
    assert len(rows) == 6 > exports.CHUNK_SIZE
    assert response["Content-Type"].startswith("text/csv")
    assert re.fullmatch(r'attachment; filename="cir-resources-\d{8}T\d{6}Z\.csv"', response["Content-Disposition"])
    assert list(rows[0]) == list(exports.HEADER)


def test_the_csv_matches_the_api_across_api_pages(browser, reader, catalog, monkeypatch):
    """More than one API page: the export equals the concatenation of every page discovery serves."""
    monkeypatch.setattr(exports, "CHUNK_SIZE", 3)
    walked, url = [], "/api/v1/resources?accelerator=GPU&limit=1"
    while url:
        body = reader.get(url).json()
        walked += [item["ucri"] for item in body["results"]]
        url = body["next"]
    assert len(walked) == 3
    rows = csv_rows(browser.get("/explorer/export.csv?accelerator=GPU&limit=1"))
    assert [r["ucri"] for r in rows] == walked


def test_csv_cells_hold_the_record_and_availability(browser, reader, catalog):
    rows = {r["ucri"]: r for r in csv_rows(browser.get("/explorer/export.csv"))}
    h100, a100, cpu = rows[catalog["bj_h100"].ucri], rows[catalog["gz_a100"].ucri], rows[catalog["gz_cpu"].ucri]
    assert (h100["accelerator_model"], h100["accelerator_count"], h100["fp64_tflops"]) == ("H100 SXM 80GB", "64",
                                                                                           "2176.0")
    assert (h100["price_per_hour"], h100["price_unit"], h100["pue"], h100["green_ratio"]) == ("20", "card", "1.24",
                                                                                              "0.3")
    assert (h100["hub"], h100["province"], h100["provider_prefix"]) == ("jjj", "13", "86.52.BJ01")
    assert (h100["available_units"], h100["availability_fresh"]) == ("10", "false")
    assert (a100["available_units"], a100["availability_fresh"]) == ("40", "true")
    assert (cpu["available_units"], cpu["availability_fresh"], cpu["price_per_hour"]) == ("", "", "0.15")


def test_csv_formula_injection_is_neutralised(browser, catalog):
    site = catalog["gz_a100"].site
    hostile = {
        "f-eq": '=HYPERLINK("http://evil.example","x")', "f-plus": "+1+1", "f-minus": "-2+3", "f-at": "@SUM(A1)",
        "f-tab": "\tstealth", "f-cr": "\r=1+1",
    }
    made = {local: factories.resource(site, local_id=local, name=name) for local, name in hostile.items()}
    assert all(Resource.objects.get(pk=r.pk).name == hostile[r.local_id] for r in made.values())
    rows = {r["ucri"]: r for r in csv_rows(browser.get("/explorer/export.csv?prefix=86.52.GZ01"))}
    for local, resource in made.items():
        assert rows[resource.ucri]["name"] == "'" + hostile[local]
    assert rows[catalog["gz_a100"].ucri]["name"] == "A100 training pool"  # ordinary text untouched


@pytest.mark.parametrize(("value", "expected"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("\n=1", "'\n=1"), ("＝1+1", "'＝1+1"), ("＋1", "'＋1"), ("－1", "'－1"), ("＠x", "'＠x"),
    ("a=b", "a=b"), ("", ""), (None, ""), (1.5, "1.5"), ("Gui'an", "Gui'an"),
])
def test_neutralise(value, expected):
    assert exports.neutralise(value) == expected


# Language ---------------------------------------------------------------------------------------------

def test_the_page_renders_in_chinese(browser, reader, catalog):
    response = browser.get("/explorer?hub=gz", HTTP_ACCEPT_LANGUAGE="zh-hans")
    body = response.content.decode()
    assert '<html lang="zh-hans">' in body
    assert page_ucris(response) == api_ucris(reader, "hub=gz")
    assert "贵州" in body and "京津冀" in body  # hub and province names from the reference data, in Chinese
    assert "Beijing-Tianjin-Hebei" not in body
