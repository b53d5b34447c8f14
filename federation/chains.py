"""Trust chains over HTTP: build them from entity configurations and subordinate statements, validate
them with ``trust.validate_chain`` against our pinned anchors, cache them to their expiry, and use
them to trust peers' keys and other nodes' signed API keys (CONTRACT §5, §8)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from identity import crypto, keys, tokens
from identity.models import Purpose
from registry import identifiers
from registry.services import this_node

from . import clients, entity, trust
from .models import Peer, TrustAnchor

MAX_DEPTH = 6
CACHE_PREFIX = "cir:chain:"


class ChainError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def anchors() -> dict[str, list[dict[str, Any]]]:
    """Pinned anchors; a node without a superior is its own anchor (it trusts its own keys)."""
    pinned = {a.entity_id: list(a.jwks) for a in TrustAnchor.objects.all()}
    if not Peer.objects.filter(relation=Peer.Relation.SUPERIOR).exists():
        node = this_node()
        pinned[node.entity_id] = entity.federation_jwks()
    return pinned


def _decode(token: str) -> dict[str, Any]:
    try:
        return trust.decode_unverified(token)
    except trust.TrustChainError as exc:
        raise ChainError(exc.reason, str(exc)) from exc


def _configuration_of(entity_id: str, own: str) -> str:
    return entity.configuration() if entity_id == own else clients.entity_configuration(entity_id)


def _statement(superior: str, superior_configuration: str, subject: str, own: str) -> str:
    if superior == own:
        peer = Peer.objects.filter(entity_id=subject, relation=Peer.Relation.SUBORDINATE).first()
        if peer is None:
            raise ChainError("not_found", f"{subject} is not our subordinate")
        return entity.subordinate_statement(peer)
    return clients.subordinate_statement(trust.fetch_endpoint(superior_configuration), subject)


def collect(entity_id: str) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Fetch the statements from ``entity_id`` up to one of our pinned anchors, and the pins."""
    pinned = anchors()
    own = this_node().entity_id
    try:
        statements = trust.walk(entity_id, anchors=pinned, configuration_of=lambda e: _configuration_of(e, own),
                                statement_about=lambda sup, conf, sub: _statement(sup, conf, sub, own),
                                max_depth=MAX_DEPTH)
    except trust.TrustChainError as exc:
        raise ChainError(exc.reason, str(exc)) from exc
    return statements, pinned


def build_chain(entity_id: str) -> trust.TrustChain:
    statements, pinned = collect(entity_id)
    return _validate(statements, pinned)


def _validate(statements: list[str], pinned: Mapping[str, list[dict[str, Any]]]) -> trust.TrustChain:
    try:
        return trust.validate_chain(statements, anchors=pinned)
    except trust.TrustChainError as exc:
        raise ChainError(exc.reason, str(exc)) from exc


def chain_for(entity_id: str) -> trust.TrustChain:
    """A validated chain, cached until the earliest expiry among its statements."""
    key = CACHE_PREFIX + entity_id
    cached = cache.get(key)
    if cached is not None and cached.expires_at > time.time() + 60:
        return cached
    chain = build_chain(entity_id)
    cache.set(key, chain, timeout=max(1, int(chain.expires_at - time.time()) - 60))
    return chain


def forget(entity_id: str) -> None:
    cache.delete(CACHE_PREFIX + entity_id)


def configuration_claims(entity_id: str, pinned_keys: list[dict[str, Any]]) -> dict[str, Any]:
    """A peer's entity configuration, verified with keys we already pin for it."""
    raw = clients.entity_configuration(entity_id)
    try:
        claims = tokens.verify(raw, tokens.ENTITY_STATEMENT, keys=lambda kid: pinned_keys, issuer=entity_id).claims
    except tokens.TokenError as exc:
        raise ChainError(exc.reason, f"{entity_id}'s configuration: {exc}") from exc
    if claims.get("sub") != entity_id or not isinstance(claims.get("jwks"), dict):
        raise ChainError("malformed", f"{entity_id}'s configuration is not about itself or has no jwks")
    return claims


def self_signed_configuration(entity_id: str) -> dict[str, Any]:
    """First contact (an operator enrolling a subordinate): verified with the keys it publishes."""
    raw = clients.entity_configuration(entity_id)
    payload = _decode(raw)
    published = (payload.get("jwks") or {}).get("keys") if isinstance(payload.get("jwks"), dict) else None
    if not isinstance(published, list) or not published:
        raise ChainError("malformed", f"{entity_id} publishes no federation keys")
    return configuration_claims_from(raw, entity_id, published)


def configuration_claims_from(raw: str, entity_id: str, trusted: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        claims = tokens.verify(raw, tokens.ENTITY_STATEMENT, keys=lambda kid: trusted, issuer=entity_id).claims
    except tokens.TokenError as exc:
        raise ChainError(exc.reason, f"{entity_id}'s configuration: {exc}") from exc
    if claims.get("sub") != entity_id:
        raise ChainError("malformed", f"{entity_id}'s configuration is not about itself")
    return claims


def compute_registry_metadata(claims: Mapping[str, Any]) -> dict[str, Any]:
    metadata = (claims.get("metadata") or {}).get("compute_registry")
    if not isinstance(metadata, dict):
        raise ChainError("malformed", "the configuration has no compute_registry metadata")
    required = ("token_endpoint", "change_feed_endpoint", "notify_endpoint", "ucri_prefixes")
    missing = [name for name in required if name not in metadata]
    if missing:
        raise ChainError("malformed", "compute_registry metadata lacks " + ", ".join(missing))
    return metadata


def refresh_peer(peer: Peer, *, force: bool = False) -> Peer:
    """Re-read a peer's configuration when due: endpoints, and key rollover (a configuration signed by
    a key we pin may announce new keys; keys it stops publishing are dropped)."""
    if not force and peer.configuration_expires_at and peer.configuration_expires_at > timezone.now():
        return peer
    if peer.relation == Peer.Relation.SUBORDINATE:
        claims = configuration_claims(peer.entity_id, peer.jwks)
        metadata = compute_registry_metadata(claims)
        declared = metadata.get("ucri_prefixes")
        if not isinstance(declared, list) or not all(
                isinstance(p, str) and any(identifiers.prefix_within(p, d) for d in peer.prefixes) for p in declared):
            raise ChainError("policy_violation", f"{peer.entity_id} declares prefixes outside {peer.prefixes}")
        new_keys = claims["jwks"].get("keys") or []
    else:
        chain = chain_for(peer.entity_id)
        claims = chain.statements[0]
        metadata = compute_registry_metadata({"metadata": chain.metadata})
        new_keys = trust.keys_for(chain, peer.entity_id)
    Peer.objects.filter(pk=peer.pk).update(
        jwks=new_keys, metadata=metadata,
        configuration_expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), tz=dt.UTC))
    peer.refresh_from_db()
    return peer


def signed_api_keys(entity_id: str, purpose: str) -> list[dict[str, Any]]:
    """Another node's API keys of one purpose, from its signed JWKS verified through the chain."""
    if entity_id == this_node().entity_id:
        return [k for k in keys.public_jwks() if k["cir_use"] == purpose]
    cache_key = f"cir:signed-jwks:{entity_id}"
    document = cache.get(cache_key)
    if document is None:
        chain = chain_for(entity_id)
        uri = (chain.metadata.get("compute_registry") or {}).get("signed_jwks_uri")
        if not isinstance(uri, str):
            raise ChainError("malformed", f"{entity_id} publishes no signed_jwks_uri")
        raw = clients.fetch_jwt(uri, "jwk-set+jwt")
        try:
            claims = tokens.verify(raw, tokens.SIGNED_JWKS, keys=trust.key_lookup(chain, entity_id),
                                   issuer=entity_id).claims
        except tokens.TokenError as exc:
            raise ChainError(exc.reason, f"{entity_id}'s signed JWKS: {exc}") from exc
        if not isinstance(claims.get("keys"), list):
            raise ChainError("malformed", f"{entity_id}'s signed JWKS has no keys")
        document = {"keys": claims["keys"], "prefixes": list(chain.ucri_prefixes)}
        expires = min(int(claims["exp"]), int(chain.expires_at))
        cache.set(cache_key, document, timeout=max(1, expires - int(time.time())))
    return [k for k in document["keys"] if isinstance(k, dict) and k.get("cir_use") == purpose]


def credential_verifier() -> Callable[[Mapping[str, Any]], None]:
    """Verify a relayed provider credential with its issuer's credential keys, reached through the
    trust chain; the issuer must hold a prefix over the provider's."""
    from registry.mirror import MirrorViolation

    def verify(record: Mapping[str, Any]) -> None:
        token = record.get("credential")
        try:
            issuer = _payload(token).get("iss")
            if not isinstance(issuer, str):
                raise ChainError("malformed", "the credential names no issuer")
            if issuer != record.get("authority"):
                # Only the node that owns the provider's prefix issues its credential; never fetch
                # keys from wherever a record says.
                raise ChainError("invalid_issuer", "the credential's issuer is not the provider's authority")
            api_keys = signed_api_keys(issuer, Purpose.CREDENTIAL)
            claims = tokens.verify(token, tokens.PROVIDER_CREDENTIAL, keys=lambda kid: api_keys, issuer=issuer).claims
            issuer_prefixes = chain_for(issuer).ucri_prefixes if issuer != this_node().entity_id \
                else (this_node().prefix,)
        except (ChainError, clients.PeerError, tokens.TokenError) as exc:
            raise MirrorViolation("invalid_credential", f"the credential does not verify: {exc}") from exc
        if claims.get("sub") != record.get("prefix"):
            raise MirrorViolation("invalid_credential", "the credential is about another provider")
        if not any(identifiers.prefix_within(record["prefix"], p) for p in issuer_prefixes):
            raise MirrorViolation("invalid_credential", f"{issuer} cannot vouch for {record['prefix']}")

    return verify


def _payload(token: Any) -> dict[str, Any]:
    try:
        return json.loads(crypto.b64url_decode(str(token).split(".")[1]))
    except (ValueError, IndexError) as exc:
        raise ChainError("malformed", "not a compact JWS") from exc


def refresh_anchors() -> int:
    """Anchor key rollover (CONTRACT §8): a configuration signed by a key we pin may announce new keys,
    which we add; keys the anchor stops publishing are dropped. Returns how many pins changed."""
    changed = 0
    for anchor in TrustAnchor.objects.all():
        try:
            claims = configuration_claims(anchor.entity_id, list(anchor.jwks))
        except (ChainError, clients.PeerError):
            continue  # unreachable or unverifiable: keep the pin we have
        published = claims["jwks"].get("keys") or []
        try:
            normalised = [crypto.load_public_jwk(k)[1] for k in published]
        except crypto.KeyError_:
            continue
        if normalised and {k["kid"] for k in normalised} != {k.get("kid") for k in anchor.jwks}:
            TrustAnchor.objects.filter(pk=anchor.pk).update(jwks=normalised)
            cache.delete_many([CACHE_PREFIX + p.entity_id for p in Peer.objects.all()])
            changed += 1
    return changed
