"""Provider keys and signed provider credentials: issue, renew, rotate, suspend, revoke (CONTRACT §5)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from core import audit
from core.errors import ApplicationError
from registry import services as registry_services
from registry.models import Provider, Source
from registry.services import this_node

from . import crypto, keys, statuslists, tokens
from .models import CredentialStatus, ProviderCredential, ProviderKey, Purpose

STATUS_VALUES = {CredentialStatus.VALID: statuslists.VALID, CredentialStatus.SUSPENDED: statuslists.SUSPENDED,
                 CredentialStatus.REVOKED: statuslists.REVOKED}
PROVIDER_STATUS_FOR = {CredentialStatus.VALID: Provider.Status.ACTIVE,
                       CredentialStatus.SUSPENDED: Provider.Status.SUSPENDED,
                       CredentialStatus.REVOKED: Provider.Status.REVOKED}


def parse_public_key(value: Any) -> dict[str, Any]:
    """A provider's public key as a JWK object, a JWK JSON string or a PEM; returns the normalised JWK."""
    import json

    try:
        if isinstance(value, str) and "-----BEGIN" in value:
            return crypto.load_public_pem(value)[1]
        if isinstance(value, str | bytes):
            value = json.loads(value)
        return crypto.load_public_jwk(value)[1]
    except (crypto.KeyError_, ValueError) as exc:
        raise ApplicationError("invalid_key", f"not an acceptable public key: {exc}", status=400) from exc


def register_key(*, provider: Provider, jwk: dict[str, Any], actor: str) -> ProviderKey:
    jwk = parse_public_key(jwk)
    with transaction.atomic():
        key, created = ProviderKey.objects.get_or_create(provider=provider, kid=jwk["kid"], defaults={"jwk": jwk})
        if not created and key.superseded_at is not None:
            raise ApplicationError("key_reused", "a superseded key cannot be registered again", status=409)
        if created:
            audit.record(actor=actor, action="provider_key.registered", target_type="provider",
                         target_key=provider.prefix, data={"kid": key.kid})
    return key


def issue(*, provider: Provider, key: ProviderKey, actor: str, now: dt.datetime | None = None,
          record: bool = True) -> ProviderCredential:
    """Sign a new credential binding ``key`` to the provider and make it the provider's current one
    (``record=False``: the caller stores it on the provider, e.g. during approval)."""
    now = now or timezone.now()
    if provider.status == Provider.Status.REVOKED:
        raise ApplicationError("provider_revoked", "a revoked provider gets no credential", status=409)
    lifetime = dt.timedelta(days=min(settings.CIR_CREDENTIAL_LIFETIME_DAYS, 90))
    with transaction.atomic():
        status_list, index = statuslists.allocate()
        jti = uuid.uuid4().hex
        issued = int(now.timestamp())
        claims = {
            "iss": this_node().entity_id,
            "sub": provider.prefix,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime.total_seconds()),
            "jti": jti,
            "cnf": {"jwk": key.jwk},
            "provider": {"name": provider.name, "uscc": provider.uscc},
            "status": {"status_list": {"idx": index, "uri": statuslists.uri_for(status_list)}},
        }
        token = keys.sign(Purpose.CREDENTIAL, claims, typ="provider-credential+jwt", now=now).token
        credential = ProviderCredential.objects.create(
            jti=jti, provider=provider, key=key, token=token, issued_at=now,
            expires_at=now + lifetime, status_list=status_list, status_index=index)
        status = CredentialStatus.VALID if provider.status == Provider.Status.ACTIVE else CredentialStatus.SUSPENDED
        if status != CredentialStatus.VALID:
            statuslists.set_status(status_list, index, STATUS_VALUES[status])
            credential.status = status
            credential.save(update_fields=["status"])
        if record:
            registry_services.provider_record_credential(provider=provider, credential=token, status=status,
                                                         expires_at=credential.expires_at)
        else:
            provider.credential, provider.credential_status = token, status
            provider.credential_expires_at = credential.expires_at
        audit.record(actor=actor, action="credential.issued", target_type="provider", target_key=provider.prefix,
                     data={"jti": jti, "kid": key.kid, "exp": claims["exp"]})
    return credential


@dataclass
class Onboarded:
    provider: Provider
    credential: ProviderCredential
    private_jwk: dict[str, Any] | None  # only when the node generated the key pair (demos)


def onboard(*, name: str, uscc: str, code: str, public_key: Any = None, actor: str) -> Onboarded:
    """Approve a provider (delegating its prefix) and issue its first credential, atomically."""
    private_jwk = None
    if public_key is None:
        private = crypto.generate_private_key(settings.CIR_SIGNING_ALG)
        private_jwk = crypto.private_jwk(private)
        public_key = crypto.public_jwk(private)
    jwk = parse_public_key(public_key)
    issued: list[ProviderCredential] = []

    def attach_credential(provider: Provider) -> None:
        key = register_key(provider=provider, jwk=jwk, actor=actor)
        issued.append(issue(provider=provider, key=key, actor=actor, record=False))

    with transaction.atomic():
        provider = registry_services.provider_approve(name=name, uscc=uscc, code=code, actor=actor,
                                                      on_created=attach_credential)
    return Onboarded(provider, issued[0], private_jwk)


def current(provider: Provider) -> ProviderCredential | None:
    return (ProviderCredential.objects.filter(provider=provider).exclude(status=CredentialStatus.REVOKED)
            .select_related("key").order_by("-issued_at").first())


def set_status(*, provider: Provider, status: str, reason: str, actor: str) -> Provider:
    """Suspend, reinstate or revoke a provider: every live credential, the status list (re-signed at
    once), the provider record and the feed. Revocation is final."""
    if status not in STATUS_VALUES:
        raise ApplicationError("invalid_request", "status must be valid, suspended or revoked", status=400)
    if provider.source != Source.LOCAL:
        raise ApplicationError("not_found", "this node did not issue that provider's credentials", status=404)
    with transaction.atomic():
        provider = Provider.objects.select_for_update().get(pk=provider.pk)
        if provider.status == Provider.Status.REVOKED:
            if status == CredentialStatus.REVOKED:
                return provider
            raise ApplicationError("provider_revoked", "revocation is final", status=409)
        live = list(ProviderCredential.objects.select_for_update().filter(provider=provider)
                    .exclude(status=CredentialStatus.REVOKED))
        for credential in live:
            statuslists.set_status(credential.status_list, credential.status_index, STATUS_VALUES[status])
            credential.status = status
            credential.save(update_fields=["status"])
        provider = registry_services.provider_set_status(
            provider=provider, status=PROVIDER_STATUS_FOR[status], reason=reason, actor=actor,
            credential_status=status if provider.credential else None)
        audit.record(actor=actor, action=f"credential.{status}", target_type="provider", target_key=provider.prefix,
                     data={"reason": reason, "credentials": [c.jti for c in live]})
    return provider


def rotate_key(*, provider: Provider, jwk: Any, actor: str, now: dt.datetime | None = None) -> ProviderCredential:
    """Register a new provider key and issue a credential for it; the old credential stays valid for
    the overlap (``CIR_KEY_ROTATION_OVERLAP``) and is then revoked by ``revoke_overlapped``."""
    now = now or timezone.now()
    if provider.status != Provider.Status.ACTIVE:
        raise ApplicationError("provider_not_active", f"provider {provider.prefix} is {provider.status}", status=409)
    with transaction.atomic():
        previous = current(provider)
        key = register_key(provider=provider, jwk=jwk, actor=actor)
        if previous is not None and previous.key_id == key.pk:
            raise ApplicationError("key_unchanged", "this key is already the provider's current key", status=409)
        credential = issue(provider=provider, key=key, actor=actor, now=now)
        overlap_end = now + dt.timedelta(seconds=settings.CIR_KEY_ROTATION_OVERLAP)
        old = (ProviderCredential.objects.filter(provider=provider, status=CredentialStatus.VALID)
               .exclude(pk=credential.pk))
        old.update(revoke_after=overlap_end, replaced_by=credential)
        ProviderKey.objects.filter(provider=provider).exclude(pk=key.pk).filter(superseded_at__isnull=True).update(
            superseded_at=now)
        audit.record(actor=actor, action="provider_key.rotated", target_type="provider", target_key=provider.prefix,
                     data={"kid": key.kid, "overlap_until": overlap_end.isoformat()})
    return credential


def revoke_overlapped(*, now: dt.datetime | None = None) -> int:
    """Revoke credentials whose rotation overlap has ended (Celery beat)."""
    now = now or timezone.now()
    count = 0
    for credential in ProviderCredential.objects.filter(revoke_after__lte=now).exclude(status=CredentialStatus.REVOKED):
        with transaction.atomic():
            statuslists.set_status(credential.status_list, credential.status_index, statuslists.REVOKED)
            credential.status = CredentialStatus.REVOKED
            credential.save(update_fields=["status"])
            audit.record(actor="system", action="credential.revoked", target_type="provider",
                         target_key=credential.provider.prefix, data={"jti": credential.jti, "reason": "key rotated"})
        count += 1
    return count


def renew_due(*, now: dt.datetime | None = None) -> int:
    """Issue a fresh credential to each active local provider whose current one nears expiry."""
    now = now or timezone.now()
    horizon = now + dt.timedelta(days=settings.CIR_CREDENTIAL_RENEW_BEFORE_DAYS)
    count = 0
    for provider in Provider.objects.filter(source=Source.LOCAL, status=Provider.Status.ACTIVE):
        credential = current(provider)
        if credential is None or credential.expires_at > horizon or credential.status != CredentialStatus.VALID:
            continue
        renewed = issue(provider=provider, key=credential.key, actor="system:renewal", now=now)
        ProviderCredential.objects.filter(pk=credential.pk).update(replaced_by=renewed)
        count += 1
    return count


def authentication_keys(provider: Provider, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Keys a provider may authenticate with: ``cnf.jwk`` of each valid, unexpired credential."""
    now = now or timezone.now()
    if provider.source == Source.MIRROR:
        return _mirrored_authentication_keys(provider, now)
    if provider.status != Provider.Status.ACTIVE:
        return []
    credentials = (ProviderCredential.objects.filter(provider=provider, status=CredentialStatus.VALID,
                                                     expires_at__gt=now, issued_at__lte=now + dt.timedelta(seconds=60))
                   .select_related("key"))
    seen, result = set(), []
    for credential in credentials:
        if credential.key.kid not in seen:
            seen.add(credential.key.kid)
            result.append(credential.key.jwk)
    return result


def _mirrored_authentication_keys(provider: Provider, now: dt.datetime) -> list[dict[str, Any]]:
    """A provider known through the feed: its credential was verified through the trust chain when it
    arrived; its status follows the feed (CONTRACT §6, §8)."""
    if not provider.credential or provider.effective_credential_status(now) != CredentialStatus.VALID:
        return []
    lookup = getattr(settings, "CIR_MIRRORED_STATUS_LOOKUP", None)
    if lookup and import_string(lookup)(provider) != CredentialStatus.VALID:
        return []  # the issuer's status list, newer than the feed, says otherwise
    try:
        claims = tokens.parse_unverified(provider.credential, tokens.PROVIDER_CREDENTIAL)[1]
    except tokens.TokenError:
        return []
    jwk = (claims.get("cnf") or {}).get("jwk")
    exp = claims.get("exp")
    if not isinstance(jwk, dict) or not isinstance(exp, int) or exp <= now.timestamp():
        return []
    return [jwk]
