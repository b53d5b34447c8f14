"""Joining nodes (CONTRACT §8, §10): pin anchors, record the superior, enroll subordinates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction

from core import audit
from core.errors import ApplicationError
from identity import crypto
from registry import identifiers
from registry import services as registry_services

from . import chains, clients, trust
from .models import Peer, TrustAnchor


def _entity_id(value: str) -> str:
    return registry_services._normalize_entity_id(value)  # one rule for entity IDs everywhere


def _federation_error(exc: Exception) -> ApplicationError:
    reason = getattr(exc, "reason", "unreachable")
    return ApplicationError(reason, str(exc), status=502 if isinstance(exc, clients.PeerError) else 400)


def trust_anchor_add(*, entity_id: str, jwks: list[dict[str, Any]] | None = None, actor: str) -> TrustAnchor:
    """Pin an anchor's federation keys: given explicitly, or fetched from its configuration (which
    must verify with the keys it publishes; the operator confirms the printed thumbprints)."""
    entity_id = _entity_id(entity_id)
    if jwks is None:
        try:
            claims = chains.self_signed_configuration(entity_id)
        except (chains.ChainError, clients.PeerError) as exc:
            raise _federation_error(exc) from exc
        if claims.get("authority_hints"):
            raise ApplicationError("not_an_anchor", f"{entity_id} names superiors; it is not a trust anchor")
        jwks = claims["jwks"]["keys"]
    try:
        normalised = [crypto.load_public_jwk(k)[1] for k in jwks]
    except crypto.KeyError_ as exc:
        raise ApplicationError("invalid_key", str(exc)) from exc
    if not normalised:
        raise ApplicationError("invalid_key", "an anchor needs at least one key")
    anchor, _ = TrustAnchor.objects.update_or_create(entity_id=entity_id, defaults={"jwks": normalised})
    audit.record(actor=actor, action="trust_anchor.pinned", target_type="trust_anchor", target_key=entity_id,
                 data={"kids": [k["kid"] for k in normalised]})
    return anchor


def superior_set(*, entity_id: str, actor: str) -> Peer:
    """Record our superior (trusted through a chain to a pinned anchor) and let it read our feed.
    Nothing is recorded unless the chain validates and the superior holds a prefix above ours."""
    entity_id = _entity_id(entity_id)
    if not TrustAnchor.objects.exists():
        raise ApplicationError("no_trust_anchor", "pin a trust anchor first (cir_trust_anchor_add)")
    existing = Peer.objects.filter(entity_id=entity_id).first() or Peer.objects.filter(
        relation=Peer.Relation.SUPERIOR).first()
    if existing is not None and (existing.entity_id != entity_id or existing.relation != Peer.Relation.SUPERIOR):
        raise ApplicationError("superior_already_set" if existing.relation == Peer.Relation.SUPERIOR
                               else "peer_conflict", f"{existing.entity_id} is already this node's "
                               f"{existing.relation}", status=409)
    try:
        chains.forget(entity_id)
        chain = chains.chain_for(entity_id)
        metadata = chains.compute_registry_metadata({"metadata": chain.metadata})
    except (chains.ChainError, clients.PeerError) as exc:
        raise _federation_error(exc) from exc
    prefixes = list(chain.ucri_prefixes)
    own = registry_services.this_node().prefix
    if not prefixes or not any(identifiers.prefix_within(own, p) and own != p for p in prefixes):
        raise ApplicationError("prefix_mismatch", f"{entity_id} does not hold a prefix above ours ({own})")
    with transaction.atomic():
        peer, _ = Peer.objects.update_or_create(entity_id=entity_id, defaults={
            "relation": Peer.Relation.SUPERIOR, "jwks": trust.keys_for(chain, entity_id), "metadata": metadata,
            "configuration_expires_at": dt.datetime.fromtimestamp(chain.expires_at, tz=dt.UTC)})
        registry_services.platform_set_superior(entity_id=entity_id, prefix=prefixes[0], actor=actor)
        audit.record(actor=actor, action="federation.superior_set", target_type="peer", target_key=entity_id,
                     data={"kids": [k.get("kid") for k in peer.jwks], "scope": "federation:sync"})
    return peer


def subordinate_add(*, entity_id: str, prefix: str, actor: str) -> Peer:
    """Enroll a subordinate: pin the keys of its configuration, delegate ``prefix``, let it notify us."""
    entity_id = _entity_id(entity_id)
    try:
        prefix = identifiers.normalize_prefix(prefix)
        claims = chains.self_signed_configuration(entity_id)
        metadata = chains.compute_registry_metadata(claims)
    except identifiers.UCRIError as exc:
        raise ApplicationError(exc.code, str(exc)) from exc
    except (chains.ChainError, clients.PeerError) as exc:
        raise _federation_error(exc) from exc
    declared = metadata.get("ucri_prefixes")
    if not isinstance(declared, list) or not declared or not all(
            isinstance(p, str) and identifiers.prefix_within(p, prefix) for p in declared):
        raise ApplicationError("prefix_mismatch", f"{entity_id} declares {declared}, not within {prefix}")
    own = registry_services.this_node().entity_id
    if own not in (claims.get("authority_hints") or []):
        raise ApplicationError("not_our_subordinate", f"{entity_id} does not name {own} in authority_hints "
                               "(run cir_superior_set there first)")
    jwks = claims["jwks"]["keys"]
    with transaction.atomic():
        registry_services.platform_delegate(entity_id=entity_id, prefix=prefix, actor=actor)
        peer, created = Peer.objects.get_or_create(
            entity_id=entity_id, defaults={"relation": Peer.Relation.SUBORDINATE, "prefixes": [prefix], "jwks": jwks,
                                           "metadata": metadata})
        if not created and (peer.relation != Peer.Relation.SUBORDINATE or peer.prefixes != [prefix]):
            raise ApplicationError("peer_conflict", f"{entity_id} is already known differently", status=409)
        audit.record(actor=actor, action="federation.subordinate_added", target_type="peer", target_key=entity_id,
                     data={"prefix": prefix, "kids": [k.get("kid") for k in jwks], "scope": "federation:notify"})
    return peer
