"""Node key rotation (publish before use, keep until expiry), provider credentials and their life
cycle, the operator commands, and the audit trail of every key and credential event."""

from __future__ import annotations

import datetime as dt
import json
import zlib

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from core import audit
from core.models import AuditEntry
from identity import credentials, crypto, keys, statuslists, tokens
from identity.models import NodeKey, ProviderCredential, Purpose, StatusList
from registry.models import Provider
from tests.support import auth, factories

pytestmark = pytest.mark.django_db


def _access_token(now: dt.datetime, node) -> str:
    issued = int(now.timestamp())
    claims = {"iss": node.entity_id, "aud": node.entity_id, "sub": "c", "client_id": "c", "iat": issued,
              "exp": issued + 300, "jti": f"j{issued}", "scope": "resources:read"}
    return keys.sign(Purpose.ACCESS_TOKEN, claims, typ="at+jwt", now=now).token


def _verifies(token: str, node, now: dt.datetime) -> bool:
    try:
        tokens.verify(token, tokens.ACCESS_TOKEN, keys=keys.verification_keys(Purpose.ACCESS_TOKEN, now=now),
                      audiences=[node.entity_id], issuer=node.entity_id, now=int(now.timestamp()))
    except tokens.TokenError:
        return False
    return True


def test_rotation_publishes_before_use_and_keeps_until_expiry(node):
    t0 = timezone.now()
    old_token = _access_token(t0, node)
    old_kid = tokens.parse_unverified(old_token, tokens.ACCESS_TOKEN)[0]["kid"]

    new_key = keys.rotate(Purpose.ACCESS_TOKEN, now=t0, force=True)
    assert new_key.activates_at - t0 >= keys.jwks_max_age()  # published one refresh interval before use
    published = {k["kid"] for k in keys.public_jwks(now=t0)}
    assert {old_kid, new_key.kid} <= published
    assert keys.signing_key(Purpose.ACCESS_TOKEN, now=t0)[0].kid == old_kid  # not used yet

    switch = new_key.activates_at
    assert keys.signing_key(Purpose.ACCESS_TOKEN, now=switch)[0].kid == new_key.kid
    # A token signed just before the switch still verifies during the overlap...
    last_old = _access_token(switch - dt.timedelta(seconds=1), node)
    assert _verifies(last_old, node, switch + dt.timedelta(seconds=30))
    # ...and the old key is unpublished once every token it signed has expired: then it fails.
    after = switch + keys.TOKEN_LIFETIME[Purpose.ACCESS_TOKEN] + dt.timedelta(seconds=61)
    assert old_kid not in {k["kid"] for k in keys.public_jwks(now=after)}
    assert not _verifies(last_old, node, after)
    assert _verifies(_access_token(after, node), node, after)
    assert keys.prune(now=after) >= 1
    assert not NodeKey.objects.filter(kid=old_kid).exists()
    assert AuditEntry.objects.filter(action="key.removed", target_key=old_kid).exists()


def test_rotation_waits_for_its_period_unless_forced(node):
    keys.ensure_keys()
    assert keys.rotate(Purpose.HANDOFF) is None
    assert keys.rotate(Purpose.HANDOFF, force=True) is not None
    assert keys.rotate(Purpose.HANDOFF, force=True) is None  # a successor is already waiting


def test_private_keys_are_encrypted_at_rest(node):
    key, private = keys.signing_key(Purpose.CREDENTIAL)
    stored = bytes(key.private_key_encrypted)
    assert b"PRIVATE KEY" not in stored
    assert crypto.private_pem(private) not in stored
    with override_settings(CIR_KEY_ENCRYPTION_KEY=Fernet.generate_key().decode()), pytest.raises(RuntimeError):
        keys.private_key(key)


def test_jwks_endpoint_has_no_private_material(api, node):
    body = api.get("/.well-known/jwks.json").json()
    assert body["keys"]
    assert all("d" not in k for k in body["keys"])


def test_cir_keys_rotate_command(node, capsys):
    keys.ensure_keys()
    call_command("cir_keys_rotate", "--force", "--json")
    result = json.loads(capsys.readouterr().out)
    assert set(result["rotated"]) == {"access_token", "credential", "handoff"}
    assert all(v["kid"] for v in result["rotated"].values())


# Credentials ------------------------------------------------------------------------------------

@pytest.fixture
def onboarded(node):
    return credentials.onboard(name="Credential Co", uscc=factories.valid_uscc(), code="CR01", actor="user:op")


def test_credential_claims(onboarded):
    claims = tokens.verify(onboarded.credential.token, tokens.PROVIDER_CREDENTIAL,
                           keys=keys.verification_keys(Purpose.CREDENTIAL), issuer="http://127.0.0.1:8052").claims
    assert claims["sub"] == onboarded.provider.prefix
    assert set(claims) >= {"iss", "sub", "iat", "nbf", "exp", "jti", "cnf", "provider", "status"}
    assert claims["provider"] == {"name": "Credential Co", "uscc": onboarded.provider.uscc}
    assert claims["cnf"]["jwk"] == crypto.public_jwk(crypto.load_private_jwk(onboarded.private_jwk))
    provider = Provider.objects.get(pk=onboarded.provider.pk)
    assert provider.credential == onboarded.credential.token
    assert provider.credential_status == "valid"


def test_status_indexes_are_random_and_unique(node):
    indexes = [credentials.onboard(name=f"P{i}", uscc=factories.valid_uscc(), code=f"RI{i}", actor="t")
               .credential.status_index for i in range(6)]
    assert len(set(indexes)) == 6
    assert indexes != sorted(indexes) or max(indexes) > 100


def test_revocation_is_final(onboarded):
    from core.errors import ApplicationError

    credentials.set_status(provider=onboarded.provider, status="revoked", reason="fraud", actor="user:op")
    with pytest.raises(ApplicationError) as excinfo:
        credentials.set_status(provider=onboarded.provider, status="valid", reason="oops", actor="user:op")
    assert excinfo.value.code == "provider_revoked"
    status_list = StatusList.objects.get(pk=onboarded.credential.status_list_id)
    payload = tokens.parse_unverified(statuslists.current_token(status_list), tokens.STATUS_LIST)[1]
    packed = zlib.decompress(crypto.b64url_decode(payload["status_list"]["lst"]))
    assert statuslists.unpack(packed)[onboarded.credential.status_index] == statuslists.REVOKED


def test_resolve_record_shows_credential_status_and_etag_changes(api, onboarded):
    resource = factories.resource(factories.site(onboarded.provider))
    first = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert first.json()["provider"]["credential_status"] == "valid"
    credentials.set_status(provider=onboarded.provider, status="suspended", reason="audit", actor="user:op")
    second = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert second.json()["provider"]["credential_status"] == "suspended"
    assert second["ETag"] != first["ETag"]


def test_expired_credential_shows_as_expired(api, onboarded):
    Provider.objects.filter(pk=onboarded.provider.pk).update(credential_expires_at=timezone.now() - dt.timedelta(1))
    assert api.get(f"/api/v1/providers/{onboarded.provider.prefix}").json()["credential_status"] == "expired"


def test_renewal_before_expiry(onboarded):
    soon = onboarded.credential.expires_at - dt.timedelta(days=3)
    assert credentials.renew_due(now=onboarded.credential.issued_at) == 0
    assert credentials.renew_due(now=soon) == 1
    provider = Provider.objects.get(pk=onboarded.provider.pk)
    assert provider.credential != onboarded.credential.token
    assert ProviderCredential.objects.filter(provider=provider).count() == 2
    assert credentials.renew_due(now=soon) == 0


def test_provider_key_rotation_with_overlap_over_the_api(onboarded):
    old_machine = auth.Machine(onboarded.provider.prefix, crypto.load_private_jwk(onboarded.private_jwk))
    api = auth.bearer_client(old_machine)
    new_private = crypto.generate_private_key()
    response = api.post(f"/api/v1/providers/{onboarded.provider.prefix}/keys",
                        {"jwk": crypto.public_jwk(new_private)}, format="json")
    assert response.status_code == 201, response.content
    new_credential = response.json()["credential"]
    assert new_credential != onboarded.credential.token
    new_machine = auth.Machine(onboarded.provider.prefix, new_private)
    # During the overlap both keys authenticate.
    assert auth.bearer_client(new_machine).get("/api/v1/resources").status_code == 200
    assert auth.bearer_client(old_machine).get("/api/v1/resources").status_code == 200
    # After the overlap the old credential is revoked (status list) and its key no longer works.
    later = timezone.now() + dt.timedelta(days=2)
    assert credentials.revoke_overlapped(now=later) == 1
    old = ProviderCredential.objects.get(pk=onboarded.credential.pk)
    assert old.status == "revoked"
    with pytest.raises(AssertionError):
        auth.bearer_client(old_machine)
    assert auth.bearer_client(new_machine).get("/api/v1/resources").status_code == 200
    actor = f"client:{onboarded.provider.prefix}"
    assert AuditEntry.objects.filter(action="provider_key.rotated", actor=actor).exists()


def test_key_rotation_rejects_bad_keys_and_other_callers(onboarded, node):
    owner = auth.bearer_client(auth.Machine(onboarded.provider.prefix, crypto.load_private_jwk(onboarded.private_jwk)))
    url = f"/api/v1/providers/{onboarded.provider.prefix}/keys"
    fresh = crypto.generate_private_key
    for body in ({"jwk": {"kty": "RSA", "n": "x", "e": "AQAB"}}, {"jwk": crypto.private_jwk(fresh())},
                 {"jwk": "garbage"}, {}, {"jwk": crypto.public_jwk(fresh()), "x": 1}):
        response = owner.post(url, body, format="json")
        assert response.status_code == 400, body
    other = credentials.onboard(name="Other", uscc=factories.valid_uscc(), code="OT01", actor="t")
    intruder = auth.bearer_client(auth.Machine(other.provider.prefix, crypto.load_private_jwk(other.private_jwk)))
    response = intruder.post(url, {"jwk": crypto.public_jwk(crypto.generate_private_key())}, format="json")
    assert response.status_code == 404
    bound = auth.bearer_client(auth.register("automation", "resources:read resources:write",
                                             provider=onboarded.provider))
    assert bound.post(url, {"jwk": crypto.public_jwk(crypto.generate_private_key())}, format="json").status_code == 404


def test_every_credential_event_is_audited_with_the_actor(onboarded):
    credentials.set_status(provider=onboarded.provider, status="suspended", reason="inspection", actor="user:alice")
    actions = {(e.action, e.actor) for e in AuditEntry.objects.all()}
    assert ("provider.approved", "user:op") in actions
    assert ("credential.issued", "user:op") in actions
    assert ("provider_key.registered", "user:op") in actions
    assert ("credential.suspended", "user:alice") in actions
    assert audit.verify_chain() is None


# Commands -----------------------------------------------------------------------------------------

def test_cir_provider_add_and_status_commands(node, capsys, tmp_path):
    call_command("cir_provider_add", "--name", "Cmd Co", "--uscc", factories.valid_uscc(), "--code", "CMD1",
                 "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["prefix"] == "86.52.CMD1"
    assert result["credential"].count(".") == 2
    assert result["private_jwk"]["d"]
    key_file = tmp_path / "key.pem"
    private = crypto.generate_private_key()
    from cryptography.hazmat.primitives import serialization

    key_file.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    call_command("cir_provider_add", "--name", "Pem Co", "--uscc", factories.valid_uscc(), "--code", "PEM1",
                 "--jwk", str(key_file), "--json")
    result = json.loads(capsys.readouterr().out)
    assert "private_jwk" not in result
    call_command("cir_provider_status", "--prefix", "86.52.PEM1", "--set", "suspended", "--reason", "check", "--json")
    assert json.loads(capsys.readouterr().out)["credential_status"] == "suspended"


@pytest.mark.parametrize(
    "args",
    [["--name", "X", "--uscc", "123", "--code", "BAD1"],
     ["--name", "X", "--uscc", "91110108551385082Q", "--code", "toolongcode"],
     ["--name", "X", "--uscc", "91110108551385082Q", "--code", "J1", "--jwk", "/nonexistent"]],
)
def test_cir_provider_add_refuses_bad_arguments(node, args):
    with pytest.raises(CommandError):
        call_command("cir_provider_add", *args)


def test_cir_client_add_creates_then_updates(node, capsys, tmp_path):
    jwk_file = tmp_path / "client.jwk"
    jwk_file.write_text(json.dumps(crypto.public_jwk(crypto.generate_private_key())))
    call_command("cir_client_add", "--client-id", "sched", "--jwk", str(jwk_file), "--scope", "resources:read",
                 "--json")
    assert json.loads(capsys.readouterr().out)["created"] is True
    call_command("cir_client_add", "--client-id", "sched", "--jwk", str(jwk_file), "--scope",
                 "resources:read handoff:request", "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["created"] is False and result["scope"] == "resources:read handoff:request"
    with pytest.raises(CommandError):
        call_command("cir_client_add", "--client-id", "w", "--jwk", str(jwk_file), "--scope", "resources:write")




def test_cir_credentials_issue_fills_in_missing_credentials(node, capsys, tmp_path):
    with_credential = credentials.onboard(name="Has One", uscc=factories.valid_uscc(), code="HAS1", actor="t")
    bare = factories.provider(code="BARE")
    call_command("cir_credentials_issue", "--missing", "--keys-out", str(tmp_path), "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["prefixes"] == [bare.prefix]
    assert Provider.objects.get(pk=bare.pk).credential_status == "valid"
    assert Provider.objects.get(pk=with_credential.provider.pk).credential == with_credential.credential.token
    private_jwk = json.loads((tmp_path / f"{bare.prefix}.jwk").read_text())
    machine = auth.Machine(bare.prefix, crypto.load_private_jwk(private_jwk))
    assert auth.bearer_client(machine).get("/api/v1/resources").status_code == 200
    call_command("cir_credentials_issue", "--missing", "--json")
    assert json.loads(capsys.readouterr().out)["issued"] == 0
