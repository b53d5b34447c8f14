"""Resolution over HTTP (CONTRACT §3)."""

import datetime as dt

import pytest
from django.test import override_settings
from django.utils import timezone

from registry import identifiers, services
from tests.support import factories

pytestmark = pytest.mark.django_db


def test_resolve_returns_the_record(api, resource):
    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["ucri"] == resource.ucri
    assert body["status"] == "active"
    assert body["version"] == 1
    assert body["updated_at"].endswith("Z")
    assert body["price_per_hour"] == 8.5
    assert body["accelerator_count"] == 64
    assert body["endpoints"] == [{"type": "slurm", "url": "https://slurm.example.cn/slurmrestd"}]
    assert body["provider"] == {"name": "Guizhou Cloud Compute Co", "prefix": "86.52.GZ01", "credential_status": None}
    assert body["site"]["id"] == str(resource.site_id)
    assert body["site"]["hub"] == "gz"
    assert body["site"]["pue"] == 1.18
    assert body["downtimes"] == []
    assert body["source"] == "local"
    assert body["authority"] == "http://127.0.0.1:8052"
    assert "synced_at" not in body
    for field in services.RESOURCE_INPUT_FIELDS:
        assert field in body


def test_every_forgiving_spelling_resolves_to_the_canonical_record(api, resource):
    prefix, _, rest = resource.ucri.partition("/")
    body, check = rest.split("-")
    spellings = [
        resource.ucri.lower(),
        f"{prefix}/{body[:4]}-{body[4:8]}-{body[8:]}-{check}".lower(),
        f"{prefix}/{body}{check}",
        f"{prefix}/{body.replace('0', 'O').replace('1', 'L')}-{check}",
        f"{prefix}%2F{body}-{check}",
    ]
    for spelling in spellings:
        response = api.get(f"/api/v1/resolve/{spelling}")
        assert response.status_code == 200, spelling
        assert response.json()["ucri"] == resource.ucri


def test_one_character_typo_is_400_ucri_checksum(api, resource):
    position = len(resource.ucri) - 3
    replacement = "Z" if resource.ucri[position] != "Z" else "Y"
    typo = resource.ucri[:position] + replacement + resource.ucri[position + 1:]
    response = api.get(f"/api/v1/resolve/{typo}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "ucri_checksum"
    assert problem["status"] == 400
    assert {"type", "title", "detail"} <= set(problem)


@pytest.mark.parametrize("garbage", ["hello", "86.11.A7K2", "86.11.A7K2/%%%", "86.11.A7K2/7ZK3M9Q2AB4C-L/"])
def test_garbage_is_400_ucri_malformed(api, node, garbage):
    response = api.get(f"/api/v1/resolve/{garbage}")
    assert response.status_code == 400
    assert response.json()["code"] == "ucri_malformed"


def test_unknown_valid_ucri_is_404_ucri_unknown(api, node):
    for ucri in ("86.52.GZ01/000000000001-N", "86.11.A7K2/7ZK3M9Q2AB4C-L"):
        response = api.get(f"/api/v1/resolve/{ucri}")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["code"] == "ucri_unknown"


def test_retired_is_410_with_tombstone_and_etag(api, resource):
    services.resource_retire(resource=resource)
    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response.status_code == 410
    problem = response.json()
    assert problem["code"] == "ucri_retired"
    assert problem["record"]["ucri"] == resource.ucri
    assert problem["record"]["status"] == "retired"
    assert problem["record"]["version"] == 2
    assert response["ETag"]
    again = api.get(f"/api/v1/resolve/{resource.ucri}", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_etag_is_strong_and_if_none_match_gives_304(api, resource):
    first = api.get(f"/api/v1/resolve/{resource.ucri}")
    etag = first["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    cached = api.get(f"/api/v1/resolve/{resource.ucri}", HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached["ETag"] == etag
    assert api.get(f"/api/v1/resolve/{resource.ucri}", HTTP_IF_NONE_MATCH='"other"').status_code == 200


def test_etag_is_a_hash_of_exactly_the_body(api, resource):
    from core.http import strong_etag

    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response["ETag"] == strong_etag(response.content)


def test_etag_changes_when_the_site_pue_changes(api, resource):
    before = api.get(f"/api/v1/resolve/{resource.ucri}")
    services.site_update(site=resource.site, data={"pue": 1.31})
    after = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert after.json()["site"]["pue"] == 1.31
    assert after["ETag"] != before["ETag"]
    assert api.get(f"/api/v1/resolve/{resource.ucri}", HTTP_IF_NONE_MATCH=before["ETag"]).status_code == 200


def test_etag_changes_with_downtimes_and_resource_edits(api, resource):
    etags = {api.get(f"/api/v1/resolve/{resource.ucri}")["ETag"]}
    now = timezone.now()
    services.downtime_create(provider=resource.provider, data={
        "site_id": str(resource.site_id), "start": now + dt.timedelta(days=1), "end": now + dt.timedelta(days=2),
        "classification": "scheduled", "reason": "cooling maintenance"})
    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response.json()["downtimes"][0]["reason"] == "cooling maintenance"
    etags.add(response["ETag"])
    services.resource_update(resource=resource, data={"price_per_hour": "9.0"})
    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response.json()["version"] == 2
    etags.add(response["ETag"])
    assert len(etags) == 3


def test_downtimes_listed_are_ongoing_and_announced_not_past(api, resource):
    now = timezone.now()
    for start, end, reason in [(-3, -2, "past"), (-1, 1, "ongoing"), (2, 3, "announced")]:
        services.downtime_create(provider=resource.provider, data={
            "resource": resource.ucri, "start": now + dt.timedelta(hours=start),
            "end": now + dt.timedelta(hours=end), "classification": "unscheduled", "reason": reason})
    reasons = [d["reason"] for d in api.get(f"/api/v1/resolve/{resource.ucri}").json()["downtimes"]]
    assert reasons == ["ongoing", "announced"]


def test_batch_resolve_answers_each_input_like_the_single_resolve(api, resource, site):
    retired = factories.resource(site)
    services.resource_retire(resource=retired)
    unknown = identifiers.compose("86.52.GZ01", "000000000001")
    inputs = [resource.ucri.lower(), retired.ucri, unknown, "garbage", resource.ucri[:-1] + "0"]
    response = api.post("/api/v1/resolve", {"ucris": inputs}, format="json")
    assert response.status_code == 200
    results = response.json()["results"]
    assert set(results) == set(inputs)
    for text in inputs:
        single = api.get(f"/api/v1/resolve/{text}")
        assert results[text] == single.json(), text
    assert results[retired.ucri]["status"] == 410
    assert results[retired.ucri]["record"]["status"] == "retired"


@pytest.mark.parametrize("body", [{}, {"ucris": "x"}, {"ucris": [1]}, {"ucris": [], "extra": 1}, ["x"]])
def test_batch_resolve_rejects_bad_bodies(api, node, body):
    response = api.post("/api/v1/resolve", body, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_batch_resolve_caps_at_1000(api, node):
    response = api.post("/api/v1/resolve", {"ucris": ["x"] * 1001}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"


def test_batch_resolve_malformed_json_is_400(api, node):
    response = api.generic("POST", "/api/v1/resolve", b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_body"


@override_settings(CIR_RESOLVE_RATE="3/min")
def test_resolve_is_rate_limited_with_retry_after(api, resource):
    statuses = [api.get(f"/api/v1/resolve/{resource.ucri}").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1


@override_settings(CIR_RESOLVE_RATE="1/min", CIR_RATE_LIMITS=False)
def test_rate_limits_can_be_switched_off(api, resource):
    assert all(api.get(f"/api/v1/resolve/{resource.ucri}").status_code == 200 for _ in range(3))


def test_no_compression_on_api_routes(api, resource):
    response = api.get(f"/api/v1/resolve/{resource.ucri}", HTTP_ACCEPT_ENCODING="gzip, br")
    assert "Content-Encoding" not in response


def test_human_page_shows_the_record(client, resource):
    response = client.get(f"/r/{resource.ucri.lower()}")
    assert response.status_code == 200
    assert resource.ucri in response.content.decode()
    assert client.get("/r/86.52.GZ01/000000000001-N").status_code == 404


def test_provider_record(api, provider):
    response = api.get(f"/api/v1/providers/{provider.prefix.lower()}")
    assert response.status_code == 200
    body = response.json()
    assert body["prefix"] == "86.52.GZ01"
    assert body["uscc"] == provider.uscc
    assert body["credential_status"] is None
    assert body["authority"] == "http://127.0.0.1:8052"
    assert api.get("/api/v1/providers/86.52.NOPE").json()["code"] == "not_found"
    assert api.get("/api/v1/providers/garbage").status_code == 400


def test_unknown_api_route_is_a_problem(api, node):
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_openapi_schema_and_offline_docs(api, node):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/resolve/{ucri}" in paths and "/api/v1/resources" in paths
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/" in html
