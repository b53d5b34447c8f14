"""Machine clients for tests: real key pairs and the real token endpoint (private_key_jwt)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from rest_framework.test import APIClient

from identity import crypto, oauth
from registry.models import Provider

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Machine:
    client_id: str
    private_key: Any

    @property
    def jwk(self) -> dict[str, Any]:
        return crypto.public_jwk(self.private_key)

    def assertion(self, audience: str, *, lifetime: int = 300, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex}
        claims.update(overrides)
        return crypto.sign(claims, self.private_key, typ=None, kid=self.jwk["kid"])


def register(client_id: str, scopes: str, provider: Provider | None = None, alg: str = "ES256") -> Machine:
    machine = Machine(client_id, crypto.generate_private_key(alg))
    oauth.register_client(client_id=client_id, jwks=[machine.jwk], scopes=scopes.split(), provider=provider,
                          actor="test")
    return machine


def bearer_client(machine: Machine, scope: str | None = None) -> APIClient:
    from urllib.parse import urlencode

    api = APIClient()
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": machine.assertion(oauth.token_endpoint_url())}
    if scope is not None:
        form["scope"] = scope
    response = api.generic("POST", "/oauth/token", urlencode(form), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    api.credentials(HTTP_AUTHORIZATION="Bearer " + response.json()["access_token"])
    return api


def dpop_proof(key: Any, method: str, url: str, token: str | None = None, **overrides: Any) -> str:
    """An RFC 9449 proof signed by ``key`` with its public JWK in the header."""
    claims = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
    if token is not None:
        claims["ath"] = crypto.sha256_b64url(token)
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return crypto.sign(claims, key, typ="dpop+jwt", kid=None, extra_headers={"jwk": crypto.public_jwk(key)})


def bearer_token(machine: Machine, scope: str | None = None) -> str:
    api = bearer_client(machine, scope)
    return api._credentials["HTTP_AUTHORIZATION"].split(" ", 1)[1]
