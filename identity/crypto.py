"""Pure key and signature helpers on ``cryptography`` and PyJWT. No database, no settings.

Keys are ES256 (P-256) by default, EdDSA (Ed25519) where configured (CONTRACT §5). Never ``none``,
never HS*. Thumbprints are RFC 7638 over the RFC 8785 canonical form of the required members.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

ALGORITHMS = ("ES256", "EdDSA")
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


class KeyError_(ValueError):
    """A key that is malformed, private where public is expected, or of an unsupported type."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_private_key(alg: str = "ES256") -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyError_(f"unsupported algorithm {alg!r}")


def alg_for_key(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyError_("only P-256 EC keys are accepted (ES256)")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise KeyError_("only EC P-256 and Ed25519 keys are accepted")


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, Any]:
    """The public JWK (required members only), with ``kid`` = its RFC 7638 thumbprint."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    if isinstance(public, ec.EllipticCurvePublicKey):
        alg_for_key(public)
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    elif isinstance(public, ed25519.Ed25519PublicKey):
        jwk = json.loads(OKPAlgorithm.to_jwk(public))
    else:
        raise KeyError_("only EC P-256 and Ed25519 keys are accepted")
    jwk = {name: jwk[name] for name in _REQUIRED_MEMBERS[jwk["kty"]]}
    jwk["kid"] = thumbprint(jwk)
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    kty = jwk.get("kty")
    if kty not in _REQUIRED_MEMBERS:
        raise KeyError_(f"unsupported key type {kty!r}")
    try:
        members = {name: jwk[name] for name in _REQUIRED_MEMBERS[kty]}
    except KeyError as exc:
        raise KeyError_(f"the JWK lacks {exc.args[0]!r}") from exc
    return b64url(hashlib.sha256(rfc8785.dumps(members)).digest())


_LOADED: dict[tuple, tuple[PublicKey, dict[str, Any]]] = {}  # accepted JWKs, by all their members
_LOADED_MAX = 1024


def load_public_jwk(jwk: Any) -> tuple[PublicKey, dict[str, Any]]:
    """Validate an untrusted public JWK: EC P-256 or Ed25519, no private members.

    Returns the key object and the normalised JWK (required members + ``kid`` thumbprint). A JWK that
    was accepted before is not parsed again: the answer depends on its members only.
    """
    if not isinstance(jwk, dict):
        raise KeyError_("a JWK is a JSON object")
    try:
        memo_key: tuple | None = tuple(sorted(jwk.items(), key=lambda item: item[0]))
        hash(memo_key)
    except TypeError:  # a member that is a list or an object: not memoised
        memo_key = None
    if memo_key is not None and (found := _LOADED.get(memo_key)) is not None:
        return found[0], dict(found[1])
    key, normalised = _load_public_jwk(jwk)
    if memo_key is not None:
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.clear()
        _LOADED[memo_key] = (key, normalised)
    return key, dict(normalised)


def _load_public_jwk(jwk: dict[str, Any]) -> tuple[PublicKey, dict[str, Any]]:
    if _PRIVATE_MEMBERS & set(jwk):
        raise KeyError_("the JWK contains private key material; send the public key only")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if (kty, crv) not in {("EC", "P-256"), ("OKP", "Ed25519")}:
        raise KeyError_("only EC P-256 and OKP Ed25519 keys are accepted")
    if any(not isinstance(jwk.get(name), str) for name in _REQUIRED_MEMBERS[kty]):
        raise KeyError_("the JWK's members must be strings")
    try:
        key = (ECAlgorithm if kty == "EC" else OKPAlgorithm).from_jwk(
            {name: jwk[name] for name in _REQUIRED_MEMBERS[kty]})
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise KeyError_(f"the JWK is not a valid public key: {exc}") from exc
    if hasattr(key, "private_bytes"):
        raise KeyError_("the JWK contains private key material")
    return key, public_jwk(key)


def load_public_pem(pem: str | bytes) -> tuple[PublicKey, dict[str, Any]]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyError_(f"not a PEM public key: {exc}") from exc
    return key, public_jwk(key)  # type: ignore[arg-type]


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_pem(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    alg_for_key(key)  # type: ignore[arg-type]
    return key  # type: ignore[return-value]


def private_jwk(key: PrivateKey) -> dict[str, Any]:
    """The private JWK, for handing a generated demo key to its owner once."""
    algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else OKPAlgorithm
    jwk = json.loads(algorithm.to_jwk(key))
    jwk["kid"] = public_jwk(key)["kid"]
    jwk["alg"] = alg_for_key(key)
    return jwk


def load_private_jwk(jwk: dict[str, Any]) -> PrivateKey:
    algorithm = ECAlgorithm if jwk.get("kty") == "EC" else OKPAlgorithm
    key = algorithm.from_jwk(json.dumps(jwk))
    if not hasattr(key, "private_bytes"):
        raise KeyError_("not a private key")
    return key  # type: ignore[return-value]


def sign(claims: dict[str, Any], key: PrivateKey, *, typ: str | None, kid: str | None,
         extra_headers: dict[str, Any] | None = None) -> str:
    """A compact JWS over ``claims``; the header carries ``typ`` and ``kid`` unless they are None."""
    headers: dict[str, Any] = {"typ": typ}  # PyJWT drops a falsy typ instead of defaulting to "JWT"
    if kid is not None:
        headers["kid"] = kid
    headers.update(extra_headers or {})
    return jwt.encode(claims, key, algorithm=alg_for_key(key), headers=headers)


def client_assertion(client_id: str, private_key: PrivateKey, audience: str, *, lifetime: int = 60,
                     typ: str | None = None, kid: str | None = None) -> str:
    """A ``private_key_jwt`` client assertion (RFC 7523): iss = sub = client_id, a fresh jti."""
    import time
    import uuid

    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + lifetime,
              "jti": uuid.uuid4().hex}
    return sign(claims, private_key, typ=typ, kid=kid or public_jwk(private_key)["kid"])


def sha256_b64url(text: str) -> str:
    return b64url(hashlib.sha256(text.encode("ascii")).digest())
