"""The single-use ``jti`` store (CONTRACT §5) and the per-process copies of committed rows that the token
paths read on every request: this node's record and its keys (issue 9)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.errors import ApplicationError
from identity import crypto, keys, replay, tokens
from identity.models import NodeKey, Purpose, SeenJti
from registry import services

HOUR = 3600


# The replay store ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_jti_stays_refused_however_many_others_arrive(node):
    # Django's database cache culls live entries beyond MAX_ENTRIES (300), which let replays through.
    horizon = int(time.time()) + HOUR
    assert replay.remember_once("client_assertion", "first", horizon)
    for i in range(400):
        assert replay.remember_once("client_assertion", f"other-{i}", horizon)
    assert not replay.remember_once("client_assertion", "first", horizon)
    assert SeenJti.objects.count() == 401


@pytest.mark.django_db
def test_token_kinds_do_not_share_jtis(node):
    horizon = int(time.time()) + 120
    assert replay.remember_once("client_assertion", "j", horizon)
    assert replay.remember_once("dpop_proof", "j", horizon)
    assert not replay.remember_once("dpop_proof", "j", horizon)


@pytest.mark.django_db
def test_an_expired_entry_is_taken_over_and_purged(node):
    horizon = int(time.time()) + 120
    assert replay.remember_once("dpop_proof", "j", horizon)
    SeenJti.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert replay.remember_once("dpop_proof", "j", horizon)  # its token can no longer verify anyway
    assert not replay.remember_once("dpop_proof", "j", horizon)
    assert replay.remember_once("dpop_proof", "k", horizon)
    SeenJti.objects.filter(pk=replay._digest("dpop_proof", "j")).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert replay.purge_expired() == 1
    assert list(SeenJti.objects.values_list("pk", flat=True)) == [replay._digest("dpop_proof", "k")]


@pytest.mark.django_db
def test_a_shared_cache_holds_them_when_configured(node):
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                               "LOCATION": "replay-test"}}):
        horizon = int(time.time()) + 120
        assert replay.remember_once("dpop_proof", "j", horizon)
        assert not replay.remember_once("dpop_proof", "j", horizon)
    assert not SeenJti.objects.exists()


# Decoded keys -------------------------------------------------------------------------------------------

def test_an_accepted_jwk_is_parsed_once_and_the_caller_gets_its_own_copy():
    jwk = crypto.public_jwk(crypto.generate_private_key())
    key, normalised = crypto.load_public_jwk(jwk)
    normalised["kid"] = "changed by the caller"
    again, normalised_again = crypto.load_public_jwk(dict(jwk))
    assert again is key and normalised_again == jwk
    with pytest.raises(crypto.KeyError_):
        crypto.load_public_jwk({**jwk, "d": "AAAA"})
    with pytest.raises(crypto.KeyError_):
        crypto.load_public_jwk({**jwk, "x": ["not", "a", "string"]})


@pytest.mark.django_db
def test_a_node_key_is_decrypted_once_per_encryption_key(node):
    node_key, private = keys.signing_key(Purpose.HANDOFF)
    assert keys.private_key(node_key) is private
    with override_settings(CIR_KEY_ENCRYPTION_KEY=None, SECRET_KEY="another secret"), pytest.raises(RuntimeError):
        keys.private_key(node_key)


# Per-process copies of committed rows (only outside transactions, so these tests commit) -----------

def _foreign_key(purpose: str, activates_at: dt.datetime) -> tuple[NodeKey, crypto.PrivateKey]:
    """A key row written the way another worker's rotation writes it: this process is not told."""
    private = crypto.generate_private_key()
    jwk = crypto.public_jwk(private)
    row = NodeKey.objects.create(kid=jwk["kid"], purpose=purpose, alg="ES256", public_jwk=jwk,
                                 private_key_encrypted=keys._encrypt(private), created_at=timezone.now(),
                                 activates_at=activates_at)
    return row, private


def _access_token(node, private, kid: str) -> str:
    now = int(time.time())
    return crypto.sign({"iss": node.entity_id, "aud": node.entity_id, "sub": "c", "client_id": "c", "iat": now,
                        "exp": now + 60, "jti": f"j{time.monotonic_ns()}", "scope": "resources:read"},
                       private, typ="at+jwt", kid=kid)


def _verifies(node, token: str) -> bool:
    try:
        tokens.verify(token, tokens.ACCESS_TOKEN, keys=keys.verification_keys(Purpose.ACCESS_TOKEN),
                      audiences=[node.entity_id], issuer=node.entity_id)
    except tokens.TokenError:
        return False
    return True


@pytest.mark.django_db(transaction=True)
def test_signing_and_verification_keys_come_from_the_process_copy(node):
    keys.ensure_keys()
    signer, private = keys.signing_key(Purpose.ACCESS_TOKEN)
    token = _access_token(node, private, signer.kid)
    with CaptureQueriesContext(connection) as queries:
        assert keys.signing_key(Purpose.ACCESS_TOKEN)[0].kid == signer.kid
        assert _verifies(node, token)
    assert len(queries) == 0


@pytest.mark.django_db(transaction=True)
def test_reads_inside_a_transaction_neither_use_nor_fill_it(node):
    keys.ensure_keys()
    keys.forget_cached_keys()
    with transaction.atomic():
        keys.signing_key(Purpose.HANDOFF)
        with CaptureQueriesContext(connection) as queries:
            keys.signing_key(Purpose.HANDOFF)
        assert len(queries) >= 1
    assert Purpose.HANDOFF not in keys._cached_keys


@pytest.mark.django_db(transaction=True)
def test_a_key_another_worker_publishes_is_used_on_time(node):
    keys.ensure_keys()
    current, private = keys.signing_key(Purpose.ACCESS_TOKEN)
    assert _verifies(node, _access_token(node, private, current.kid))
    upcoming, upcoming_private = _foreign_key(Purpose.ACCESS_TOKEN, timezone.now() + dt.timedelta(hours=1))
    # Published a JWKS max-age ahead: until then this process keeps signing with the current key ...
    assert keys.signing_key(Purpose.ACCESS_TOKEN)[0].kid == current.kid
    # ... and a token naming a kid it has not seen makes it read the keys again.
    assert _verifies(node, _access_token(node, upcoming_private, upcoming.kid))
    assert upcoming.kid in {k.kid for k in keys._cached_keys[Purpose.ACCESS_TOKEN][1]}


@pytest.mark.django_db(transaction=True)
def test_superseded_and_unpublished_keys_follow_the_clock_as_in_the_database(node):
    keys.ensure_keys()
    old, old_private = keys.signing_key(Purpose.ACCESS_TOKEN)
    NodeKey.objects.filter(pk=old.pk).update(activates_at=timezone.now() - dt.timedelta(hours=2))
    lifetime = keys.TOKEN_LIFETIME[Purpose.ACCESS_TOKEN] + dt.timedelta(seconds=60)
    newer, _ = _foreign_key(Purpose.ACCESS_TOKEN, timezone.now() - lifetime - dt.timedelta(seconds=5))
    keys.forget_cached_keys()
    served = {k.kid for k in keys._published_now(Purpose.ACCESS_TOKEN, keys._purpose_keys(
        Purpose.ACCESS_TOKEN, timezone.now(), cacheable=True), timezone.now())}
    assert served == {k.kid for k in keys.published((Purpose.ACCESS_TOKEN,))} == {newer.kid}
    assert keys.signing_key(Purpose.ACCESS_TOKEN)[0].kid == newer.kid
    assert not _verifies(node, _access_token(node, old_private, old.kid))  # superseded past its tokens' life


@pytest.mark.django_db(transaction=True)
def test_creating_or_pruning_a_key_here_forgets_the_copy(node):
    keys.ensure_keys()
    keys.signing_key(Purpose.HANDOFF)
    assert keys._cached_keys
    keys.rotate(Purpose.HANDOFF, force=True)
    assert not keys._cached_keys


@pytest.mark.django_db(transaction=True)
def test_this_node_is_read_once_per_process_outside_transactions(node):
    services.forget_this_node()
    services.this_node()
    with CaptureQueriesContext(connection) as queries:
        first, second = services.this_node(), services.this_node()
    assert len(queries) == 0
    assert first is not second and first.entity_id == second.entity_id == node.entity_id
    first.entity_id = "changed by the caller"
    assert services.this_node().entity_id == node.entity_id
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        services.this_node()
    assert len(queries) == 1


@pytest.mark.django_db(transaction=True)
def test_an_uninitialised_node_is_never_remembered():
    services.forget_this_node()
    with pytest.raises(ApplicationError):
        services.this_node()
    platform, _ = services.node_init(role="national", code=None, entity_id="http://127.0.0.1:8099")
    assert services.this_node().entity_id == platform.entity_id
