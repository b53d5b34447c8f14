"""This node's signing keys: one set per purpose, encrypted at rest, rotated publish-before-use.

Timeline of a key (CONTRACT §5):
  created (published in the JWKS) -> activates_at (signs; at least one JWKS max-age after creation)
  -> superseded when a newer key activates -> unpublished once every token it signed has expired.
A node's very first key of a purpose activates at once: no verifier can hold a stale copy yet.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core import audit

from . import crypto
from .models import NodeKey, Purpose

# Longest lifetime of what each purpose signs: a superseded key stays published this long.
TOKEN_LIFETIME = {
    Purpose.ACCESS_TOKEN: dt.timedelta(minutes=10),
    Purpose.CREDENTIAL: dt.timedelta(days=90),
    Purpose.HANDOFF: dt.timedelta(minutes=5),
    Purpose.FEDERATION: dt.timedelta(days=1),
}
# How often a purpose's signing key is replaced by the rotation task.
ROTATION_PERIOD = {
    Purpose.ACCESS_TOKEN: dt.timedelta(days=30),
    Purpose.CREDENTIAL: dt.timedelta(days=180),
    Purpose.HANDOFF: dt.timedelta(days=30),
    Purpose.FEDERATION: dt.timedelta(days=365),
}
API_PURPOSES = (Purpose.ACCESS_TOKEN, Purpose.CREDENTIAL, Purpose.HANDOFF)
# Federation keys are pinned by peers from entity configurations: announce a successor a day ahead
# (CONTRACT §8 rollover), whatever the JWKS refresh interval.
PUBLISH_AHEAD = {Purpose.FEDERATION: dt.timedelta(days=1)}


def jwks_max_age() -> dt.timedelta:
    return dt.timedelta(seconds=settings.CIR_JWKS_MAX_AGE)


def _fernet_key() -> bytes:
    configured = settings.CIR_KEY_ENCRYPTION_KEY
    if configured:
        return configured.encode() if isinstance(configured, str) else configured
    # Development only (settings refuse DEBUG=0 without a key): derive one from SECRET_KEY.
    derived = hashlib.sha256(("cir-dev-key-encryption:" + settings.SECRET_KEY).encode()).digest()
    return base64.urlsafe_b64encode(derived)


def _fernet() -> Fernet:
    return Fernet(_fernet_key())


def _encrypt(key: crypto.PrivateKey) -> bytes:
    return _fernet().encrypt(crypto.private_pem(key))


# Decrypted private keys by (ciphertext, encryption key): each signature would otherwise pay a Fernet
# decryption and a PEM parse. A stored ciphertext never changes, and a deleted key is never asked for.
_DECRYPTED: dict[tuple[bytes, bytes], crypto.PrivateKey] = {}
_DECRYPTED_MAX = 64


def private_key(node_key: NodeKey) -> crypto.PrivateKey:
    memo_key = (bytes(node_key.private_key_encrypted), _fernet_key())
    found = _DECRYPTED.get(memo_key)
    if found is not None:
        return found
    try:
        key = crypto.load_private_pem(Fernet(memo_key[1]).decrypt(memo_key[0]))
    except InvalidToken as exc:
        raise RuntimeError("cannot decrypt node keys: CIR_KEY_ENCRYPTION_KEY is not the key they were "
                           "encrypted with") from exc
    if len(_DECRYPTED) >= _DECRYPTED_MAX:
        _DECRYPTED.clear()
    _DECRYPTED[memo_key] = key
    return key


def create_key(purpose: str, *, alg: str | None = None, activates_at: dt.datetime | None = None,
               now: dt.datetime | None = None, actor: str = "system") -> NodeKey:
    now = now or timezone.now()
    alg = alg or settings.CIR_SIGNING_ALG
    private = crypto.generate_private_key(alg)
    jwk = crypto.public_jwk(private)
    with transaction.atomic():
        node_key = NodeKey.objects.create(
            kid=jwk["kid"], purpose=purpose, alg=alg, public_jwk=jwk, private_key_encrypted=_encrypt(private),
            created_at=now, activates_at=activates_at or now)
        audit.record(actor=actor, action="key.created", target_type="node_key", target_key=node_key.kid,
                     data={"purpose": purpose, "alg": alg, "activates_at": node_key.activates_at.isoformat()})
    forget_cached_keys()
    return node_key


# The hot paths (``signing_key`` and ``verification_keys``, on every token issued or checked) keep each
# purpose's keys as read outside a transaction (committed rows) for a few seconds per process. That is
# safe because of the timeline above: a new key is published at least one JWKS max-age before it signs
# (the cache lives less than that), the node's first key is never served from an empty cache, superseded
# and unpublished states are computed from the rows and the clock exactly as ``_refresh_lifecycle``
# would, and a token naming a kid the cache lacks reloads the rows. Writes in this process forget it.
KEY_CACHE_SECONDS = 30.0
_cached_keys: dict[str, tuple[float, list[NodeKey]]] = {}


def forget_cached_keys() -> None:
    _cached_keys.clear()


def _purpose_keys(purpose: str, now: dt.datetime, *, cacheable: bool) -> list[NodeKey]:
    """The purpose's keys newest first: from the per-process cache when it may be used and is fresh."""
    cacheable = cacheable and not connection.in_atomic_block
    if cacheable:
        found = _cached_keys.get(purpose)
        if found is not None and time.monotonic() - found[0] < min(KEY_CACHE_SECONDS, settings.CIR_JWKS_MAX_AGE):
            return found[1]
    keys = _refresh_lifecycle(purpose, now)
    if cacheable and keys:
        _cached_keys[purpose] = (time.monotonic(), keys)
    return keys


def _published_now(purpose: str, keys: list[NodeKey], now: dt.datetime) -> list[NodeKey]:
    """Of ``keys`` (newest first), those verifiers should know at ``now``: what ``_refresh_lifecycle``
    would leave published, computed without writing."""
    newest_active = next((k for k in keys if k.activates_at <= now), None)
    result = []
    for key in keys:
        unpublish_at = key.unpublish_at
        if unpublish_at is None and newest_active is not None and key is not newest_active \
                and key.activates_at <= now:
            unpublish_at = newest_active.activates_at + TOKEN_LIFETIME[purpose] + dt.timedelta(seconds=60)
        if unpublish_at is None or unpublish_at > now:
            result.append(key)
    return result


def _refresh_lifecycle(purpose: str, now: dt.datetime) -> list[NodeKey]:
    """Mark keys superseded by a newer active one; return the purpose's keys newest first."""
    keys = list(NodeKey.objects.filter(purpose=purpose).order_by("-activates_at", "-created_at"))
    newest_active = next((k for k in keys if k.activates_at <= now), None)
    for key in keys:
        if newest_active is not None and key is not newest_active and key.activates_at <= now \
                and key.superseded_at is None:
            key.superseded_at = newest_active.activates_at
            key.unpublish_at = key.superseded_at + TOKEN_LIFETIME[purpose] + dt.timedelta(seconds=60)
            key.save(update_fields=["superseded_at", "unpublish_at"])
    return keys


def signing_key(purpose: str, *, now: dt.datetime | None = None) -> tuple[NodeKey, crypto.PrivateKey]:
    """The key to sign with now; creates the node's first key of this purpose if there is none."""
    cacheable = now is None
    now = now or timezone.now()
    keys = _purpose_keys(purpose, now, cacheable=cacheable)
    active = next((k for k in keys if k.activates_at <= now), None)
    if active is None:
        with transaction.atomic():
            # Serialise first-key creation between workers.
            NodeKey.objects.select_for_update().filter(purpose=purpose).exists()
            active = NodeKey.objects.filter(purpose=purpose, activates_at__lte=now).order_by("-activates_at").first()
            if active is None:
                active = create_key(purpose, now=now)
    return active, private_key(active)


def published(purposes: tuple[str, ...] = API_PURPOSES, *, now: dt.datetime | None = None) -> list[NodeKey]:
    """Keys verifiers should know: upcoming, active, and superseded ones whose tokens may still live."""
    now = now or timezone.now()
    result = []
    for purpose in purposes:
        result.extend(_published_now(purpose, _refresh_lifecycle(purpose, now), now))
    return result


def ensure_keys(purposes: tuple[str, ...] = API_PURPOSES, *, now: dt.datetime | None = None) -> None:
    """Give each purpose its first key, so the JWKS is complete before anything is signed."""
    for purpose in purposes:
        if not NodeKey.objects.filter(purpose=purpose).exists():
            signing_key(purpose, now=now)


def public_jwks(purposes: tuple[str, ...] = API_PURPOSES, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    ensure_keys(purposes, now=now)
    return [published_jwk(k) for k in published(purposes, now=now)]


def published_jwk(key: NodeKey) -> dict[str, Any]:
    return {**key.public_jwk, "alg": key.alg, "use": "sig", "cir_use": key.purpose}


def verification_keys(purpose: str, *, now: dt.datetime | None = None):
    """A ``tokens.KeyLookup`` over this node's published keys of one purpose."""
    cacheable = now is None
    now = now or timezone.now()
    jwks = [k.public_jwk for k in _published_now(purpose, _purpose_keys(purpose, now, cacheable=cacheable), now)]
    if not cacheable:
        return lambda kid: jwks

    def lookup(kid: str | None) -> list[dict[str, Any]]:
        if kid is None or any(jwk.get("kid") == kid for jwk in jwks):
            return jwks
        # A kid this process has not seen: a key published since the cache was filled, or a bad token.
        _cached_keys.pop(purpose, None)
        return [k.public_jwk for k in _published_now(purpose, _purpose_keys(purpose, now, cacheable=True), now)]

    return lookup


def rotate(purpose: str, *, now: dt.datetime | None = None, force: bool = False,
           actor: str = "system") -> NodeKey | None:
    """Publish the next key of ``purpose`` if the current one is due (or ``force``), to activate one
    JWKS max-age later. Returns the new key, or None when nothing was due."""
    now = now or timezone.now()
    keys = _refresh_lifecycle(purpose, now)
    if any(k.activates_at > now for k in keys):
        return None  # a successor is already published and waiting
    active = next((k for k in keys if k.activates_at <= now), None)
    if active is not None and not force and now - active.activates_at < ROTATION_PERIOD[purpose]:
        return None
    ahead = max(jwks_max_age(), PUBLISH_AHEAD.get(purpose, dt.timedelta(0)))
    activates_at = now + ahead if active is not None else now
    return create_key(purpose, activates_at=activates_at, now=now, actor=actor)


def prune(*, now: dt.datetime | None = None) -> int:
    """Delete keys that are no longer published (their tokens have all expired)."""
    now = now or timezone.now()
    for purpose in Purpose.values:
        _refresh_lifecycle(purpose, now)
    doomed = NodeKey.objects.filter(unpublish_at__lte=now)
    kids = list(doomed.values_list("kid", flat=True))
    if kids:
        with transaction.atomic():
            doomed.delete()
            for kid in kids:
                audit.record(actor="system", action="key.removed", target_type="node_key", target_key=kid)
        forget_cached_keys()
    return len(kids)


@dataclass(frozen=True)
class Signed:
    token: str
    kid: str


def sign(purpose: str, claims: dict[str, Any], *, typ: str | None, now: dt.datetime | None = None) -> Signed:
    node_key, private = signing_key(purpose, now=now)
    return Signed(crypto.sign(claims, private, typ=typ, kid=node_key.kid), node_key.kid)
