"""The one token verifier, driven by the token-kind table of CONTRACT §5. Pure: no database.

PyJWT checks signatures; everything else is checked here, because PyJWT alone does not check ``typ``,
accepts string ``exp`` values and can raise non-JWT exceptions on a key-type mismatch. Every failure is
a ``TokenError`` with a stable ``reason``.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.utils import base64url_decode, base64url_encode

from . import crypto

LEEWAY = 60  # seconds, for exp, nbf and iat (CONTRACT §5)
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*\Z")
_KNOWN_ALGORITHMS = crypto.ALGORITHMS


class TokenError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenKind:
    name: str
    typs: frozenset[str | None]  # accepted ``typ`` values; None = header without ``typ``
    max_bytes: int
    max_lifetime: int | None  # seconds between iat and exp; None = no expiry (audit checkpoints)
    audience: str  # "required" | "absent"
    kid_required: bool = True
    single_use_jti: bool = False
    key_in_header: bool = False  # only DPoP proofs carry their own key
    iat_window: int | None = None  # DPoP: iat must be within this many seconds of now

    @property
    def expires(self) -> bool:
        return self.max_lifetime is not None and not self.key_in_header


MINUTE, HOUR, DAY = 60, 3600, 86400
ACCESS_TOKEN = TokenKind("access_token", frozenset({"at+jwt"}), 4 * 1024, 10 * MINUTE, "required")
CLIENT_ASSERTION = TokenKind("client_assertion", frozenset({None, "JWT", "client-authentication+jwt"}), 8 * 1024,
                             60 * MINUTE, "required", kid_required=False, single_use_jti=True)
PROVIDER_CREDENTIAL = TokenKind("provider_credential", frozenset({"provider-credential+jwt"}), 8 * 1024,
                                90 * DAY, "absent")
STATUS_LIST = TokenKind("status_list", frozenset({"statuslist+jwt"}), 1024 * 1024, DAY, "absent")
HANDOFF_TICKET = TokenKind("handoff_ticket", frozenset({"handoff+jwt"}), 8 * 1024, 300, "required",
                           single_use_jti=True)
DPOP_PROOF = TokenKind("dpop_proof", frozenset({"dpop+jwt"}), 4 * 1024, None, "absent", kid_required=False,
                       single_use_jti=True, key_in_header=True, iat_window=60)
AUDIT_CHECKPOINT = TokenKind("audit_checkpoint", frozenset({"audit-checkpoint+jwt"}), 4 * 1024, None, "absent")
ENTITY_STATEMENT = TokenKind("entity_statement", frozenset({"entity-statement+jwt"}), 64 * 1024, DAY, "absent")
SIGNED_JWKS = TokenKind("signed_jwks", frozenset({"jwk-set+jwt"}), 64 * 1024, DAY, "absent")
CHANGE_PAGE = TokenKind("change_page", frozenset({"change-page+jwt"}), 16 * 1024 * 1024, HOUR, "absent")

KINDS = {kind.name: kind for kind in (ACCESS_TOKEN, CLIENT_ASSERTION, PROVIDER_CREDENTIAL, STATUS_LIST,
                                      HANDOFF_TICKET, DPOP_PROOF, AUDIT_CHECKPOINT, ENTITY_STATEMENT,
                                      SIGNED_JWKS, CHANGE_PAGE)}

# Keys the caller trusts for this kind: called with the header's ``kid`` (None when absent) and
# returning the candidate public JWKs of the right purpose. Header-borne keys (jku, x5u, x5c, jwk)
# are never consulted.
KeyLookup = Callable[[str | None], Iterable[dict[str, Any]]]
# Records a single-use ``jti`` until ``expires_at``; returns False if it was already seen.
ReplayGuard = Callable[[str, str, int], bool]


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]
    jwk: dict[str, Any] = field(repr=False)

    @property
    def kid(self) -> str:
        return self.jwk["kid"]


def safe_text(value: Any, max_length: int = 256) -> bool:
    """A claim we may use as a key (database, cache): printable, bounded, encodable as UTF-8."""
    if not isinstance(value, str) or not value or len(value) > max_length or not value.isprintable():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fail(reason: str, message: str) -> TokenError:
    return TokenError(reason, message)


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(crypto.b64url_decode(segment))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail("malformed", f"the {what} is not base64url JSON") from exc
    if not isinstance(value, dict):
        raise _fail("malformed", f"the {what} is not a JSON object")
    return value


def _normalise_typ(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail("invalid_typ", "typ must be a string")
    lowered = value.lower()
    return lowered[len("application/"):] if lowered.startswith("application/") else lowered


def parse_unverified(token: Any, kind: TokenKind) -> tuple[dict[str, Any], dict[str, Any]]:
    """Structural checks and the decoded header and claims, before any key is chosen."""
    if not isinstance(token, str):
        raise _fail("malformed", "a token is a string")
    if len(token.encode("utf-8", "replace")) > kind.max_bytes:
        raise _fail("oversized", f"a {kind.name} is at most {kind.max_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or not all(_SEGMENT.match(p) for p in parts):
        raise _fail("malformed", "only the compact serialization is accepted")
    header = _json_segment(parts[0], "header")
    claims = _json_segment(parts[1], "payload")
    alg = header.get("alg")
    if alg not in _KNOWN_ALGORITHMS:
        raise _fail("invalid_alg", f"alg {alg!r} is not accepted (ES256 or EdDSA only)")
    if "crit" in header:
        raise _fail("unknown_crit", "critical header extensions are not understood")
    if _normalise_typ(header.get("typ")) not in {t.lower() if t else None for t in kind.typs}:
        raise _fail("invalid_typ", f"typ {header.get('typ')!r} is not a {kind.name}")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _fail("invalid_kid", "kid must be a string")
    if kind.kid_required and not kid:
        raise _fail("missing_kid", "kid is required")
    if "jwk" in header and not kind.key_in_header:
        header = {k: v for k, v in header.items() if k != "jwk"}  # ignored, never trusted
    return header, claims


def _segment_bytes(segment: bytes) -> bytes | None:
    """A segment decoded as PyJWS decodes it (length, canonical encoding), for a segment that already
    matched ``_SEGMENT``: PyJWS's own alphabet check is a per-character Python loop (~130 ms for a
    1 MB change page, more than applying its thousand changes)."""
    if len(segment) % 4 == 1:
        return None
    try:
        decoded = base64url_decode(segment)
    except (TypeError, binascii.Error):
        return None
    return decoded if base64url_encode(decoded) == segment else None


def _signature_valid(token: str, jwk: dict[str, Any], alg: str) -> bool:
    """What ``PyJWS().decode_complete(token, key, algorithms=[alg])`` checks (the segments, a header
    without ``b64: false``, the signature), on a token ``parse_unverified`` accepted."""
    try:
        key, _ = crypto.load_public_jwk(jwk)
        if crypto.alg_for_key(key) != alg:
            return False
        signing_input, _, signature_segment = token.encode("ascii").rpartition(b".")
        header_segment, _, payload_segment = signing_input.partition(b".")
        header_bytes, signature = _segment_bytes(header_segment), _segment_bytes(signature_segment)
        if header_bytes is None or signature is None or _segment_bytes(payload_segment) is None:
            return False
        header = json.loads(header_bytes)
        if not isinstance(header, dict) or header.get("b64", True) is False:  # PyJWS wants b64 in crit; crit is refused
            return False
        algorithm = jwt.get_algorithm_by_name(alg)
        return bool(algorithm.verify(signing_input, algorithm.prepare_key(key), signature))
    except (jwt.PyJWTError, crypto.KeyError_, ValueError, TypeError, AttributeError, NotImplementedError):
        # A key-type mismatch surfaces from cryptography as ValueError/TypeError/AttributeError.
        return False


def _int_claim(claims: dict[str, Any], name: str, required: bool) -> int | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise _fail("missing_claim", f"the {name} claim is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("invalid_claim", f"{name} must be an integer NumericDate")
    return value


def _check_times(claims: dict[str, Any], kind: TokenKind, now: int) -> None:
    if kind.key_in_header:  # DPoP: iat window instead of exp
        iat = _int_claim(claims, "iat", True)
        if abs(now - iat) > (kind.iat_window or LEEWAY):
            raise _fail("expired", "the proof's iat is outside the accepted window")
        return
    iat = _int_claim(claims, "iat", kind.expires)
    exp = _int_claim(claims, "exp", kind.expires)
    nbf = _int_claim(claims, "nbf", False)
    if exp is not None and now > exp + LEEWAY:
        raise _fail("expired", "the token has expired")
    if nbf is not None and now + LEEWAY < nbf:
        raise _fail("not_yet_valid", "the token is not valid yet")
    if iat is not None and now + LEEWAY < iat:
        raise _fail("not_yet_valid", "the token was issued in the future")
    if kind.max_lifetime is not None and exp is not None and iat is not None:
        if exp - iat > kind.max_lifetime:
            raise _fail("lifetime_exceeded", f"a {kind.name} lives at most {kind.max_lifetime} s")
        if exp <= iat:
            raise _fail("invalid_claim", "exp must be after iat")


def _check_audience(claims: dict[str, Any], kind: TokenKind, audiences: Sequence[str] | None) -> None:
    aud = claims.get("aud")
    if kind.audience == "absent":
        if aud is not None:
            raise _fail("invalid_audience", f"a {kind.name} has no audience")
        return
    if aud is None:
        raise _fail("invalid_audience", "the aud claim is required")
    if isinstance(aud, list):
        if len(aud) != 1:
            raise _fail("invalid_audience", "exactly one audience is accepted")
        aud = aud[0]
    if not isinstance(aud, str) or audiences is None or aud not in audiences:
        raise _fail("invalid_audience", "the token is not meant for this audience")


def verify(token: Any, kind: TokenKind, *, keys: KeyLookup | None = None, audiences: Sequence[str] | None = None,
           issuer: str | None = None, replay: ReplayGuard | None = None, now: int | None = None) -> Verified:
    """Verify ``token`` as a ``kind``: structure, header, signature, times, audience, issuer, jti."""
    now = int(time.time()) if now is None else now
    header, claims = parse_unverified(token, kind)
    alg = header["alg"]
    if kind.key_in_header:
        candidates = [header.get("jwk")]
        if not isinstance(candidates[0], dict):
            raise _fail("missing_key", f"a {kind.name} carries its public key in the jwk header")
    else:
        if keys is None:
            raise _fail("unknown_key", "no keys are trusted for this token")
        kid = header.get("kid")
        candidates = [jwk for jwk in keys(kid) if kid is None or jwk.get("kid") == kid]
        if not candidates:
            raise _fail("unknown_key", "no trusted key matches the token's kid")
    signer = next((jwk for jwk in candidates if _signature_valid(token, jwk, alg)), None)
    if signer is None:
        raise _fail("invalid_signature", "the signature does not verify with a trusted key")
    _check_times(claims, kind, now)
    _check_audience(claims, kind, audiences)
    if issuer is not None and claims.get("iss") != issuer:
        raise _fail("invalid_issuer", "the token was not issued by the expected issuer")
    if kind.single_use_jti:
        jti = claims.get("jti")
        if not safe_text(jti):
            raise _fail("missing_claim", "a single-use jti (printable, at most 256 characters) is required")
        if replay is None:
            raise _fail("replayed", "no replay cache is configured for a single-use token")
        horizon = (claims.get("exp") or now) + LEEWAY if kind.expires else now + (kind.iat_window or LEEWAY) * 2
        if not replay(kind.name, jti, horizon):
            raise _fail("replayed", "this jti has been used before")
    _, normalised = crypto.load_public_jwk(signer)
    return Verified(header=header, claims=claims, jwk=normalised)
