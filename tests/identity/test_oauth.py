"""The token endpoint (CONTRACT §6) and token-protected routes (§2)."""

from __future__ import annotations

import datetime as dt
import time
from urllib.parse import urlencode

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import AuditEntry
from identity import credentials, crypto, oauth
from identity.models import ProviderCredential
from tests.support import auth, factories

pytestmark = pytest.mark.django_db


def post_token(api: APIClient, **form) -> tuple[int, dict, object]:
    response = api.generic("POST", "/oauth/token", urlencode(form), content_type="application/x-www-form-urlencoded")
    return response.status_code, response.json(), response


def form_for(machine: auth.Machine, **overrides) -> dict:
    form = {"grant_type": "client_credentials", "client_assertion_type": oauth.ASSERTION_TYPE,
            "client_assertion": machine.assertion(oauth.token_endpoint_url())}
    form.update(overrides)
    return form


@pytest.fixture
def scheduler(node):
    return auth.register("national-scheduler", "resources:read handoff:request")


def test_registered_client_gets_an_access_token(api, scheduler):
    status, body, response = post_token(api, **form_for(scheduler))
    assert status == 200, body
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 600
    assert body["scope"] == "resources:read handoff:request"
    assert response["Cache-Control"] == "no-store"
    principal = oauth.authenticate_access_token(body["access_token"])
    assert principal.client_id == "national-scheduler"
    claims = principal.claims
    assert claims["iss"] == claims["aud"] == "http://127.0.0.1:8052"
    assert claims["sub"] == claims["client_id"] == "national-scheduler"
    assert claims["exp"] - claims["iat"] <= 600
    assert set(claims) >= {"iss", "sub", "client_id", "aud", "iat", "exp", "jti", "scope"}


def test_scope_subset_and_invalid_scope(api, scheduler):
    status, body, _ = post_token(api, **form_for(scheduler, scope="resources:read"))
    assert status == 200 and body["scope"] == "resources:read"
    status, body, _ = post_token(api, **form_for(scheduler, scope="resources:read resources:write"))
    assert status == 400 and body["error"] == "invalid_scope"


def test_audience_may_be_the_entity_id(api, scheduler):
    status, _, _ = post_token(api, **form_for(scheduler, client_assertion=scheduler.assertion("http://127.0.0.1:8052")))
    assert status == 200


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"client_assertion_type": "urn:other"}, 400, "invalid_request"),
        ({"client_assertion": ""}, 400, "invalid_request"),
        ({"client_assertion": "not-a-jwt"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
    ],
)
def test_bad_token_requests(api, scheduler, change, status, error):
    got_status, body, _ = post_token(api, **form_for(scheduler, **change))
    assert (got_status, body["error"]) == (status, error)
    assert "error_description" in body


@pytest.mark.parametrize(
    "assertion",
    [
        lambda m: auth.Machine(m.client_id, crypto.generate_private_key()).assertion(oauth.token_endpoint_url()),
        lambda m: auth.Machine("nobody", crypto.generate_private_key()).assertion(oauth.token_endpoint_url()),
        lambda m: m.assertion("https://elsewhere.example/oauth/token"),
        lambda m: m.assertion(oauth.token_endpoint_url(), iat=int(time.time()) - 4000,
                              exp=int(time.time()) - 3000),
        lambda m: m.assertion(oauth.token_endpoint_url(), lifetime=3601),
        lambda m: m.assertion(oauth.token_endpoint_url(), sub="other"),
        lambda m: m.assertion(oauth.token_endpoint_url(), jti=None),
    ],
    ids=["wrong-key", "unknown-client", "wrong-aud", "expired", "lifetime-over-60-min", "sub-mismatch", "no-jti"],
)
def test_failed_client_authentication_is_401_invalid_client(api, scheduler, assertion):
    status, body, response = post_token(api, **form_for(scheduler, client_assertion=assertion(scheduler)))
    assert (status, body["error"]) == (401, "invalid_client")
    assert response["Content-Type"] == "application/json"


def test_replayed_assertion_is_refused(api, scheduler):
    form = form_for(scheduler)
    assert post_token(api, **form)[0] == 200
    status, body, _ = post_token(api, **form)
    assert (status, body["error"]) == (401, "invalid_client")


def test_json_body_is_invalid_request(api, scheduler):
    response = api.post("/oauth/token", form_for(scheduler), format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_protected_route_without_token_is_401_with_www_authenticate(api, node):
    response = api.get("/api/v1/resources")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "invalid_token"


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c"])
def test_protected_route_with_a_bad_token_is_401(api, node, header):
    response = api.get("/api/v1/resources", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert "Bearer" in response["WWW-Authenticate"]


def test_token_without_the_scope_is_403_insufficient_scope(node):
    machine = auth.register("acker", "handoff:ack")
    response = auth.bearer_client(machine).get("/api/v1/resources")
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"


def test_access_token_from_another_issuer_is_refused(api, node):
    attacker = crypto.generate_private_key()
    now = int(time.time())
    forged = crypto.sign({"iss": "http://127.0.0.1:8052", "aud": "http://127.0.0.1:8052", "sub": "x", "client_id": "x",
                          "iat": now, "exp": now + 60, "jti": "j", "scope": "resources:read"}, attacker,
                         typ="at+jwt", kid=crypto.public_jwk(attacker)["kid"])
    assert api.get("/api/v1/resources", HTTP_AUTHORIZATION=f"Bearer {forged}").status_code == 401


def test_a_credential_key_cannot_sign_access_tokens(api, node, provider_onboarded):
    """A token signed with the node's own credential key (another purpose) is not an access token."""
    from identity import keys
    from identity.models import Purpose

    now = int(time.time())
    claims = {"iss": node.entity_id, "aud": node.entity_id, "sub": "x", "client_id": "x", "iat": now,
              "exp": now + 60, "jti": "j2", "scope": "resources:read"}
    token = keys.sign(Purpose.CREDENTIAL, claims, typ="at+jwt").token
    assert api.get("/api/v1/resources", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


# Providers authenticate with their credential key ------------------------------------------------

@pytest.fixture
def provider_onboarded(node):
    return credentials.onboard(name="Gui'an Compute", uscc=factories.valid_uscc(), code="GA01", actor="test")


def _provider_machine(onboarded) -> auth.Machine:
    return auth.Machine(onboarded.provider.prefix, crypto.load_private_jwk(onboarded.private_jwk))


def test_provider_authenticates_with_its_credential_key(api, provider_onboarded):
    status, body, _ = post_token(api, **form_for(_provider_machine(provider_onboarded)))
    assert status == 200, body
    assert set(body["scope"].split()) == {"resources:read", "handoff:ack", "resources:write"}
    principal = oauth.authenticate_access_token(body["access_token"])
    assert principal.provider_id == provider_onboarded.provider.pk


@pytest.mark.parametrize("status_value", ["suspended", "revoked"])
def test_suspended_or_revoked_provider_cannot_authenticate(api, provider_onboarded, status_value):
    credentials.set_status(provider=provider_onboarded.provider, status=status_value, reason="test", actor="test")
    status, body, _ = post_token(api, **form_for(_provider_machine(provider_onboarded)))
    assert (status, body["error"]) == (401, "invalid_client")


def test_reinstated_provider_authenticates_again(api, provider_onboarded):
    credentials.set_status(provider=provider_onboarded.provider, status="suspended", reason="audit", actor="op")
    credentials.set_status(provider=provider_onboarded.provider, status="valid", reason="cleared", actor="op")
    assert post_token(api, **form_for(_provider_machine(provider_onboarded)))[0] == 200


def test_expired_credential_cannot_authenticate(api, provider_onboarded):
    ProviderCredential.objects.filter(provider=provider_onboarded.provider).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1))
    status, body, _ = post_token(api, **form_for(_provider_machine(provider_onboarded)))
    assert (status, body["error"]) == (401, "invalid_client")


def test_provider_prefix_cannot_be_claimed_by_another_key(api, provider_onboarded):
    impostor = auth.Machine(provider_onboarded.provider.prefix, crypto.generate_private_key())
    status, body, _ = post_token(api, **form_for(impostor))
    assert (status, body["error"]) == (401, "invalid_client")


def test_client_events_are_audited(node):
    auth.register("audited-client", "resources:read")
    entry = AuditEntry.objects.get(action="client.registered")
    assert entry.actor == "test" and entry.target_key == "audited-client"


def test_deactivated_client_tokens_stop_working(node):
    from identity.models import Client

    machine = auth.register("soon-gone", "resources:read")
    api = auth.bearer_client(machine)
    assert api.get("/api/v1/resources").status_code == 200
    Client.objects.filter(client_id="soon-gone").update(is_active=False)
    assert api.get("/api/v1/resources").status_code == 401


@override_settings(CIR_ACCESS_TOKEN_LIFETIME=10_000)
def test_access_token_lifetime_is_capped_at_ten_minutes(api, scheduler):
    _, body, _ = post_token(api, **form_for(scheduler))
    assert body["expires_in"] == 600


def test_unique_jti_per_access_token(api, scheduler):
    seen = {oauth.authenticate_access_token(post_token(api, **form_for(scheduler))[1]["access_token"]).claims["jti"]
            for _ in range(3)}
    assert len(seen) == 3


def test_register_client_validates(node):
    from core.errors import ApplicationError

    good = crypto.public_jwk(crypto.generate_private_key())
    with pytest.raises(ApplicationError):
        oauth.register_client(client_id="x", jwks=[good], scopes=["resources:write"], provider=None, actor="t")
    with pytest.raises(ApplicationError):
        oauth.register_client(client_id="x", jwks=[good], scopes=["everything"], provider=None, actor="t")
    private = crypto.private_jwk(crypto.generate_private_key())
    with pytest.raises(ApplicationError):
        oauth.register_client(client_id="x", jwks=[private], scopes=["resources:read"], provider=None, actor="t")
    rsa_like = {"kty": "RSA", "n": "abc", "e": "AQAB"}
    with pytest.raises(ApplicationError):
        oauth.register_client(client_id="x", jwks=[rsa_like], scopes=["resources:read"], provider=None, actor="t")
