"""Handoff issuance, reads, acknowledgement and expiry (CONTRACT §7), and the provider-side kit."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from identity import credentials, crypto, keys
from identity.models import Purpose
from registry import services as registry_services
from registry.models import Provider
from scheduling import kit, services
from scheduling.models import Handoff
from tests.support import auth, factories

pytestmark = pytest.mark.django_db
URL = "http://testserver/api/v1/handoffs"
ENDPOINT = "https://slurm.gz.example/slurmrestd/jobs"
JOB = {"script": "#!/bin/bash\nsrun python train.py", "nodes": 2, "gpus_per_node": 8, "walltime": 3600.5}


@pytest.fixture
def provider(node):
    return credentials.onboard(name="Handoff Provider", uscc=factories.valid_uscc(), code="HO01", actor="t")


@pytest.fixture
def resource(provider):
    site = factories.site(provider.provider)
    return factories.resource(site, endpoints=[{"type": "slurm", "url": ENDPOINT},
                                               {"type": "api", "url": "https://api.gz.example/jobs"}])


class Scheduler:
    def __init__(self, client_id: str = "national-scheduler", scope: str = "handoff:request resources:read"):
        self.machine = auth.register(client_id, scope)
        self.token = auth.bearer_token(self.machine)
        self.key = crypto.generate_private_key()
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")

    def proof(self, **overrides) -> str:
        return auth.dpop_proof(self.key, "POST", URL, self.token, **overrides)

    def request(self, body: dict, proof: str | None = "default", **headers):
        if proof == "default":
            proof = self.proof()
        if proof is not None:
            headers["HTTP_DPOP"] = proof
        return self.api.post("/api/v1/handoffs", body, format="json", **headers)


@pytest.fixture
def scheduler(node):
    return Scheduler()


def _issue(scheduler, resource, **body):
    response = scheduler.request({"ucri": resource.ucri, "job": JOB, **body})
    assert response.status_code == 201, response.content
    return response.json()


def test_issue_a_ticket_with_every_claim(scheduler, resource):
    answer = _issue(scheduler, resource)
    assert answer["status"] == "issued" and answer["provider_endpoint"] == ENDPOINT
    header, claims = (json.loads(crypto.b64url_decode(p)) for p in answer["ticket"].split(".")[:2])
    assert header["typ"] == "handoff+jwt"
    assert claims["aud"] == "86.52.HO01" and claims["sub"] == "national-scheduler"
    assert claims["iss"] == "http://127.0.0.1:8052" and claims["handoff_id"] == answer["id"]
    assert claims["ucri"] == resource.ucri and claims["endpoint"] == ENDPOINT
    assert claims["cnf"]["jkt"] == crypto.thumbprint(crypto.public_jwk(scheduler.key))
    assert 0 < claims["exp"] - claims["iat"] <= 300
    import hashlib

    import rfc8785

    assert claims["job_sha256"] == hashlib.sha256(rfc8785.dumps(JOB)).hexdigest()
    # RFC 8785 differs from json.dumps(sort_keys=True) on numbers: the hash must be the RFC's.
    numbers = {"x": 1.0, "y": 1e-7}
    naive = hashlib.sha256(json.dumps(numbers, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert services.job_sha256(numbers) != naive


def test_choose_another_endpoint_of_the_resource(scheduler, resource):
    assert _issue(scheduler, resource, endpoint="https://api.gz.example/jobs")["provider_endpoint"] == \
        "https://api.gz.example/jobs"
    response = scheduler.request({"ucri": resource.ucri, "job": JOB, "endpoint": "https://evil.example/jobs"})
    assert response.status_code == 400 and response.json()["code"] == "invalid_endpoint"


def test_missing_proof_is_dpop_required(scheduler, resource):
    response = scheduler.request({"ucri": resource.ucri, "job": JOB}, proof=None)
    assert response.status_code == 400 and response.json()["code"] == "dpop_required"


@pytest.mark.parametrize("change", [
    {"htm": "GET"}, {"htu": "http://testserver/api/v1/other"}, {"ath": "wrong"}, {"iat": int(time.time()) - 300},
    {"typ": True}, {"signed_by_other_key": True}, {"jwk_missing": True}])
def test_a_failing_proof_is_invalid_dpop_proof(scheduler, resource, change):
    if "typ" in change:
        proof = crypto.sign({"jti": "x1", "htm": "POST", "htu": URL, "iat": int(time.time()),
                             "ath": crypto.sha256_b64url(scheduler.token)}, scheduler.key, typ="JWT", kid=None,
                            extra_headers={"jwk": crypto.public_jwk(scheduler.key)})
    elif "signed_by_other_key" in change:
        proof = crypto.sign({"jti": "x2", "htm": "POST", "htu": URL, "iat": int(time.time()),
                             "ath": crypto.sha256_b64url(scheduler.token)}, crypto.generate_private_key(),
                            typ="dpop+jwt", kid=None, extra_headers={"jwk": crypto.public_jwk(scheduler.key)})
    elif "jwk_missing" in change:
        proof = crypto.sign({"jti": "x3", "htm": "POST", "htu": URL, "iat": int(time.time())}, scheduler.key,
                            typ="dpop+jwt", kid=None)
    else:
        proof = scheduler.proof(**change)
    response = scheduler.request({"ucri": resource.ucri, "job": JOB}, proof=proof)
    assert response.status_code == 400 and response.json()["code"] == "invalid_dpop_proof", change
    assert not Handoff.objects.exists()


def test_a_replayed_proof_is_refused(scheduler, resource):
    proof = scheduler.proof()
    assert scheduler.request({"ucri": resource.ucri, "job": JOB}, proof=proof).status_code == 201
    response = scheduler.request({"ucri": resource.ucri, "job": JOB}, proof=proof)
    assert response.status_code == 400 and response.json()["code"] == "invalid_dpop_proof"


@pytest.mark.parametrize("body", [{"ucri": "x"}, {"job": {}}, {"ucri": "86.52.HO01/000000000001-N", "job": [1]},
                                  {"ucri": "86.52.HO01/000000000001-N", "job": "run"}, {"ucri": 5, "job": {}}])
def test_bad_bodies(scheduler, resource, body):
    response = scheduler.request(body)
    assert response.status_code == 400, body


def test_resource_not_active_or_in_downtime_is_409(scheduler, resource):
    now = timezone.now()
    downtime = registry_services.downtime_create(provider=resource.provider, data={
        "site_id": str(resource.site_id), "start": now - dt.timedelta(minutes=1), "end": now + dt.timedelta(hours=1),
        "classification": "unscheduled", "reason": "power"})
    response = scheduler.request({"ucri": resource.ucri, "job": JOB})
    assert response.status_code == 409 and response.json()["code"] == "resource_unavailable"
    registry_services.downtime_delete(downtime=downtime)
    registry_services.resource_update(resource=resource, data={"status": "suspended"})
    assert scheduler.request({"ucri": resource.ucri, "job": JOB}).json()["code"] == "resource_unavailable"
    registry_services.resource_retire(resource=resource)
    assert scheduler.request({"ucri": resource.ucri, "job": JOB}).json()["code"] == "resource_unavailable"


def test_only_a_downtime_under_way_makes_the_resource_unavailable(scheduler, resource):
    now = timezone.now()
    announced = registry_services.downtime_create(provider=resource.provider, data={
        "resource": resource.ucri, "start": now + dt.timedelta(hours=1), "end": now + dt.timedelta(hours=2),
        "classification": "scheduled", "reason": "maintenance"})
    assert scheduler.request({"ucri": resource.ucri, "job": JOB}).status_code == 201
    registry_services.downtime_create(provider=resource.provider, data={
        "resource": resource.ucri, "start": now - dt.timedelta(minutes=1), "end": now + dt.timedelta(hours=1),
        "classification": "unscheduled", "reason": "cooling"})
    response = scheduler.request({"ucri": resource.ucri, "job": JOB})
    assert response.status_code == 409 and response.json()["code"] == "resource_unavailable"
    assert announced.resource_id == resource.pk


@pytest.mark.parametrize("status", ["revoked", "suspended", "expired"])
def test_provider_credential_must_be_valid(scheduler, provider, resource, status):
    if status == "expired":
        Provider.objects.filter(pk=provider.provider.pk).update(
            credential_expires_at=timezone.now() - dt.timedelta(seconds=1))
    else:
        credentials.set_status(provider=provider.provider, status=status, reason="t", actor="t")
    response = scheduler.request({"ucri": resource.ucri, "job": JOB})
    assert response.status_code == 403 and response.json()["code"] == f"provider_credential_{status}"


def test_scheduler_lacking_the_scope(node, resource):
    reader = Scheduler("reader-only", "resources:read")
    response = reader.request({"ucri": resource.ucri, "job": JOB})
    assert response.status_code == 403 and response.json()["code"] == "insufficient_scope"


def test_reads_are_for_the_two_parties_only(scheduler, provider, resource):
    answer = _issue(scheduler, resource)
    url = f"/api/v1/handoffs/{answer['id']}"
    assert scheduler.api.get(url).json()["status"] == "issued"
    other = Scheduler("other-scheduler")
    assert other.api.get(url).status_code == 404
    owner = auth.bearer_client(auth.Machine(provider.provider.prefix, crypto.load_private_jwk(provider.private_jwk)))
    assert owner.get(url).status_code == 200
    stranger = credentials.onboard(name="Stranger", uscc=factories.valid_uscc(), code="STR1", actor="t")
    stranger_api = auth.bearer_client(auth.Machine(stranger.provider.prefix,
                                                   crypto.load_private_jwk(stranger.private_jwk)))
    assert stranger_api.get(url).status_code == 404
    assert stranger_api.post(f"{url}/ack", {"accepted": True}, format="json").status_code == 404
    assert APIClient().get(url).status_code == 401


def test_acknowledgement_by_the_addressed_provider(scheduler, provider, resource):
    answer = _issue(scheduler, resource)
    owner = auth.bearer_client(auth.Machine(provider.provider.prefix, crypto.load_private_jwk(provider.private_jwk)))
    url = f"/api/v1/handoffs/{answer['id']}/ack"
    assert owner.post(url, {"accepted": "yes"}, format="json").status_code == 400
    response = owner.post(url, {"accepted": True, "reason": "queued as job 4711"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    again = owner.post(url, {"accepted": False}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_acknowledged"
    assert scheduler.api.get(f"/api/v1/handoffs/{answer['id']}").json()["status"] == "accepted"


def test_ack_after_expiry_and_the_sweep(scheduler, provider, resource):
    answer = _issue(scheduler, resource)
    second = _issue(scheduler, resource)
    # The kit allows 60 s of clock leeway past exp; so does the acknowledgement, and the sweep waits for it.
    Handoff.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=61))
    owner = auth.bearer_client(auth.Machine(provider.provider.prefix, crypto.load_private_jwk(provider.private_jwk)))
    response = owner.post(f"/api/v1/handoffs/{answer['id']}/ack", {"accepted": True}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "handoff_expired"
    assert services.expire_due() == 1
    assert Handoff.objects.get(pk=second["id"]).status == "expired"


def test_handoffs_are_audited(scheduler, resource):
    from core.models import AuditEntry

    answer = _issue(scheduler, resource)
    entry = AuditEntry.objects.get(action="handoff.issued")
    assert entry.target_key == answer["id"] and entry.actor == "client:national-scheduler"


# The kit ------------------------------------------------------------------------------------------

@pytest.fixture
def issued(scheduler, resource):
    answer = _issue(scheduler, resource)
    node_keys = [k for k in keys.public_jwks() if k["cir_use"] == "handoff"]
    verifier = kit.Verifier(provider_prefix="86.52.HO01", endpoint_url=ENDPOINT,
                            keys=kit.StaticKeys("http://127.0.0.1:8052", node_keys))
    return answer, verifier, scheduler


def submit(verifier, scheduler, ticket, *, body=None, key=None, htu=ENDPOINT, method="POST", proof="default"):
    if proof == "default":
        proof = auth.dpop_proof(key or scheduler.key, "POST", htu, ticket)
    raw = json.dumps(JOB if body is None else body).encode()
    return verifier.verify(authorization=f"DPoP {ticket}", dpop=proof, method=method, body=raw)


def test_the_kit_accepts_a_good_submission_once(issued):
    answer, verifier, scheduler = issued
    reordered = dict(reversed(list(JOB.items())))  # same job, other member order: same canonical JSON
    decision = submit(verifier, scheduler, answer["ticket"], body=reordered)
    assert decision.accepted and decision.reason == "ok"
    assert submit(verifier, scheduler, answer["ticket"]).reason == "replayed_ticket"


def test_the_kit_refuses_each_fault_with_its_reason(issued, scheduler, resource):
    answer, verifier, scheduler = issued
    ticket = answer["ticket"]
    cases = {
        "tampered_job": submit(verifier, scheduler, ticket, body={**JOB, "nodes": 64}),
        "proof_key_mismatch": submit(verifier, scheduler, ticket, key=crypto.generate_private_key()),
        "wrong_endpoint": submit(verifier, scheduler, ticket, htu="https://other.gz.example/jobs"),
        "missing_proof": submit(verifier, scheduler, ticket, proof=None),
        "invalid_proof": submit(verifier, scheduler, ticket, method="PUT"),
    }
    for reason, decision in cases.items():
        assert (decision.accepted, decision.reason) == (False, reason)
    assert verifier.verify(authorization=None, dpop="x", method="POST", body=b"{}").reason == "missing_ticket"
    wrong_audience = kit.Verifier(provider_prefix="86.52.OTHER", endpoint_url=ENDPOINT, keys=verifier.keys)
    assert submit(wrong_audience, scheduler, ticket).reason == "wrong_audience"
    wrong_endpoint = kit.Verifier(provider_prefix="86.52.HO01", endpoint_url="https://api.gz.example/jobs",
                                  keys=verifier.keys)
    assert submit(wrong_endpoint, scheduler, ticket).reason == "wrong_endpoint"
    untrusted = kit.Verifier(provider_prefix="86.52.HO01", endpoint_url=ENDPOINT,
                             keys=kit.StaticKeys("https://someone-else.example", verifier.keys.jwks))
    assert submit(untrusted, scheduler, ticket).reason == "untrusted_issuer"
    # Nothing above consumed the ticket: the genuine submission still goes through, once.
    assert submit(verifier, scheduler, ticket).accepted


def test_the_kit_refuses_a_replayed_proof(issued, scheduler, resource):
    answer, verifier, scheduler = issued
    proof = auth.dpop_proof(scheduler.key, "POST", ENDPOINT, answer["ticket"])
    assert submit(verifier, scheduler, answer["ticket"], proof=proof).accepted
    second = _issue(scheduler, resource)
    # A fresh ticket with an old proof (bound to the same key) is refused for the proof.
    assert submit(verifier, scheduler, second["ticket"], proof=proof).reason in {"replayed_proof", "invalid_proof"}


def test_the_kit_refuses_an_expired_ticket(issued):
    answer, verifier, scheduler = issued
    now = int(time.time())
    claims = json.loads(crypto.b64url_decode(answer["ticket"].split(".")[1]))
    expired = keys.sign(Purpose.HANDOFF, {**claims, "iat": now - 500, "exp": now - 200, "jti": "old"},
                        typ="handoff+jwt").token
    assert submit(verifier, scheduler, expired).reason == "expired"


def test_the_kit_command_line(issued, tmp_path, capsys):
    answer, verifier, scheduler = issued
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": verifier.keys.jwks}))
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    proof = auth.dpop_proof(scheduler.key, "POST", ENDPOINT, answer["ticket"])
    code = kit.main(["--prefix", "86.52.HO01", "--endpoint", ENDPOINT, "--issuer", "http://127.0.0.1:8052",
                     "--issuer-jwks", str(tmp_path / "jwks.json"), "--ticket", answer["ticket"], "--proof", proof,
                     "--body", str(tmp_path / "job.json")])
    assert code == 0 and json.loads(capsys.readouterr().out)["accepted"] is True


def test_an_ack_within_the_kits_leeway_is_accepted(scheduler, provider, resource):
    answer = _issue(scheduler, resource)
    Handoff.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=30))
    owner = auth.bearer_client(auth.Machine(provider.provider.prefix, crypto.load_private_jwk(provider.private_jwk)))
    response = owner.post(f"/api/v1/handoffs/{answer['id']}/ack", {"accepted": True, "reason": None}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert services.expire_due() == 0


def test_a_job_with_duplicate_member_names_is_refused(scheduler, resource):
    raw = '{"ucri": "' + resource.ucri + '", "job": {"cmd": "run", "cmd": "evil"}}'
    response = scheduler.api.generic("POST", "/api/v1/handoffs", raw, content_type="application/json",
                                     HTTP_DPOP=scheduler.proof())
    assert response.status_code == 400 and response.json()["code"] == "malformed_body"


def test_the_kit_refuses_duplicate_member_names_and_bad_htu(issued):
    answer, verifier, scheduler = issued
    body = b'{"cmd": "evil", "cmd": "run"}'
    decision = verifier.verify(authorization=f"DPoP {answer['ticket']}", method="POST", body=body,
                               dpop=auth.dpop_proof(scheduler.key, "POST", ENDPOINT, answer["ticket"]))
    assert decision.reason == "invalid_job"
    bad_htu = auth.dpop_proof(scheduler.key, "POST", "http://127.0.0.1:99999/jobs", answer["ticket"])
    assert submit(verifier, scheduler, answer["ticket"], proof=bad_htu).reason == "invalid_proof"


def test_a_bad_htu_at_issuance_is_invalid_dpop_proof(scheduler, resource):
    proof = scheduler.proof(htu="http://[::1/api/v1/handoffs")
    response = scheduler.request({"ucri": resource.ucri, "job": JOB}, proof=proof)
    assert response.status_code == 400 and response.json()["code"] == "invalid_dpop_proof"


def test_an_idempotent_replay_still_needs_a_proof(scheduler, resource):
    body = {"ucri": resource.ucri, "job": JOB}
    assert scheduler.request(body, HTTP_IDEMPOTENCY_KEY="h1").status_code == 201
    response = scheduler.request(body, proof=None, HTTP_IDEMPOTENCY_KEY="h1")
    assert response.status_code == 400 and response.json()["code"] == "dpop_required"


def test_clients_without_handoff_scopes_get_404(scheduler, resource):
    answer = _issue(scheduler, resource)
    reader = auth.bearer_client(auth.register("only-reads", "resources:read"))
    assert reader.get(f"/api/v1/handoffs/{answer['id']}").status_code == 404


def test_the_kit_refetches_keys_for_an_unknown_kid(client, node):
    """After a handoff-key rotation the kit must not refuse good tickets until its cache expires."""
    from urllib.parse import urlsplit

    from federation import entity
    from identity.models import NodeKey

    def get(url: str, media: str) -> str:
        parts = urlsplit(url)
        response = client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
        assert response["Content-Type"] == f"application/{media}"
        return response.content.decode()

    anchor = kit.AnchorKeys(node.entity_id, entity.federation_jwks(), get=get)
    old = anchor.handoff_keys(node.entity_id)
    rotated = keys.rotate(Purpose.HANDOFF, force=True)
    NodeKey.objects.filter(pk=rotated.pk).update(activates_at=timezone.now() - dt.timedelta(seconds=1))
    # Within a minute of the last fetch the cache is trusted; after that an unknown kid is looked up.
    assert anchor.handoff_keys(node.entity_id, rotated.kid) == old
    issuer = node.entity_id
    expiry, cached, _fetched = anchor._cache[issuer]
    anchor._cache[issuer] = (expiry, cached, time.time() - kit.REFETCH_AFTER - 1)
    fresh = anchor.handoff_keys(issuer, rotated.kid)
    assert rotated.kid in {k["kid"] for k in fresh}


@pytest.mark.parametrize(("a", "b"), [
    ("HTTPS://Slurm.GZ.example:443/jobs?x=1#f", "https://slurm.gz.example/jobs"),
    ("http://[::1]:80/jobs", "http://[::1]/jobs"),
    ("http://[::1]:8443/jobs", "http://[::1]:8443/jobs")])
def test_issuance_and_the_kit_compare_htu_the_same_way(a, b):
    """One normalisation for both sides: the kit's own copy once dropped IPv6 brackets."""
    assert kit.normalize_url(a) == kit.normalize_url(b)
    assert services.normalize_url is kit.normalize_url
