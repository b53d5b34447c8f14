"""Live availability (CONTRACT §13): reports, reads, discovery filters and feed coalescing."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from core.models import OutboxEntry
from identity import credentials, crypto
from registry import availability
from registry.models import Availability
from registry.records import timestamp
from tests.support import auth, factories

pytestmark = pytest.mark.django_db


def _provider(code: str):
    onboarded = credentials.onboard(name=f"Avail {code}", uscc=factories.valid_uscc(), code=code, actor="t")
    api = auth.bearer_client(auth.Machine(onboarded.provider.prefix, crypto.load_private_jwk(onboarded.private_jwk)))
    return onboarded.provider, api


@pytest.fixture
def owner(node):
    provider, api = _provider("AV01")
    site = factories.site(provider)
    resources = [factories.resource(site, accelerator_count=64), factories.resource(site, accelerator_count=16),
                 factories.resource(site, price_unit="node", node_count=4, accelerator_count=32)]
    return provider, api, resources


def report(ucri: str, units: int, *, ago: int = 0, valid_for: int = 60, **extra) -> dict:
    observed = timestamp(timezone.now() - dt.timedelta(seconds=ago))
    return {"ucri": ucri, "available_units": units, "observed_at": observed, "valid_for": valid_for, **extra}


def post(api, reports):
    return api.post("/api/v1/availability", {"reports": reports}, format="json")


def test_report_read_and_etag(owner, reader):
    _, api, (big, small, nodes) = owner
    response = post(api, [report(big.ucri, 40, queued_jobs=3), report(small.ucri.lower(), 0), report(nodes.ucri, 4)])
    assert response.status_code == 202 and response.json() == {"accepted": 3}
    answer = reader.get(f"/api/v1/resources/{big.ucri}/availability")
    body = answer.json()
    assert (body["available_units"], body["queued_jobs"], body["fresh"]) == (40, 3, True)
    assert body["expires_at"] > body["observed_at"]
    assert reader.get(f"/api/v1/resources/{big.ucri}/availability", HTTP_IF_NONE_MATCH=answer["ETag"]).status_code \
        == 304


def test_availability_never_bumps_version_nor_enters_the_resolve_record(api, owner):
    _, provider_api, (big, _, _) = owner
    before = api.get(f"/api/v1/resolve/{big.ucri}")
    post(provider_api, [report(big.ucri, 10)])
    after = api.get(f"/api/v1/resolve/{big.ucri}")
    assert "availability" not in after.json()
    assert after.json()["version"] == 1 and after["ETag"] == before["ETag"]


def test_no_report_yet(owner, reader):
    _, _, (big, _, _) = owner
    response = reader.get(f"/api/v1/resources/{big.ucri}/availability")
    assert response.status_code == 404 and response.json()["code"] == "no_report"


def test_an_older_report_is_ignored(owner):
    _, api, (big, _, _) = owner
    post(api, [report(big.ucri, 30)])
    response = post(api, [report(big.ucri, 5, ago=30)])
    assert response.status_code == 202 and response.json() == {"accepted": 0}
    assert Availability.objects.get(pk=big.pk).available_units == 30


@pytest.mark.parametrize(("change", "code"), [
    ({"available_units": 65}, "invalid_report"), ({"available_units": -1}, "invalid_report"),
    ({"available_units": "5"}, "invalid_report"), ({"valid_for": 9}, "invalid_report"),
    ({"valid_for": 3601}, "invalid_report"), ({"queued_jobs": -2}, "invalid_report"),
    ({"observed_at": timestamp(timezone.now() + dt.timedelta(seconds=120))}, "invalid_report"),
    ({"observed_at": "2026-11-24T10:00:00"}, "invalid_report"), ({"ucri": "garbage"}, "ucri_malformed"),
    ({"observed_at": "0001-01-01T00:00:00+14:00"}, "invalid_report"),
    ({"observed_at": "2026-02-30T00:00:00Z"}, "invalid_report"),
    ({"observed_at": "2026-01-01T25:00:00Z"}, "invalid_report"),
    ({"observed_at": timestamp(timezone.now() - dt.timedelta(days=2))}, "invalid_report"),
    ({"queued_jobs": 2**40}, "invalid_report"), ({"available_units": 2**40}, "invalid_report"),
    ({"extra": 1}, "invalid_report")])
def test_bad_reports_store_nothing(owner, change, code):
    _, api, (big, small, _) = owner
    response = post(api, [report(small.ucri, 3), {**report(big.ucri, 10), **change}])
    assert response.status_code == 400 and response.json()["code"] == code, response.content
    assert not Availability.objects.exists()


def test_node_priced_resources_report_nodes(owner):
    _, api, (_, _, nodes) = owner
    assert post(api, [report(nodes.ucri, 5)]).status_code == 400
    assert post(api, [report(nodes.ucri, 4)]).status_code == 202


def test_another_providers_ucri_is_404_and_nothing_is_stored(owner):
    _, _, (big, _, _) = owner
    _, other_api = _provider("AV02")
    response = post(other_api, [report(big.ucri, 1)])
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert not Availability.objects.exists()


def test_batch_limits(owner):
    _, api, (big, _, _) = owner
    assert post(api, [report(big.ucri, 1)] * 1001).json()["code"] == "batch_too_large"
    assert post(api, []).status_code == 400
    assert api.post("/api/v1/availability", {"reports": [], "x": 1}, format="json").status_code == 400


def test_discovery_carries_filters_and_orders_by_availability(owner, reader):
    _, api, (big, small, nodes) = owner
    post(api, [report(big.ucri, 40), report(small.ucri, 12), report(nodes.ucri, 2, ago=120, valid_for=60)])
    items = reader.get("/api/v1/resources?order=-available_units").json()["results"]
    assert [i["ucri"] for i in items] == [big.ucri, small.ucri, nodes.ucri]
    assert items[0]["availability"]["available_units"] == 40 and items[2]["availability"]["fresh"] is False
    fresh = reader.get("/api/v1/resources?fresh_only=true").json()["results"]
    assert {i["ucri"] for i in fresh} == {big.ucri, small.ucri}
    assert [i["ucri"] for i in reader.get("/api/v1/resources?min_available_units=20").json()["results"]] == [big.ucri]
    paged, url = [], "/api/v1/resources?order=-available_units&limit=1"
    while url:
        body = reader.get(url).json()
        paged += [i["ucri"] for i in body["results"]]
        url = body["next"]
    assert paged == [big.ucri, small.ucri, nodes.ucri]
    assert reader.get("/api/v1/resources?fresh_only=maybe").json()["code"] == "invalid_filter"


def test_many_reports_become_one_feed_entry_per_resource_per_pull(owner):
    _, api, (big, small, _) = owner
    for ago in range(50, 0, -5):
        post(api, [report(big.ucri, 60 - ago // 5, ago=ago), report(small.ucri, 1, ago=ago)])
    assert availability.publish_pending() == 2
    entries = OutboxEntry.objects.filter(type="availability")
    assert entries.count() == 2
    assert entries.get(key=big.ucri).record["available_units"] == 59  # the newest
    assert availability.publish_pending() == 0
    post(api, [report(big.ucri, 7)])
    assert availability.publish_pending() == 1 and entries.count() == 3


def test_a_retired_resource_takes_no_reports(owner):
    from registry import services

    _, api, (big, _, _) = owner
    services.resource_retire(resource=big)
    assert post(api, [report(big.ucri, 1)]).status_code == 409


@pytest.mark.parametrize("value", ["1.5", "-1", "1e3", "٣", "99999999999"])
def test_min_available_units_takes_a_whole_number(reader, value):
    # 1.5 used to be truncated to 1, so resources with 1 unit free matched "at least 1.5".
    response = reader.get("/api/v1/resources", {"min_available_units": value})
    assert response.status_code == 400 and response.json()["code"] == "invalid_filter"
