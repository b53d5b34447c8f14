"""Three real nodes (national, provincial 86.52, industry 86.52.IND1): separate PostgreSQL databases,
gunicorn on 127.0.0.1 ports, a Celery worker each on Redis. Catalog changes flow up through the relay."""

from __future__ import annotations

import json

import pytest
import requests

from identity import crypto
from tests.support.auth import Machine
from tests.support.factories import valid_uscc
from tests.support.nodes import create_node, eventually, join, resolve

pytestmark = pytest.mark.federation

CREATE_RESOURCE = """
import json
from registry import services
from registry.models import Provider
provider = Provider.objects.get(prefix="{prefix}")
site = services.site_create(provider=provider, data=dict(name="Gui'an Industrial DC", province="52", pue=1.18,
                            green_ratio=0.62, rack_availability=0.4))
resource = services.resource_create(provider=provider, data=dict(local_id="ind-a100-01", name="A100 pool",
    kind="intelligent", site_id=str(site.id), accelerator="GPU", accelerator_model="A100 SXM 80GB",
    accelerator_count=64, node_count=8, fp16_tflops=19968.0, price_per_hour="8.5", price_unit="card",
    endpoints=[dict(type="slurm", url="https://slurm.ind1.example/slurmrestd")]))
print(json.dumps({{"ucri": resource.ucri, "site": str(site.id)}}))
"""


@pytest.fixture(scope="module")
def federation():
    national = create_node("national", role="national", redis_db=11)
    provincial = create_node("gz", role="provincial", code="52", redis_db=12)
    industry = create_node("ind1", role="industry", code="52.IND1", redis_db=13)
    nodes = [national, provincial, industry]
    try:
        for node in nodes:
            node.start_server()
        join(provincial, national, anchor=national, prefix="86.52")
        join(industry, provincial, anchor=national, prefix="86.52.IND1")
        for node in nodes:
            node.start_worker()
        yield national, provincial, industry
    finally:
        for node in nodes:
            node.drop()


def _sync_up(industry, provincial) -> None:
    # The industry node announces its new changes (beat does this every few seconds in production);
    # the provincial worker pulls on notify and, having applied changes, notifies the national node.
    industry.manage("cir_sync", "--once", "--json")


def test_entity_configuration_and_chain_endpoints(federation):
    national, provincial, industry = federation
    assert national.get("/federation/list").json() == [provincial.url]
    assert provincial.get("/federation/list").json() == [industry.url]
    statement = provincial.get("/federation/fetch", params={"sub": industry.url})
    assert statement.headers["Content-Type"] == "application/entity-statement+jwt"
    missing = provincial.get("/federation/fetch", params={"sub": "http://127.0.0.1:1"})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert national.get("/federation/changes").json()["error"] == "invalid_token"


def test_a_resource_registered_at_the_industry_node_resolves_at_the_national_node(federation):
    national, provincial, industry = federation
    onboarded = industry.manage("cir_provider_add", "--name", "Gui'an Industrial Compute", "--uscc",
                                valid_uscc(5201), "--code", "GAI", "--json")
    prefix = onboarded["prefix"]
    assert prefix == "86.52.IND1.GAI"
    created = json.loads(industry.shell(CREATE_RESOURCE.format(prefix=prefix)).strip().splitlines()[-1])
    ucri = created["ucri"]
    # Before sync, the national node refers the UCRI down the tree.
    referral = resolve(national, ucri)
    assert referral.status_code == 404 and referral.json()["code"] == "ucri_referral"
    assert referral.json()["next_node"] == provincial.url

    _sync_up(industry, provincial)
    eventually(lambda: resolve(national, ucri).status_code == 200, what="the resource to reach the national node",
               nodes=[national, provincial, industry])
    record = resolve(national, ucri).json()
    assert record["source"] == "mirror" and record["synced_at"]
    assert record["authority"] == industry.url
    assert record["provider"]["credential_status"] == "valid"
    assert record["site"]["pue"] == 1.18
    assert resolve(provincial, ucri).json()["source"] == "mirror"

    # A site's PUE change reaches the national record (and its ETag).
    etag = resolve(national, ucri).headers["ETag"]
    industry.shell(f"""
from registry import services
from registry.models import Site
services.site_update(site=Site.objects.get(pk="{created['site']}"), data=dict(pue=1.11))
""")
    _sync_up(industry, provincial)
    eventually(lambda: resolve(national, ucri).json()["site"]["pue"] == 1.11, what="the PUE change to arrive",
               nodes=[national, provincial, industry])
    assert resolve(national, ucri).headers["ETag"] != etag

    # A higher version wins; a retirement arrives as a tombstone and is final.
    industry.shell(f"""
from registry import services
from registry.models import Resource
r = Resource.objects.get(ucri="{ucri}")
services.resource_update(resource=r, data=dict(price_per_hour="7.5"))
services.resource_retire(resource=Resource.objects.get(ucri="{ucri}"))
""")
    _sync_up(industry, provincial)
    eventually(lambda: resolve(national, ucri).status_code == 410, what="the tombstone to arrive",
               nodes=[national, provincial, industry])
    tombstone = resolve(national, ucri).json()["record"]
    assert tombstone["status"] == "retired" and tombstone["version"] == 3 and tombstone["price_per_hour"] == 7.5

    # Replaying every page from the start changes nothing: the retired UCRI is never revived.
    before = national.shell("from core.models import OutboxEntry; print(OutboxEntry.objects.count())").strip()
    national.shell("from federation.models import Peer; Peer.objects.update(cursor=0)")
    report = national.manage("cir_sync", "--once", "--json")
    assert report["peers"][0]["applied"] == 0 and report["peers"][0]["stale"] > 0
    assert report["peers"][0]["violations"] == 0
    assert resolve(national, ucri).status_code == 410
    assert national.shell("from core.models import OutboxEntry; print(OutboxEntry.objects.count())").strip() == before


def test_the_national_node_serves_discovery_over_mirrors(federation):
    national, _, industry = federation
    industry.manage("cir_provider_add", "--name", "Discovery Co", "--uscc", valid_uscc(5202), "--code", "DSC",
                    "--json")
    industry.shell(CREATE_RESOURCE.format(prefix="86.52.IND1.DSC"))
    _sync_up(industry, None)
    client = national.manage("shell", "-v0", "-c", """
from identity import crypto, oauth
import json
key = crypto.generate_private_key()
oauth.register_client(client_id="sched", jwks=[crypto.public_jwk(key)], scopes=["resources:read"], provider=None,
                      actor="test")
print(json.dumps(crypto.private_jwk(key)))
""")
    private_jwk = json.loads(client.strip().splitlines()[-1])
    machine = Machine("sched", crypto.load_private_jwk(private_jwk))
    token = requests.post(f"{national.url}/oauth/token", data={
        "grant_type": "client_credentials", "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:"
        "jwt-bearer", "client_assertion": machine.assertion(f"{national.url}/oauth/token")}, timeout=10).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    def found() -> bool:
        body = national.get("/api/v1/resources?prefix=86.52.IND1.DSC&source=mirror", headers=headers).json()
        return len(body.get("results", [])) == 1

    eventually(found, what="the mirrored resource to be discoverable", nodes=[national])


def test_a_provider_known_through_the_feed_authenticates_at_the_national_node(federation):
    national, provincial, industry = federation
    onboarded = industry.manage("cir_provider_add", "--name", "Travelling Provider", "--uscc", valid_uscc(5203),
                                "--code", "TRV", "--json")
    _sync_up(industry, provincial)

    def mirrored() -> bool:
        return national.get(f"/api/v1/providers/{onboarded['prefix']}").json().get("credential_status") == "valid"

    eventually(mirrored, what="the provider and its credential to reach the national node",
               nodes=[national, provincial, industry])
    machine = Machine(onboarded["prefix"], crypto.load_private_jwk(onboarded["private_jwk"]))
    answer = requests.post(f"{national.url}/oauth/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": machine.assertion(f"{national.url}/oauth/token")}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["scope"].split()) == {"resources:read", "handoff:ack"}  # no writes away from home
    # Suspension at the home node reaches the national node by the feed; the provider is then refused.
    industry.manage("cir_provider_status", "--prefix", onboarded["prefix"], "--set", "suspended", "--reason",
                    "inspection", "--json")
    _sync_up(industry, provincial)
    eventually(lambda: national.get(f"/api/v1/providers/{onboarded['prefix']}").json()["credential_status"]
               == "suspended", what="the suspension to arrive", nodes=[national, provincial, industry])
    refused = requests.post(f"{national.url}/oauth/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": machine.assertion(f"{national.url}/oauth/token")}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_resolve_endpoint_and_kept_checkpoints(federation):
    national, _, industry = federation
    answer = national.get("/federation/resolve", params={"sub": industry.url, "trust_anchor": national.url})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/resolve-response+jwt"
    claims = json.loads(crypto.b64url_decode(answer.text.split(".")[1]))
    assert claims["metadata"]["compute_registry"]["ucri_prefixes"] == ["86.52.IND1"]
    assert len(claims["trust_chain"]) == 4
    bad = national.get("/federation/resolve", params={"sub": industry.url, "trust_anchor": "http://127.0.0.1:1"})
    assert bad.status_code == 404 and bad.json()["error"] == "invalid_trust_anchor"
    kept = national.shell("from federation.models import PeerCheckpoint; print(PeerCheckpoint.objects.count())")
    assert int(kept.strip()) >= 1


def test_a_revocation_reaches_the_national_node_by_status_list_before_the_feed(federation):
    national, provincial, industry = federation
    onboarded = industry.manage("cir_provider_add", "--name", "Revoked Early", "--uscc", valid_uscc(5204),
                                "--code", "REV", "--json")
    _sync_up(industry, provincial)
    eventually(lambda: national.get(f"/api/v1/providers/{onboarded['prefix']}").json().get("credential_status")
               == "valid", what="the provider to arrive", nodes=[national, provincial, industry])
    machine = Machine(onboarded["prefix"], crypto.load_private_jwk(onboarded["private_jwk"]))

    def token_status() -> int:
        return requests.post(f"{national.url}/oauth/token", data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": machine.assertion(f"{national.url}/oauth/token")}, timeout=10).status_code

    assert token_status() == 200
    # Revoke at home and do NOT sync: the feed still says valid at the national node...
    industry.manage("cir_provider_status", "--prefix", onboarded["prefix"], "--set", "revoked", "--reason", "fraud",
                    "--json")
    assert national.get(f"/api/v1/providers/{onboarded['prefix']}").json()["credential_status"] == "valid"
    # ...but once its cached copy of the status list has expired (ttl), the list wins.
    national.shell("from django.core.cache import cache; cache.clear()")
    assert token_status() == 401


def test_live_availability_reaches_the_national_node_and_goes_stale(federation, tmp_path):
    national, provincial, industry = federation
    onboarded = industry.manage("cir_provider_add", "--name", "Busy GPUs", "--uscc", valid_uscc(5205), "--code",
                                "AVL", "--json")
    created = industry.shell(CREATE_RESOURCE.format(prefix=onboarded["prefix"]).replace("ind-a100-01", "avl-01"))
    ucri = json.loads(created.strip().splitlines()[-1])["ucri"]
    key_file = tmp_path / "provider.jwk"
    key_file.write_text(json.dumps(onboarded["private_jwk"]))
    # The provider's reporter: a command printing JSON lines (an sinfo adaptor in real life).
    line = json.dumps({"ucri": ucri, "available_units": 48, "queued_jobs": 2, "valid_for": 10})
    result = industry.manage("cir_report_availability", "--node", industry.url, "--prefix", onboarded["prefix"],
                             "--key", str(key_file), "--command", f"echo '{line}'", "--count", "1", "--json")
    assert result == {"accepted": 1}
    _sync_up(industry, provincial)
    client_jwk = json.loads(national.shell("""
from identity import crypto, oauth
import json
key = crypto.generate_private_key()
oauth.register_client(client_id="avail-reader", jwks=[crypto.public_jwk(key)], scopes=["resources:read"],
                      provider=None, actor="test")
print(json.dumps(crypto.private_jwk(key)))
""").strip().splitlines()[-1])
    machine = Machine("avail-reader", crypto.load_private_jwk(client_jwk))
    token = requests.post(f"{national.url}/oauth/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": machine.assertion(f"{national.url}/oauth/token")}, timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def seen() -> dict | None:
        body = national.get(f"/api/v1/resources?prefix={onboarded['prefix']}", headers=headers).json()
        results = body.get("results") or [{}]
        return results[0].get("availability")

    eventually(lambda: seen() is not None, what="availability at the national node",
               nodes=[national, provincial, industry])
    first = seen()
    assert (first["available_units"], first["queued_jobs"], first["fresh"]) == (48, 2, True)
    fresh_only = f"/api/v1/resources?prefix={onboarded['prefix']}&fresh_only=true"
    assert len(national.get(fresh_only, headers=headers).json()["results"]) == 1
    eventually(lambda: seen()["fresh"] is False, timeout=30, what="the report to go stale")
    assert national.get(fresh_only, headers=headers).json()["results"] == []
