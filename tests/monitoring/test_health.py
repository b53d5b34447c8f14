"""/healthz and /readyz (CONTRACT §12): liveness checks nothing; readiness names the failing part,
reads the trust chain from local state only (every test forbids calls to other nodes) and is answered
before the host check and the HTTPS redirect, as orchestrators probe a worker's own address."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.fernet import Fernet
from django.core.cache import cache
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from federation import chains, clients, trust
from federation.models import Peer, TrustAnchor
from identity import keys
from identity.models import NodeKey
from monitoring import health
from tests.support import factories

pytestmark = pytest.mark.django_db
NATIONAL = "http://127.0.0.1:8000"
ANCHOR_KEY = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "anchor-key-1"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a probe called another node: {args!r}")

    for name in ("entity_configuration", "subordinate_statement", "fetch_jwt", "change_page", "access_token"):
        monkeypatch.setattr(clients, name, refuse)


@pytest.fixture
def unreachable_database(monkeypatch):
    """The default database's settings, pointed at a port nothing listens on: a real driver error."""
    broken = connections.create_connection("default")
    broken.settings_dict = {**broken.settings_dict, "HOST": "127.0.0.1", "PORT": "1"}
    monkeypatch.setattr(health, "_connection", lambda: broken)
    yield broken
    broken.close()


def readyz(client, **extra):
    response = client.get("/readyz", **extra)
    body = response.json()
    assert set(body["checks"]) <= set(health.CHECKS)
    assert body["failing"] == [name for name, check in body["checks"].items() if check["status"] == "failing"]
    return response, body


def with_superior(*, configuration_expires_at=None, **fields) -> Peer:
    TrustAnchor.objects.create(entity_id=NATIONAL, jwks=[ANCHOR_KEY])
    return Peer.objects.create(entity_id=NATIONAL, relation="superior",
                               configuration_expires_at=configuration_expires_at, **fields)


def cache_chain(expires_at: dt.datetime) -> None:
    cache.set(chains.CACHE_PREFIX + NATIONAL, trust.TrustChain(
        subject=NATIONAL, anchor=NATIONAL, statements=({},), metadata={}, policy={}, jwks_by_entity={},
        expires_at=int(expires_at.timestamp())), timeout=600)


# Liveness -------------------------------------------------------------------------------------------

def test_healthz_answers_while_the_process_runs_whatever_the_database(client, unreachable_database):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


# Readiness ------------------------------------------------------------------------------------------

def test_ready_when_every_part_is(client, ready_node):
    response, body = readyz(client)
    assert response.status_code == 200
    assert body["status"] == "ready" and body["failing"] == []
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok", "cache": "ok", "broker": "not_configured", "keys": "ok", "trust_chain": "ok"}
    assert "anchors its own chains" in body["checks"]["trust_chain"]["detail"]


def test_an_unreachable_database_is_named(client, ready_node, unreachable_database):
    response, body = readyz(client)
    assert response.status_code == 503
    assert body["status"] == "unavailable" and body["failing"] == ["database"]
    assert body["checks"]["database"] == {"status": "failing", "detail": "unreachable (OperationalError)"}
    # What needs the database is not run against it, and not named as failing on its own account.
    assert body["checks"]["keys"]["status"] == body["checks"]["trust_chain"]["status"] == "skipped"
    assert "127.0.0.1" not in response.content.decode()  # no addresses or driver messages in the body


def test_a_node_without_keys_is_not_ready(client, db):
    factories.node()  # initialised, but no key was ever made (cir_node_init makes them)
    response, body = readyz(client)
    assert response.status_code == 503 and body["failing"] == ["keys"]
    detail = body["checks"]["keys"]["detail"]
    assert detail.startswith("no active signing key for ")
    assert set(detail.split("for ", 1)[1].split(", ")) == {"access_token", "credential", "handoff", "federation"}
    assert not NodeKey.objects.exists()  # the probe reads; it never creates keys


def test_one_missing_purpose_and_an_uninitialised_node(client, db):
    response, body = readyz(client)
    assert response.status_code == 503 and body["checks"]["keys"]["detail"].startswith("node not initialised")
    factories.node()
    keys.ensure_keys(keys.API_PURPOSES)  # no federation key
    response, body = readyz(client)
    assert response.status_code == 503 and body["checks"]["keys"]["detail"] == "no active signing key for federation"


def test_keys_that_do_not_decrypt(client, ready_node):
    keys._DECRYPTED.clear()
    with override_settings(CIR_KEY_ENCRYPTION_KEY=Fernet.generate_key().decode()):
        response, body = readyz(client)
    keys._DECRYPTED.clear()
    assert response.status_code == 503 and body["failing"] == ["keys"]
    assert "CIR_KEY_ENCRYPTION_KEY" in body["checks"]["keys"]["detail"]


def test_a_valid_cached_chain_to_the_anchor(client, ready_node):
    with_superior()
    expires = timezone.now() + dt.timedelta(minutes=50)
    cache_chain(expires)
    response, body = readyz(client)
    assert response.status_code == 200
    assert body["checks"]["trust_chain"]["detail"].startswith("valid until ")


def test_an_invalid_chain_is_named(client, ready_node):
    """The last verification failed (the background refresh records it on the superior's row): that
    wins over an older cached chain."""
    with_superior(consecutive_failures=1, last_error="invalid_signature: statement 1: the signature does not verify")
    cache_chain(timezone.now() + dt.timedelta(minutes=50))
    response, body = readyz(client)
    assert response.status_code == 503 and body["failing"] == ["trust_chain"]
    assert body["checks"]["trust_chain"] == {"status": "failing", "detail": "invalid: invalid_signature"}


def test_an_expired_chain_and_one_never_verified(client, ready_node):
    superior = with_superior()
    cache_chain(timezone.now() - dt.timedelta(minutes=1))
    response, body = readyz(client)
    assert response.status_code == 503 and body["checks"]["trust_chain"]["detail"].startswith("expired at ")

    cache.clear()
    response, body = readyz(client)
    assert response.status_code == 503 and body["checks"]["trust_chain"]["detail"].startswith("not verified")

    # Not cached (evicted, or a fresh cache), but the superior's configuration was verified through the
    # chain and has not expired: ready, without rebuilding the chain over the network.
    Peer.objects.filter(pk=superior.pk).update(configuration_expires_at=timezone.now() + dt.timedelta(hours=3))
    response, body = readyz(client)
    assert response.status_code == 200 and body["checks"]["trust_chain"]["detail"].startswith("not cached")


def test_a_superior_without_a_pinned_anchor(client, ready_node):
    Peer.objects.create(entity_id=NATIONAL, relation="superior")
    response, body = readyz(client)
    assert response.status_code == 503 and body["checks"]["trust_chain"]["detail"] == "no trust anchor pinned"


def test_subordinates_chains_are_not_part_of_readiness(client, ready_node):
    Peer.objects.create(entity_id="http://127.0.0.1:8011", relation="subordinate", prefixes=["86.52.11"],
                        consecutive_failures=4, last_error="invalid_signature: a forged configuration")
    response, _ = readyz(client)
    assert response.status_code == 200


def test_excluded_checks_are_left_out(client, ready_node):
    with_superior(consecutive_failures=1, last_error="untrusted_anchor: no pinned anchor")
    assert readyz(client)[0].status_code == 503
    response, body = readyz(client, data={"exclude": ["trust_chain", "no_such_check"]})
    assert response.status_code == 200 and "trust_chain" not in body["checks"]


def test_the_broker_when_one_is_configured(client, ready_node):
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        response, body = readyz(client)
    assert response.status_code == 503 and body["failing"] == ["broker"]
    assert body["checks"]["broker"]["detail"].startswith("unreachable (")


def test_a_reachable_broker(client, ready_node):
    url = "redis://127.0.0.1:6379/0"
    with override_settings(CELERY_BROKER_URL=url):
        check = health.broker()
    if check.status != "ok":
        pytest.skip(f"no Redis on 127.0.0.1:6379 ({check.detail}); scripts/test starts one")
    with override_settings(CELERY_BROKER_URL=url):
        response, body = readyz(client)
    assert response.status_code == 200 and body["checks"]["broker"]["status"] == "ok"


# Probes reach the views whatever the host name and scheme ----------------------------------------------

@override_settings(SECURE_SSL_REDIRECT=True, ALLOWED_HOSTS=["cir.gz.example.cn"])
def test_probes_are_answered_before_the_host_check_and_the_https_redirect(client, ready_node):
    for path in ("/healthz", "/readyz"):
        response = client.get(path, HTTP_HOST="10.0.3.17:8000")
        assert response.status_code == 200, (path, response.status_code)
    # Everything else still goes through both.
    assert client.get("/metrics", HTTP_HOST="10.0.3.17:8000").status_code == 400
    assert client.get("/metrics", HTTP_HOST="cir.gz.example.cn").status_code == 301
    assert client.head("/healthz", HTTP_HOST="10.0.3.17:8000").status_code == 200
