"""The provider write API (CONTRACT §9) and cross-provider isolation over every route."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from core.models import OutboxEntry
from identity import credentials, crypto
from registry import identifiers
from registry.models import Downtime, Resource, Site
from tests.support import auth, factories

pytestmark = pytest.mark.django_db


def _provider_client(code: str):
    onboarded = credentials.onboard(name=f"Provider {code}", uscc=factories.valid_uscc(), code=code, actor="test")
    machine = auth.Machine(onboarded.provider.prefix, crypto.load_private_jwk(onboarded.private_jwk))
    return onboarded.provider, auth.bearer_client(machine)


@pytest.fixture
def prov_a(node):
    return _provider_client("AAA")


@pytest.fixture
def prov_b(node):
    return _provider_client("BBB")


SITE = {"name": "Gui'an DC 1", "province": "52", "pue": 1.15, "wue": 0.3, "cue": 0.5, "green_ratio": 0.6,
        "rack_availability": 0.55}


def _resource_body(site_id: str, **overrides) -> dict:
    body = {"local_id": "ga-a100-01", "name": "A100 training pool", "kind": "intelligent", "site_id": site_id,
            "accelerator": "GPU", "accelerator_model": "A100 SXM 80GB", "accelerator_count": 64, "node_count": 8,
            "fp64_tflops": 620.8, "fp16_tflops": 19968, "memory_gb": 5120, "price_per_hour": 8.5,
            "price_unit": "card", "endpoints": [{"type": "slurm", "url": "https://slurm.ga.example/slurmrestd"}]}
    body.update(overrides)
    return body


@pytest.fixture
def a_objects(prov_a):
    _, api = prov_a
    site = api.post("/api/v1/sites", SITE, format="json").json()
    resource = api.post("/api/v1/resources", _resource_body(site["id"]), format="json").json()
    now = timezone.now()
    downtime = api.post("/api/v1/downtimes", {"resource": resource["ucri"], "start": (now + dt.timedelta(days=1))
                        .isoformat(), "end": (now + dt.timedelta(days=2)).isoformat(),
                        "classification": "scheduled", "reason": "maintenance"}, format="json").json()
    return {"site": site, "resource": resource, "downtime": downtime}


def test_create_site_and_resource(prov_a):
    provider, api = prov_a
    response = api.post("/api/v1/sites", SITE, format="json")
    assert response.status_code == 201, response.content
    site = response.json()
    assert site["version"] == 1 and site["hub"] == "gz" and site["provider"] == provider.prefix
    response = api.post("/api/v1/resources", _resource_body(site["id"]), format="json")
    assert response.status_code == 201, response.content
    record = response.json()
    assert identifiers.is_valid(record["ucri"])
    assert identifiers.prefix_of(record["ucri"]) == provider.prefix
    assert record["version"] == 1 and record["price_per_hour"] == 8.5
    assert record["provider"]["credential_status"] == "valid"
    assert response["Location"] == f"/api/v1/resources/{record['ucri']}"
    assert response["ETag"]


def test_get_with_etag_and_patch_with_if_match(prov_a, a_objects):
    _, api = prov_a
    ucri = a_objects["resource"]["ucri"]
    first = api.get(f"/api/v1/resources/{ucri}")
    assert first.status_code == 200
    assert api.get(f"/api/v1/resources/{ucri}", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    stale = first["ETag"]
    patched = api.patch(f"/api/v1/resources/{ucri}", {"price_per_hour": 7.9}, format="json", HTTP_IF_MATCH=stale)
    assert patched.status_code == 200, patched.content
    assert patched.json()["version"] == 2 and patched.json()["price_per_hour"] == 7.9
    conflict = api.patch(f"/api/v1/resources/{ucri}", {"price_per_hour": 7.0}, format="json", HTTP_IF_MATCH=stale)
    assert conflict.status_code == 412
    assert conflict.json()["code"] == "precondition_failed"
    assert float(Resource.objects.get(ucri=ucri).price_per_hour) == pytest.approx(7.9)
    # Without If-Match the update applies; an unchanged PATCH does not bump the version.
    assert api.patch(f"/api/v1/resources/{ucri}", {"price_per_hour": 7.9}, format="json").json()["version"] == 2


def test_site_patch_rules(prov_a, a_objects):
    _, api = prov_a
    url = f"/api/v1/sites/{a_objects['site']['id']}"
    etag = api.get(url)["ETag"]
    response = api.patch(url, {"pue": 1.3}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 200 and response.json()["version"] == 2
    assert api.patch(url, {"pue": 1.4}, format="json", HTTP_IF_MATCH=etag).status_code == 412
    bad = api.patch(url, {"hub": "jjj"}, format="json")
    assert bad.status_code == 400 and "hub" in bad.json()["errors"]
    assert api.patch(url, {"pue": 0.9}, format="json").status_code == 400


def test_retire_is_idempotent_and_final(prov_a, a_objects):
    _, api = prov_a
    ucri = a_objects["resource"]["ucri"]
    first = api.post(f"/api/v1/resources/{ucri}/retire")
    assert first.status_code == 200 and first.json()["status"] == "retired"
    again = api.post(f"/api/v1/resources/{ucri}/retire")
    assert again.status_code == 200 and again.json()["version"] == first.json()["version"]
    response = api.patch(f"/api/v1/resources/{ucri}", {"name": "revived"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "resource_retired"
    assert api.patch(f"/api/v1/resources/{ucri}", {"status": "active"}, format="json").status_code == 409


def test_local_id_conflict_is_409(prov_a, a_objects):
    _, api = prov_a
    response = api.post("/api/v1/resources", _resource_body(a_objects["site"]["id"]), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "local_id_conflict"


def test_same_local_id_is_fine_for_another_provider(prov_b, a_objects):
    _, api = prov_b
    site = api.post("/api/v1/sites", SITE, format="json").json()
    assert api.post("/api/v1/resources", _resource_body(site["id"]), format="json").status_code == 201


def test_idempotency_key_replays_and_detects_reuse(prov_a):
    _, api = prov_a
    site = api.post("/api/v1/sites", SITE, format="json").json()
    body = _resource_body(site["id"])
    first = api.post("/api/v1/resources", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    entries = OutboxEntry.objects.count()
    retry = api.post("/api/v1/resources", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert Resource.objects.count() == 1 and OutboxEntry.objects.count() == entries
    other = api.post("/api/v1/resources", _resource_body(site["id"], local_id="other"), format="json",
                     HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"


def test_idempotency_keys_are_scoped_to_the_client(prov_a, prov_b):
    _, api_a = prov_a
    _, api_b = prov_b
    assert api_a.post("/api/v1/sites", SITE, format="json", HTTP_IDEMPOTENCY_KEY="same").status_code == 201
    assert api_b.post("/api/v1/sites", SITE, format="json", HTTP_IDEMPOTENCY_KEY="same").status_code == 201
    assert Site.objects.count() == 2


def test_a_failed_create_does_not_consume_the_key(prov_a):
    _, api = prov_a
    bad = dict(SITE, pue=0.5)
    assert api.post("/api/v1/sites", bad, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 400
    assert api.post("/api/v1/sites", SITE, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 201


@pytest.mark.parametrize(
    "change",
    [{"kind": "quantum"}, {"accelerator_count": 0}, {"accelerator_count": "lots"}, {"price_per_hour": -1},
     {"price_unit": "node", "node_count": None}, {"endpoints": [{"type": "slurm", "url": "http://insecure"}]},
     {"endpoints": [{"type": "ftp", "url": "https://x.example"}]}, {"endpoints": "slurm"},
     {"fp16_tflops": "nan"}, {"fp16_tflops": "inf"}, {"site_id": "not-a-uuid"},
     {"site_id": "00000000-0000-0000-0000-000000000000"}, {"status": "retired"}, {"ucri": "86.52.X/000000000001-N"},
     {"unexpected": 1}, {"local_id": ""}, {"name": "x" * 201}],
)
def test_bad_resource_bodies_are_400_and_write_nothing(prov_a, change):
    _, api = prov_a
    site = api.post("/api/v1/sites", SITE, format="json").json()
    before = (Resource.objects.count(), OutboxEntry.objects.count())
    body = _resource_body(site["id"])
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None or k != "node_count"}
    response = api.post("/api/v1/resources", body, format="json")
    assert response.status_code == 400, (change, response.content)
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_request"
    assert (Resource.objects.count(), OutboxEntry.objects.count()) == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b"null", b'{"name": NaN}'])
def test_non_object_bodies_are_400(prov_a, raw):
    _, api = prov_a
    response = api.generic("POST", "/api/v1/sites", raw, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_downtime_create_and_delete(prov_a, a_objects):
    _, api = prov_a
    downtime_id = a_objects["downtime"]["id"]
    assert a_objects["downtime"]["version"] == 1
    ucri = a_objects["resource"]["ucri"]
    assert api.get(f"/api/v1/resolve/{ucri}").json()["downtimes"][0]["id"] == downtime_id
    assert api.delete(f"/api/v1/downtimes/{downtime_id}").status_code == 204
    assert not Downtime.objects.filter(pk=downtime_id).exists()
    assert OutboxEntry.objects.filter(type="downtime", key=downtime_id, op="retire").exists()
    assert api.delete(f"/api/v1/downtimes/{downtime_id}").status_code == 404


def test_downtime_needs_exactly_one_target_and_a_valid_window(prov_a, a_objects):
    _, api = prov_a
    now = timezone.now()
    base = {"start": now.isoformat(), "end": (now + dt.timedelta(hours=1)).isoformat(), "classification": "unscheduled"}
    both = dict(base, resource=a_objects["resource"]["ucri"], site_id=a_objects["site"]["id"])
    assert api.post("/api/v1/downtimes", both, format="json").status_code == 400
    assert api.post("/api/v1/downtimes", base, format="json").status_code == 400
    backwards = dict(base, site_id=a_objects["site"]["id"], end=(now - dt.timedelta(hours=1)).isoformat())
    assert api.post("/api/v1/downtimes", backwards, format="json").status_code == 400


def test_a_scheduler_without_a_provider_sees_no_provider_objects(node, a_objects):
    reader = auth.bearer_client(auth.register("sched", "resources:read"))
    assert reader.get(f"/api/v1/resources/{a_objects['resource']['ucri']}").status_code == 403
    assert reader.post("/api/v1/sites", SITE, format="json").status_code == 403


def test_reads_need_read_scope_and_writes_need_write_scope(node, prov_a, a_objects):
    provider, _ = prov_a
    ack_only = auth.bearer_client(auth.register("acker", "handoff:ack", provider=provider))
    ucri = a_objects["resource"]["ucri"]
    assert ack_only.get(f"/api/v1/resources/{ucri}").json()["code"] == "insufficient_scope"
    read_only = auth.bearer_client(auth.register("reader-bound", "resources:read", provider=provider))
    assert read_only.get(f"/api/v1/resources/{ucri}").status_code == 200
    response = read_only.patch(f"/api/v1/resources/{ucri}", {"name": "x"}, format="json")
    assert response.status_code == 403 and response.json()["code"] == "insufficient_scope"


def test_bound_automation_client_writes_for_its_provider(node, prov_a, a_objects):
    provider, _ = prov_a
    automation = auth.bearer_client(auth.register("a-automation", "resources:read resources:write", provider=provider))
    response = automation.patch(f"/api/v1/resources/{a_objects['resource']['ucri']}", {"name": "renamed"},
                                format="json")
    assert response.status_code == 200 and response.json()["name"] == "renamed"


def _isolation_routes(objects: dict) -> list[tuple[str, str, dict | None]]:
    ucri, site_id, downtime_id = objects["resource"]["ucri"], objects["site"]["id"], objects["downtime"]["id"]
    return [
        ("get", f"/api/v1/resources/{ucri}", None),
        ("get", f"/api/v1/resources/{ucri.lower()}", None),
        ("patch", f"/api/v1/resources/{ucri}", {"name": "hijacked"}),
        ("post", f"/api/v1/resources/{ucri}/retire", None),
        ("get", f"/api/v1/sites/{site_id}", None),
        ("patch", f"/api/v1/sites/{site_id}", {"pue": 1.9}),
        ("get", f"/api/v1/downtimes/{downtime_id}", None),
        ("delete", f"/api/v1/downtimes/{downtime_id}", None),
    ]


@pytest.mark.parametrize("route", range(8))
def test_provider_b_cannot_touch_provider_a_objects(prov_a, prov_b, a_objects, route):
    _, api_b = prov_b
    method, url, body = _isolation_routes(a_objects)[route]
    snapshot = (list(Resource.objects.values_list("name", "status", "version")),
                list(Site.objects.values_list("pue", "version")), Downtime.objects.count(), OutboxEntry.objects.count())
    response = getattr(api_b, method)(url, body, format="json") if body else getattr(api_b, method)(url)
    assert response.status_code == 404, (method, url, response.content)
    assert response.json()["code"] == "not_found"
    after = (list(Resource.objects.values_list("name", "status", "version")),
             list(Site.objects.values_list("pue", "version")), Downtime.objects.count(), OutboxEntry.objects.count())
    assert after == snapshot


def test_provider_b_cannot_use_a_site_or_resource_of_a_in_creates(prov_a, prov_b, a_objects):
    _, api_b = prov_b
    now = timezone.now()
    response = api_b.post("/api/v1/resources", _resource_body(a_objects["site"]["id"], local_id="b1"), format="json")
    assert response.status_code == 400 and "site_id" in response.json()["errors"]
    window = {"start": now.isoformat(), "end": (now + dt.timedelta(hours=1)).isoformat(),
              "classification": "unscheduled"}
    response = api_b.post("/api/v1/downtimes", dict(window, resource=a_objects["resource"]["ucri"]), format="json")
    assert response.status_code == 400 and "resource" in response.json()["errors"]
    response = api_b.post("/api/v1/downtimes", dict(window, site_id=a_objects["site"]["id"]), format="json")
    assert response.status_code == 400 and "site_id" in response.json()["errors"]
    assert Resource.objects.filter(provider__prefix__endswith="BBB").count() == 0


def test_isolation_errors_match_a_missing_object_exactly(prov_a, prov_b, a_objects):
    _, api_b = prov_b
    foreign = api_b.get(f"/api/v1/resources/{a_objects['resource']['ucri']}")
    missing = api_b.get(f"/api/v1/resources/{identifiers.compose('86.52.AAA', '000000000000')}")
    assert foreign.status_code == missing.status_code == 404
    assert {k: v for k, v in foreign.json().items() if k != "detail"} == \
        {k: v for k, v in missing.json().items() if k != "detail"}
    assert foreign.json()["detail"] == missing.json()["detail"]


def test_an_operator_suspension_sticks_until_an_operator_lifts_it(prov_a, a_objects):
    from registry import services

    _, api = prov_a
    ucri = a_objects["resource"]["ucri"]
    services.operator_suspend_resource(resource=Resource.objects.get(ucri=ucri), actor="user:olga", reason="abuse")
    response = api.patch(f"/api/v1/resources/{ucri}", {"status": "active"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "suspended_by_operator"
    assert api.patch(f"/api/v1/resources/{ucri}", {"name": "still editable"}, format="json").status_code == 200
    services.operator_release_resource(resource=Resource.objects.get(ucri=ucri), actor="user:olga")
    assert api.patch(f"/api/v1/resources/{ucri}", {"status": "active"}, format="json").json()["status"] == "active"


@pytest.mark.parametrize(
    "change",
    [{"pue": "1.2"}, {"pue": True}, {"province": 52}, {"green_ratio": None}],
)
def test_site_fields_take_json_types_only(prov_a, change):
    _, api = prov_a
    response = api.post("/api/v1/sites", {**SITE, **change}, format="json")
    assert response.status_code == 400, change


@pytest.mark.parametrize(
    "change",
    [{"accelerator_count": "16"}, {"accelerator_count": 16.0}, {"accelerator_count": True},
     {"price_per_hour": "12.5"}, {"fp16_tflops": "5"}, {"fp16_tflops": True}, {"kind": 1},
     {"endpoints": [{"type": "slurm", "url": "https://x.example/s"}] * 33}],
)
def test_resource_fields_take_json_types_only(prov_a, a_objects, change):
    _, api = prov_a
    body = _resource_body(a_objects["site"]["id"], local_id="typed")
    body.update(change)
    assert api.post("/api/v1/resources", body, format="json").status_code == 400, change


def test_endpoints_are_required_on_create(prov_a, a_objects):
    _, api = prov_a
    body = _resource_body(a_objects["site"]["id"], local_id="no-endpoints")
    del body["endpoints"]
    assert api.post("/api/v1/resources", body, format="json").status_code == 400


@pytest.mark.parametrize("start", ["2026-11-24T10:00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                                   "tomorrow", 1764000000])
def test_downtime_times_are_rfc3339_with_an_offset(prov_a, a_objects, start):
    _, api = prov_a
    body = {"site_id": a_objects["site"]["id"], "start": start, "end": "2099-01-01T00:00:00Z",
            "classification": "scheduled"}
    assert api.post("/api/v1/downtimes", body, format="json").status_code == 400


def test_exact_decimal_prices(prov_a, a_objects):
    _, api = prov_a
    response = api.patch(f"/api/v1/resources/{a_objects['resource']['ucri']}", {"price_per_hour": 0.1234},
                         format="json")
    assert response.json()["price_per_hour"] == 0.1234


def test_idempotency_compares_json_not_bytes(prov_a):
    _, api = prov_a
    body = '{"name": "Key order", "province": "52", "pue": 1.2, "green_ratio": 0.5, "rack_availability": 0.5}'
    reordered = '{"province":"52","name":"Key order","rack_availability":0.5,"green_ratio":0.5,"pue":1.2}'
    first = api.generic("POST", "/api/v1/sites", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="ko")
    again = api.generic("POST", "/api/v1/sites", reordered, content_type="application/json",
                        HTTP_IDEMPOTENCY_KEY="ko")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and Site.objects.count() == 1
