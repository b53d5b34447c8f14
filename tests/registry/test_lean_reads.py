"""The lean read paths (issue 9): resolve, batch resolve and discovery render exactly what the plain ORM
rendering gives, with fewer statements; instances loaded without ``Model.__init__`` behave like any other.
No timing here: bench/ measures."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models.signals import pre_init
from django.http import QueryDict
from django.utils import timezone

from core.pagination import paginate
from registry import filters, records, selectors, services
from registry.models import Availability, Downtime, Provider, Resource, Site
from tests.support import factories

pytestmark = pytest.mark.django_db


def plain_record(resource: Resource) -> dict:
    """The §3 record as the ORM renders it: full instances, downtimes looked up for every resource."""
    full = Resource.objects.select_related("provider", "site").get(pk=resource.pk)
    now = timezone.now()
    own = Downtime.objects.filter(end__gt=now, resource_id=full.pk)
    of_site = Downtime.objects.filter(end__gt=now, site_id=full.site_id)
    downtimes = sorted([*own, *of_site], key=lambda d: (d.start, str(d.id)))
    return records.resource_public(full, downtimes)


@pytest.fixture
def varied(node):
    now = timezone.now()
    gz = factories.provider(code="GZ01")
    bj = factories.provider(code="BJ01")
    gz_site = factories.site(gz, name="Gui'an", province="52", pue=1.12, green_ratio=0.8, wue=0.3, cue=None)
    bj_site = factories.site(bj, name="Zhangjiakou", province="13", pue=1.24, green_ratio=0.3)
    rows = {
        "fraction_price": factories.resource(gz_site, price_per_hour="8.75", price_per_million_tokens="0.012"),
        "whole_price": factories.resource(gz_site, price_per_hour="6", fp64_tflops=None),
        "in_downtime": factories.resource(bj_site, accelerator="NPU"),
        "site_announced": factories.resource(bj_site, kind="general", accelerator="CPU", price_unit="core"),
        "retired": factories.resource(gz_site),
        "mirrored": factories.resource(bj_site, endpoints=[]),
    }
    services.resource_retire(resource=rows["retired"])
    services.downtime_create(provider=bj, data={
        "resource": rows["in_downtime"].ucri, "start": now - dt.timedelta(hours=1),
        "end": now + dt.timedelta(hours=1), "classification": "unscheduled", "reason": "fan failure"})
    services.downtime_create(provider=bj, data={
        "site_id": str(bj_site.id), "start": now + dt.timedelta(days=1), "end": now + dt.timedelta(days=2),
        "classification": "scheduled", "reason": "announced"})
    services.downtime_create(provider=gz, data={
        "resource": rows["whole_price"].ucri, "start": now - dt.timedelta(days=2),
        "end": now - dt.timedelta(days=1), "classification": "scheduled", "reason": "over"})
    Resource.objects.filter(pk=rows["mirrored"].pk).update(source="mirror", synced_at=now)
    Provider.objects.filter(pk=bj.pk).update(credential_status="valid",
                                             credential_expires_at=now - dt.timedelta(minutes=1))
    return {name: Resource.objects.get(pk=r.pk) for name, r in rows.items()}


def test_resolve_renders_what_the_orm_renders(varied):
    for name, resource in varied.items():
        answer = selectors.resolve(resource.ucri)
        if name == "retired":
            assert answer.status == 410
            assert answer.body["record"] == plain_record(resource)
        else:
            assert answer.status == 200, name
            assert answer.body == plain_record(resource), name
    # Spot checks of what the fixture set up, so the comparison above covers them.
    assert selectors.resolve(varied["fraction_price"].ucri).body["price_per_hour"] == 8.75
    assert selectors.resolve(varied["whole_price"].ucri).body["price_per_hour"] == 6
    assert selectors.resolve(varied["mirrored"].ucri).body["synced_at"].endswith("Z")
    assert selectors.resolve(varied["in_downtime"].ucri).body["provider"]["credential_status"] == "expired"
    assert [d["reason"] for d in selectors.resolve(varied["in_downtime"].ucri).body["downtimes"]] == [
        "fan failure", "announced"]
    assert selectors.resolve(varied["whole_price"].ucri).body["downtimes"] == []


def test_batch_answers_are_the_single_answers(varied):
    texts = [r.ucri for r in varied.values()] + [varied["whole_price"].ucri.lower(), "86.52.GZ01/000000000000-0"]
    answers = selectors.resolve_many(texts)
    assert list(answers) == texts
    for text, answer in answers.items():
        single = selectors.resolve(text)
        assert (answer.status, answer.body) == (single.status, single.body), text


def test_resolve_is_one_statement_unless_a_downtime_concerns_the_resource(varied, django_assert_num_queries):
    with django_assert_num_queries(1):
        selectors.resolve(varied["whole_price"].ucri)  # its only downtime is over
    with django_assert_num_queries(2):
        selectors.resolve(varied["site_announced"].ucri)
    with django_assert_num_queries(2):
        selectors.resolve_many([r.ucri for r in varied.values()])


def test_the_resolve_lookup_is_prepared_on_postgresql(varied):
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are a PostgreSQL matter")
    ucri = varied["fraction_price"].ucri
    bodies = [selectors.resolve(ucri).body for _ in range(4)]
    assert all(body == bodies[0] for body in bodies)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert any("registry_resource" in s and "registry_downtime" in s for s in statements)


def test_loaded_instances_are_the_instances_init_builds(varied):
    resource = varied["fraction_price"]
    built = Resource(**{f.attname: getattr(resource, f.attname) for f in Resource._meta.concrete_fields})
    for field in Resource._meta.concrete_fields:
        assert getattr(resource, field.attname) == getattr(built, field.attname), field.name
    assert resource._state.adding is False
    assert resource._state.db == "default"
    assert isinstance(resource.price_per_hour, Decimal)
    assert resource.provider.prefix == "86.52.GZ01"  # foreign keys load as before
    # Fields left out stay deferred and load on access.
    lean = Resource.objects.only("ucri").get(pk=resource.pk)
    assert "name" in lean.get_deferred_fields()
    assert lean.name == resource.name
    # A saved lean instance saves (only the loaded fields, as Django does for deferred instances).
    lean.save(update_fields=["updated_at"])


def test_loading_runs_init_when_someone_listens_to_pre_init(varied):
    seen = []

    def receiver(sender, **kwargs):
        seen.append(sender)

    pre_init.connect(receiver, sender=Site)
    try:
        Site.objects.get(pk=varied["fraction_price"].site_id)
    finally:
        pre_init.disconnect(receiver, sender=Site)
    assert seen == [Site]


def test_discovery_page_renders_what_the_orm_renders(varied, django_assert_num_queries):
    now = timezone.now()
    Availability.objects.create(resource=varied["fraction_price"], available_units=12, queued_jobs=3,
                                observed_at=now, valid_for=60, expires_at=now + dt.timedelta(seconds=60),
                                authority="http://127.0.0.1:8052")
    for query in ("include_downtime=true", "order=-fp16_tflops&include_downtime=true", "order=price&price_unit=card",
                  "order=-green_ratio", "order=pue&status=retired"):
        queryset, ordering, _values = filters.discover(QueryDict(query))
        page_queryset = selectors.public_page(queryset, (k.field for k in ordering.keys))
        with django_assert_num_queries(1):
            page = paginate(page_queryset, ordering, cursor=None, limit=2)  # a cursor reads the order's fields
        flagged = {r.ucri for r in page.items if r.has_current_downtime}
        with django_assert_num_queries(1 if flagged else 0):
            rendered = selectors.records_for(page.items)
            held = [selectors.held_availability(r) for r in page.items]
        expected = [r.ucri for r in paginate(queryset, ordering, cursor=None, limit=2).items]
        assert [r.ucri for r in page.items] == expected, query
        for resource, record, report in zip(page.items, rendered, held, strict=True):
            assert record == plain_record(resource), query
            assert (report is not None) == (resource.pk == varied["fraction_price"].pk)
        if page.next_cursor:  # the next page starts where the plain queryset's does
            following = paginate(page_queryset, ordering, cursor=page.next_cursor, limit=50)
            plain = paginate(queryset, ordering, cursor=page.next_cursor, limit=50)
            assert [r.ucri for r in following.items] == [r.ucri for r in plain.items], query


def test_discovery_item_carries_the_held_availability(reader, varied):
    now = timezone.now()
    Availability.objects.create(resource=varied["fraction_price"], available_units=12, queued_jobs=None,
                                observed_at=now, valid_for=60, expires_at=now + dt.timedelta(seconds=60),
                                authority="http://127.0.0.1:8052")
    items = {i["ucri"]: i for i in reader.get("/api/v1/resources?include_downtime=true").json()["results"]}
    assert items[varied["fraction_price"].ucri]["availability"]["available_units"] == 12
    assert items[varied["fraction_price"].ucri]["availability"]["fresh"] is True
    assert items[varied["whole_price"].ucri]["availability"] is None


def test_filtersets_keep_their_own_method_filters(varied):
    first = filters.ResourceFilterSet({"prefix": "86.52.GZ01"}, queryset=Resource.objects.all())
    second = filters.ResourceFilterSet({"prefix": "86.52.BJ01"}, queryset=Resource.objects.all())
    assert first.filters["prefix"] is not second.filters["prefix"]
    assert first.filters["prefix"].parent is first and second.filters["prefix"].parent is second
    assert first.is_valid() and second.is_valid()
    gz = {r.provider.prefix for r in first.filter_queryset(Resource.objects.all())}
    bj = {r.provider.prefix for r in second.filter_queryset(Resource.objects.all())}
    assert (gz, bj) == ({"86.52.GZ01"}, {"86.52.BJ01"})
    assert filters.ResourceFilterSet.base_filters["prefix"].filter is not first.filters["prefix"].filter


def test_invalid_filters_report_every_bad_value(reader, varied):
    response = reader.get("/api/v1/resources?accelerator=TPU&min_fp16_tflops=abc&hub=gz")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_filter"
    assert set(body["errors"]) == {"accelerator", "min_fp16_tflops"}


def test_api_requests_leave_sessions_and_csrf_alone(api, client, varied):
    response = api.get(f"/api/v1/resolve/{varied['fraction_price'].ucri}", HTTP_COOKIE="sessionid=abc; csrftoken=x")
    assert response.status_code == 200
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    page = client.get("/admin/login/")
    assert page.status_code == 200
    assert "csrftoken" in page.cookies  # pages keep the full middleware
