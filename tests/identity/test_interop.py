"""Off-the-shelf clients and independent verifiers, over real HTTP (a live server thread).

- authlib's OAuth2 client with ``PrivateKeyJWT`` (EC key) gets a token and calls discovery, as a
  registered client and as a provider with its credential key: no glue code.
- jwcrypto (an independent JOSE library) verifies access tokens, credentials and status lists against
  keys fetched from ``/.well-known/jwks.json``.
- The status list decodes with a few lines of zlib/base64; revoked flips to 1, suspended to 2.
"""

from __future__ import annotations

import base64
import json
import zlib

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

from identity import credentials, crypto
from registry import services
from tests.support import auth, factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def live_node(live_server):
    node, _ = services.node_init(role="provincial", code="52", entity_id=live_server.url)
    site_owner = factories.provider(code="DEMO")
    factories.resource(factories.site(site_owner))
    return node


def _authlib_session(client_id: str, private_key, token_url: str) -> OAuth2Session:
    key = ECKey.import_key(crypto.private_pem(private_key))  # authlib takes EC keys as joserfc key objects
    session = OAuth2Session(client_id, key, token_endpoint_auth_method=PrivateKeyJWT(token_url, alg="ES256"))
    session.fetch_token(token_url, grant_type="client_credentials")
    return session


def test_authlib_registered_client_calls_discovery(live_server, live_node):
    machine = auth.register("authlib-scheduler", "resources:read")
    session = _authlib_session(machine.client_id, machine.private_key, f"{live_server.url}/oauth/token")
    assert session.token["token_type"].lower() == "bearer"
    response = session.get(f"{live_server.url}/api/v1/resources")
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1


def test_authlib_provider_with_its_credential_key(live_server, live_node):
    onboarded = credentials.onboard(name="Authlib Provider", uscc=factories.valid_uscc(), code="AL01", actor="test")
    key = crypto.load_private_jwk(onboarded.private_jwk)
    session = _authlib_session(onboarded.provider.prefix, key, f"{live_server.url}/oauth/token")
    assert "resources:write" in session.token["scope"].split()
    response = session.get(f"{live_server.url}/api/v1/resources?provider={onboarded.provider.prefix}")
    assert response.status_code == 200
    site = session.post(f"{live_server.url}/api/v1/sites", json={
        "name": "Authlib DC", "province": "52", "pue": 1.2, "green_ratio": 0.5, "rack_availability": 0.4})
    assert site.status_code == 201, site.text


def _jwks(live_server) -> tuple[dict, requests.Response]:
    response = requests.get(f"{live_server.url}/.well-known/jwks.json", timeout=10)
    return response.json(), response


def _jwcrypto_key(jwks: dict, kid: str, purpose: str) -> jwcrypto_jwk.JWK:
    entry = next(k for k in jwks["keys"] if k["kid"] == kid)
    assert entry["cir_use"] == purpose and entry["use"] == "sig"
    return jwcrypto_jwk.JWK(**{k: v for k, v in entry.items() if k != "cir_use"})


def test_jwks_publishes_one_key_set_per_purpose(live_server, live_node):
    jwks, response = _jwks(live_server)
    assert "max-age=" in response.headers["Cache-Control"]
    assert {k["cir_use"] for k in jwks["keys"]} == {"access_token", "credential", "handoff"}
    for key in jwks["keys"]:
        assert {"kid", "alg", "use", "crv", "kty", "x"} <= set(key)
        assert "d" not in key
        assert key["kid"] == crypto.thumbprint(key)


def test_jwcrypto_verifies_access_tokens(live_server, live_node):
    machine = auth.register("jwcrypto-client", "resources:read")
    token = _authlib_session(machine.client_id, machine.private_key, f"{live_server.url}/oauth/token").token
    jwks, _ = _jwks(live_server)
    header = json.loads(base64.urlsafe_b64decode(token["access_token"].split(".")[0] + "=="))
    assert header["typ"] == "at+jwt"
    verified = jwcrypto_jwt.JWT(jwt=token["access_token"], key=_jwcrypto_key(jwks, header["kid"], "access_token"),
                                check_claims={"iss": live_server.url, "aud": live_server.url})
    claims = json.loads(verified.claims)
    assert claims["client_id"] == "jwcrypto-client"


def _decode_status_list(token: str) -> list[int]:
    """A few lines of plain zlib/base64, as a relying party would write them."""
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    raw = zlib.decompress(base64.urlsafe_b64decode(payload["status_list"]["lst"] + "=="))
    bits = payload["status_list"]["bits"]
    return [(raw[i * bits // 8] >> ((i * bits) % 8)) & ((1 << bits) - 1) for i in range(len(raw) * 8 // bits)]


def test_credential_verifies_with_jwcrypto_and_the_status_list_flips(live_server, live_node):
    onboarded = credentials.onboard(name="Status Provider", uscc=factories.valid_uscc(), code="ST01", actor="test")
    prefix = onboarded.provider.prefix
    record = requests.get(f"{live_server.url}/api/v1/providers/{prefix}", timeout=10).json()
    assert record["credential_status"] == "valid"
    credential = record["credential"]
    jwks, _ = _jwks(live_server)
    header = json.loads(base64.urlsafe_b64decode(credential.split(".")[0] + "=="))
    assert header["typ"] == "provider-credential+jwt"
    verified = jwcrypto_jwt.JWT(jwt=credential, key=_jwcrypto_key(jwks, header["kid"], "credential"),
                                check_claims={"iss": live_server.url, "sub": prefix})
    claims = json.loads(verified.claims)
    assert claims["provider"]["uscc"] == onboarded.provider.uscc
    assert claims["cnf"]["jwk"]["kid"] == crypto.thumbprint(claims["cnf"]["jwk"])
    assert claims["exp"] - claims["iat"] <= 90 * 86400
    pointer = claims["status"]["status_list"]
    assert pointer["uri"].startswith(f"{live_server.url}/api/v1/status-lists/")

    def status_entry() -> int:
        response = requests.get(pointer["uri"], timeout=10)
        assert response.headers["Content-Type"] == "application/statuslist+jwt"
        token = response.text
        list_header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert list_header["typ"] == "statuslist+jwt"
        list_claims = json.loads(jwcrypto_jwt.JWT(jwt=token, key=_jwcrypto_key(jwks, list_header["kid"], "credential"),
                                                  check_claims={"sub": pointer["uri"]}).claims)
        assert list_claims["ttl"] > 0 and list_claims["exp"] - list_claims["iat"] <= 86400
        entries = _decode_status_list(token)
        assert len(entries) >= 16384
        return entries[pointer["idx"]]

    assert status_entry() == 0
    credentials.set_status(provider=onboarded.provider, status="suspended", reason="inspection", actor="test")
    assert status_entry() == 2
    assert requests.get(f"{live_server.url}/api/v1/providers/{prefix}", timeout=10).json()[
        "credential_status"] == "suspended"
    credentials.set_status(provider=onboarded.provider, status="revoked", reason="fraud", actor="test")
    assert status_entry() == 1
    record = requests.get(f"{live_server.url}/api/v1/providers/{prefix}", timeout=10).json()
    assert record["credential_status"] == "revoked"
