"""Status of mirrored provider credentials (CONTRACT §8 "Relayed credentials"): a revocation or
suspension reaches us by the feed or by the issuer's status list (cached at most its ``ttl``),
whichever comes first; the more recent wins, and revoked is final."""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

from django.core.cache import cache

from identity import crypto, tokens
from identity.models import Purpose
from registry.models import Provider

from . import chains, clients

log = logging.getLogger(__name__)
STATUS_NAMES = {0: "valid", 1: "revoked", 2: "suspended"}
MAX_TTL = 3600
MAX_LIST_BYTES = 4 * 1024 * 1024  # 16M two-bit entries: far beyond any real list; stops zlib bombs


def _status_list(uri: str, issuer: str) -> dict[str, Any]:
    """The issuer's status list, verified through the chain and cached for at most its ttl."""
    key = f"cir:status-list:{uri}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    raw = clients.fetch_jwt(uri, "statuslist+jwt")
    api_keys = chains.signed_api_keys(issuer, Purpose.CREDENTIAL)
    claims = tokens.verify(raw, tokens.STATUS_LIST, keys=lambda kid: api_keys, issuer=issuer).claims
    if claims.get("sub") != uri:
        raise tokens.TokenError("invalid_claim", "the status list's sub is not the URI it was fetched from")
    status_list = claims.get("status_list") or {}
    bits, packed = status_list.get("bits"), status_list.get("lst")
    if bits not in (1, 2, 4, 8) or not isinstance(packed, str):
        raise tokens.TokenError("invalid_claim", "a status list has bits and lst")
    document = {"bits": bits, "bytes": inflate(packed), "iat": claims["iat"]}
    ttl = claims.get("ttl") if isinstance(claims.get("ttl"), int) else MAX_TTL
    cache.set(key, document, timeout=max(1, min(ttl, MAX_TTL, int(claims["exp"] - time.time()))))
    return document


def inflate(packed: str) -> bytes:
    """base64url + zlib, with a hard cap on the output (a 1 MB token must not become gigabytes)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(crypto.b64url_decode(packed), MAX_LIST_BYTES + 1)
    except (zlib.error, ValueError) as exc:
        raise tokens.TokenError("invalid_claim", "the status list is not base64url zlib data") from exc
    if len(raw) > MAX_LIST_BYTES or inflater.unconsumed_tail:
        raise tokens.TokenError("invalid_claim", f"a status list inflates to more than {MAX_LIST_BYTES} bytes")
    return raw


def credential_status(provider: Provider) -> str | None:
    """The effective status of a mirrored provider's credential: feed or status list, newer wins."""
    feed_status = provider.effective_credential_status()
    if feed_status in (None, "revoked", "expired") or not provider.credential:
        return feed_status
    try:
        claims = tokens.parse_unverified(provider.credential, tokens.PROVIDER_CREDENTIAL)[1]
        pointer = claims["status"]["status_list"]
        document = _status_list(pointer["uri"], claims["iss"])
        index, bits = int(pointer["idx"]), document["bits"]
        per_byte = 8 // bits
        if index < 0 or index // per_byte >= len(document["bytes"]):
            return "revoked"  # an index out of range is invalid
        value = (document["bytes"][index // per_byte] >> ((index % per_byte) * bits)) & ((1 << bits) - 1)
    except (tokens.TokenError, chains.ChainError, clients.PeerError, KeyError, TypeError, ValueError,
            zlib.error) as exc:
        log.warning("status list for %s unavailable: %s", provider.prefix, exc)
        return feed_status  # the feed still tells us; an unreachable list is not a revocation
    list_status = STATUS_NAMES.get(value, "revoked")
    if list_status == "revoked":
        return "revoked"
    synced = provider.synced_at.timestamp() if provider.synced_at else 0
    return list_status if document["iat"] > synced else feed_status
