"""End to end across two real nodes: a scheduler (authlib, private_key_jwt) discovers a Guizhou resource
at the national node, gets a DPoP-bound ticket there, submits the job to the provider's reference intake
server, which verifies offline with the kit (trusting the national anchor) and acknowledges with the
provider's credential key; the scheduler then sees ``accepted`` (CONTRACT §7)."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey

from identity import crypto
from scheduling import intake, kit
from tests.support.auth import dpop_proof
from tests.support.factories import valid_uscc
from tests.support.nodes import create_node, join

pytestmark = pytest.mark.federation
PUBLIC_ENDPOINT = "https://intake.gz01.example.cn/v1/jobs"
JOB = {"script": "#!/bin/bash\nsrun python train.py --epochs 3", "nodes": 2, "gpus_per_node": 8}

CREATE = """
import json
from registry import services
from registry.models import Provider
provider = Provider.objects.get(prefix="{prefix}")
site = services.site_create(provider=provider, data=dict(name="Gui'an DC", province="52", pue=1.15, green_ratio=0.7,
                            rack_availability=0.5))
resource = services.resource_create(provider=provider, data=dict(local_id="h100-01", name="H100 pool",
    kind="intelligent", site_id=str(site.id), accelerator="GPU", accelerator_model="H100 SXM 80GB",
    accelerator_count=16, node_count=2, fp16_tflops=15824.0, price_per_hour=18, price_unit="card",
    endpoints=[dict(type="slurm", url="{endpoint}")]))
print(resource.ucri)
"""
SCHEDULER = """
import json
from identity import crypto, oauth
key = crypto.generate_private_key()
oauth.register_client(client_id="national-scheduler", jwks=[crypto.public_jwk(key)],
                      scopes=["resources:read", "handoff:request"], provider=None, actor="test")
print(json.dumps(crypto.private_jwk(key)))
"""


def test_scheduler_to_provider_handoff_across_two_nodes():
    national = create_node("ho-national", role="national")
    provincial = create_node("ho-gz", role="provincial", code="52")
    server = None
    try:
        national.start_server()
        provincial.start_server()
        join(provincial, national, anchor=national, prefix="86.52")
        onboarded = provincial.manage("cir_provider_add", "--name", "Gui'an GPU Cloud", "--uscc", valid_uscc(6001),
                                      "--code", "GZ01", "--json")
        ucri = provincial.shell(CREATE.format(prefix=onboarded["prefix"], endpoint=PUBLIC_ENDPOINT)).split()[-1]
        national.manage("cir_sync", "--once", "--json")
        assert national.get(f"/api/v1/resolve/{ucri}").json()["source"] == "mirror"

        # The provider runs the reference intake, trusting the national anchor it pinned.
        anchor_jwks = json.loads(crypto.b64url_decode(
            national.get("/.well-known/openid-federation").text.split(".")[1]))["jwks"]["keys"]
        verifier = kit.Verifier(provider_prefix=onboarded["prefix"], endpoint_url=PUBLIC_ENDPOINT,
                                keys=kit.AnchorKeys(national.url, anchor_jwks))
        server = intake.make_server(("127.0.0.1", 0), verifier, crypto.load_private_jwk(onboarded["private_jwk"]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        intake_url = f"http://127.0.0.1:{server.server_address[1]}/v1/jobs"  # behind its TLS proxy in real life

        # The scheduler: an unmodified authlib client with private_key_jwt.
        private_jwk = json.loads(national.shell(SCHEDULER).strip().splitlines()[-1])
        key = ECKey.import_key(crypto.private_pem(crypto.load_private_jwk(private_jwk)))
        session = OAuth2Session("national-scheduler", key,
                                token_endpoint_auth_method=PrivateKeyJWT(f"{national.url}/oauth/token", alg="ES256"))
        session.fetch_token(f"{national.url}/oauth/token", grant_type="client_credentials")
        found = session.get(f"{national.url}/api/v1/resources", params={"prefix": "86.52", "accelerator": "GPU"})
        assert [item["ucri"] for item in found.json()["results"]] == [ucri]

        dpop_key = crypto.generate_private_key()
        access_token = session.token["access_token"]
        handoff_url = f"{national.url}/api/v1/handoffs"
        answer = session.post(handoff_url, json={"ucri": ucri, "job": JOB},
                              headers={"DPoP": dpop_proof(dpop_key, "POST", handoff_url, access_token)})
        assert answer.status_code == 201, answer.text
        handoff = answer.json()
        assert handoff["provider_endpoint"] == PUBLIC_ENDPOINT

        submitted = requests.post(intake_url, data=json.dumps(JOB), timeout=30, headers={
            "Authorization": f"DPoP {handoff['ticket']}", "Content-Type": "application/json",
            "DPoP": dpop_proof(dpop_key, "POST", PUBLIC_ENDPOINT, handoff["ticket"])})
        assert submitted.status_code == 202, submitted.text
        assert submitted.json() == {"accepted": True, "reason": "ok", "ack_status": 200}

        status = session.get(f"{national.url}/api/v1/handoffs/{handoff['id']}").json()
        assert status["status"] == "accepted"

        # The same ticket again: refused offline by the kit.
        replay = requests.post(intake_url, data=json.dumps(JOB), timeout=30, headers={
            "Authorization": f"DPoP {handoff['ticket']}",
            "DPoP": dpop_proof(dpop_key, "POST", PUBLIC_ENDPOINT, handoff["ticket"])})
        assert replay.status_code == 401 and replay.json()["reason"] == "replayed_ticket"
    finally:
        if server is not None:
            server.shutdown()
        national.drop()
        provincial.drop()
