"""Bad input found by review: each of these was a 500, a silent coercion or a contract slip."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import pytest
from django.test import override_settings

from core.models import OutboxEntry
from identity import credentials, crypto, oauth
from tests.support import auth, factories

pytestmark = pytest.mark.django_db

DEEP = '{"ucris":' + "[" * 5000 + "]" * 5000 + "}"


@pytest.mark.parametrize("body", [DEEP, '{"ucris": ["\\ud800"]}', '{"\\udfff": 1}', "[" * 100 + "]" * 100])
def test_hostile_json_is_400_on_the_public_batch_resolve(api, node, body):
    response = api.generic("POST", "/api/v1/resolve", body.encode(), content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "malformed_body"


@pytest.mark.parametrize("body", [DEEP, '{"\\ud800": 1}', '{"name": "\\ud800"}'])
def test_hostile_json_is_400_on_writes(resource, body):
    onboarded = credentials.onboard(name="W", uscc=factories.valid_uscc(), code="HJ01", actor="t")
    api = auth.bearer_client(auth.Machine(onboarded.provider.prefix, crypto.load_private_jwk(onboarded.private_jwk)))
    response = api.generic("POST", "/api/v1/sites", body.encode(), content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_body"


def test_an_oversized_body_is_a_problem_not_html(api, node):
    body = json.dumps({"ucris": ["x" * 1000] * 3000})
    response = api.generic("POST", "/api/v1/resolve", body.encode(), content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"


def _token_request(api, claims: dict, key=None):
    key = key or crypto.generate_private_key()
    assertion = crypto.sign(claims, key, typ=None, kid=None)
    form = {"grant_type": "client_credentials", "client_assertion_type": oauth.ASSERTION_TYPE,
            "client_assertion": assertion}
    return api.generic("POST", "/oauth/token", urlencode(form), content_type="application/x-www-form-urlencoded")


@pytest.mark.parametrize("client_id", ["a\u0000b", "\ud800", "x" * 300, "tab\there"])
def test_hostile_client_ids_are_invalid_client(api, node, client_id):
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": oauth.token_endpoint_url(), "iat": now, "exp": now + 60,
              "jti": uuid.uuid4().hex}
    response = _token_request(api, claims)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("jti", ["\ud800", "a\u0000b", "x" * 300])
def test_hostile_jti_from_a_real_client_is_invalid_client(api, node, jti):
    machine = auth.register("jti-tester", "resources:read")
    now = int(time.time())
    claims = {"iss": machine.client_id, "sub": machine.client_id, "aud": oauth.token_endpoint_url(), "iat": now,
              "exp": now + 60, "jti": jti}
    response = _token_request(api, claims, machine.private_key)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_token_endpoint_answers_other_methods_in_oauth_form(api, node):
    response = api.get("/oauth/token")
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("client_id", ["86.52.RVQ", "86.52", "http://127.0.0.1:8000", "a/b", ""])
def test_client_ids_cannot_look_like_providers_or_nodes(node, client_id):
    from core.errors import ApplicationError

    with pytest.raises(ApplicationError):
        oauth.register_client(client_id=client_id, jwks=[crypto.public_jwk(crypto.generate_private_key())],
                              scopes=["resources:read"], provider=None, actor="t")


def test_weak_if_none_match_gives_304(api, resource):
    etag = api.get(f"/api/v1/resolve/{resource.ucri}")["ETag"]
    assert api.get(f"/api/v1/resolve/{resource.ucri}", HTTP_IF_NONE_MATCH=f"W/{etag}").status_code == 304


@pytest.mark.parametrize("query", ["min_fp64_tflops=١", "min_memory_gb=１", "min_memory_gb=1_000", "limit=5_0",
                                   "limit=٥", "min_green_ratio=2", "max_pue=-1", "min_fp16_tflops=%2B5"])
def test_discovery_numbers_are_plain_ascii(reader, resource, query):
    response = reader.get(f"/api/v1/resources?{query}")
    assert response.status_code == 400 and response.json()["code"] == "invalid_filter", query


@override_settings(CIR_RESOLVE_RATE="2/min")
def test_the_html_page_and_provider_records_are_rate_limited(client, api, resource):
    assert [client.get(f"/r/{resource.ucri}").status_code for _ in range(3)] == [200, 200, 429]
    assert int(client.get(f"/r/{resource.ucri}")["Retry-After"]) >= 1
    from django.core.cache import cache

    cache.clear()
    statuses = [api.get(f"/api/v1/providers/{resource.provider.prefix}").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_each_provider_action_is_exactly_one_version(node):
    onboarded = credentials.onboard(name="Versioned", uscc=factories.valid_uscc(), code="VER1", actor="t")
    prefix = onboarded.provider.prefix
    entries = lambda: list(OutboxEntry.objects.filter(key=prefix).order_by("seq").values_list(  # noqa: E731
        "version", "record__credential_status"))
    assert entries() == [(1, "valid")]
    credentials.set_status(provider=onboarded.provider, status="suspended", reason="r", actor="t")
    assert entries() == [(1, "valid"), (2, "suspended")]
    credentials.set_status(provider=onboarded.provider, status="revoked", reason="r", actor="t")
    assert entries()[-1] == (3, "revoked")


def test_public_provider_record_carries_its_version(api, node):
    onboarded = credentials.onboard(name="Versioned", uscc=factories.valid_uscc(), code="VER2", actor="t")
    assert api.get(f"/api/v1/providers/{onboarded.provider.prefix}").json()["version"] == 1


def test_a_garbage_key_encryption_key_is_refused_at_start(monkeypatch):
    import subprocess
    import sys

    from tests.support.processes import ROOT, child_env

    env = child_env(DEBUG="0", SECRET_KEY="x" * 50, CIR_KEY_ENCRYPTION_KEY="not-a-fernet-key",
                    DATABASE_URL="sqlite:////tmp/unused.sqlite3")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "CIR_KEY_ENCRYPTION_KEY" in result.stderr
    env.pop("CIR_KEY_ENCRYPTION_KEY")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "CIR_KEY_ENCRYPTION_KEY is required" in result.stderr


# A trailing newline slipped past patterns anchored with ``$`` (found by review): 500 on resolve.
def test_a_newline_inside_a_ucri_is_a_400_in_the_batch_resolve(api, resource):
    prefix, body = resource.ucri.split("/")
    response = api.post("/api/v1/resolve", {"ucris": [f"{prefix}\n/{body}"]}, format="json")
    assert response.status_code == 200
    assert response.json()["results"][f"{prefix}\n/{body}"]["code"] == "ucri_malformed"


def test_a_newline_inside_a_ucri_is_a_400_page(client, resource):
    prefix, body = resource.ucri.split("/")
    response = client.get("/", {"q": f"{prefix}\n/{body}"})
    assert response.status_code == 400


def test_a_prefix_with_a_newline_is_not_a_prefix():
    from registry import identifiers

    assert not identifiers.is_prefix("86.52\n")
    with pytest.raises(identifiers.UCRIError):
        identifiers.canonicalize("86.52\n/7ZK3M9Q2AB4C-L")


@pytest.mark.parametrize("pattern, sample", [
    ("registry.identifiers._PREFIX_RE", "86.52"),
    ("registry.filters.ASCII_NUMBER", "1.5"),
    ("registry.api.serializers.RFC3339", "2026-01-01T00:00:00Z"),
    ("registry.availability.RFC3339", "2026-01-01T00:00:00Z"),
    ("identity.oauth.CLIENT_ID", "scheduler-1"),
    ("federation.sync._SHA256_HEX", "a" * 64),
    ("federation.checkpoints._HEAD", "a" * 64),
])
def test_validation_patterns_match_the_whole_text(pattern, sample):
    import importlib

    module, name = pattern.rsplit(".", 1)
    regex = getattr(importlib.import_module(module), name)
    match = regex.fullmatch if regex.pattern[0] != "^" else regex.match
    assert match(sample) and not match(sample + "\n")


def _cursor(payload: dict) -> str:
    import base64

    raw = json.dumps(payload).encode()  # keeps \ud800 as an escape, as a forger would send it
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("order, values", [
    ("ucri", ["\ud800"]),
    ("pue", ["1.2", "\ud800"]),
    ("updated_at", ["9999-12-31T23:59:59-05:00", "86.52.X/Y"]),
    ("updated_at", ["0001-01-01T00:00:00+05:00", "86.52.X/Y"]),
])
def test_forged_cursors_are_400_not_500(reader, client, resource, order, values):
    cursor = _cursor({"o": order, "v": values})
    response = reader.get("/api/v1/resources", {"order": order, "cursor": cursor})
    assert response.status_code == 400 and response.json()["code"] == "invalid_filter"
