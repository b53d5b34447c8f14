"""The one verifier against every rejection rule of CONTRACT §5, for every token kind. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest

from identity import crypto, tokens
from identity.tokens import KINDS, TokenError

NOW = 1_800_000_000
AUD = "https://cir.example.cn"
ISS = "https://cir.example.cn"


def _b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Harness:
    """A trusted key for the kind, a replay cache, and a valid token factory."""

    def __init__(self, kind: tokens.TokenKind, alg: str = "ES256") -> None:
        self.kind = kind
        self.key = crypto.generate_private_key(alg)
        self.jwk = crypto.public_jwk(self.key)
        self.other_purpose_key = crypto.generate_private_key(alg)
        self.seen: set[str] = set()

    def claims(self, **overrides) -> dict:
        claims = {"iss": ISS, "iat": NOW - 10, "jti": uuid.uuid4().hex}
        if self.kind.expires:
            claims["exp"] = NOW - 10 + min(self.kind.max_lifetime, 300)
        if self.kind.audience == "required":
            claims["aud"] = AUD
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not DELETE}

    def header_typ(self) -> str | None:
        return sorted(t for t in self.kind.typs if t)[0] if any(self.kind.typs) else None

    def token(self, claims: dict | None = None, *, key=None, headers: dict | None = None, typ="default") -> str:
        key = key or self.key
        extra = dict(headers or {})
        if self.kind.key_in_header:
            extra.setdefault("jwk", crypto.public_jwk(key))
        kid = None if self.kind.key_in_header else crypto.public_jwk(key)["kid"]
        return crypto.sign(claims if claims is not None else self.claims(), key,
                           typ=self.header_typ() if typ == "default" else typ, kid=kid, extra_headers=extra)

    def replay(self, kind: str, jti: str, horizon: int) -> bool:
        if jti in self.seen:
            return False
        self.seen.add(jti)
        return True

    def verify(self, token, *, now: int = NOW):
        return tokens.verify(token, self.kind, keys=lambda kid: [self.jwk],
                             audiences=[AUD] if self.kind.audience == "required" else None,
                             issuer=ISS, replay=self.replay, now=now)


DELETE = object()
ALL_KINDS = sorted(KINDS)
WITH_AUDIENCE = sorted(name for name, kind in KINDS.items() if kind.audience == "required")
EXPIRING = sorted(name for name, kind in KINDS.items() if kind.expires)
SINGLE_USE = sorted(name for name, kind in KINDS.items() if kind.single_use_jti)
KEYED_BY_KID = sorted(name for name, kind in KINDS.items() if not kind.key_in_header)


def harness(name: str, alg: str = "ES256") -> Harness:
    return Harness(KINDS[name], alg)


def rejected(h: Harness, token, reason: str | set[str]) -> None:
    with pytest.raises(TokenError) as excinfo:
        h.verify(token)
    reasons = {reason} if isinstance(reason, str) else reason
    assert excinfo.value.reason in reasons, (excinfo.value.reason, str(excinfo.value))


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
@pytest.mark.parametrize("name", ALL_KINDS)
def test_a_valid_token_of_each_kind_verifies(name, alg):
    h = harness(name, alg)
    verified = h.verify(h.token())
    assert verified.claims["iss"] == ISS
    assert verified.kid == h.jwk["kid"]


@pytest.mark.parametrize("name", ALL_KINDS)
def test_alg_none_is_rejected(name):
    h = harness(name)
    header = {"alg": "none", "typ": h.header_typ(), "kid": h.jwk["kid"]}
    token = f"{_b64(header)}.{_b64(h.claims())}."
    rejected(h, token, {"malformed", "invalid_alg"})
    rejected(h, f"{_b64(header)}.{_b64(h.claims())}.{_b64(b'x')}", "invalid_alg")


@pytest.mark.parametrize("name", ALL_KINDS)
def test_hs256_keyed_with_the_public_key_is_rejected(name):
    h = harness(name)
    header = {"alg": "HS256", "typ": h.header_typ(), "kid": h.jwk["kid"]}
    signing_input = f"{_b64(header)}.{_b64(h.claims())}"
    secret = json.dumps(h.jwk).encode()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    rejected(h, f"{signing_input}.{_b64(signature)}", "invalid_alg")


@pytest.mark.parametrize("name", KEYED_BY_KID)
def test_unknown_kid_is_rejected(name):
    h = harness(name)
    stranger = crypto.generate_private_key()
    if KINDS[name].kid_required:
        rejected(h, h.token(key=stranger), "unknown_key")
    else:  # client assertions without a kid try each key: a stranger's signature still fails
        rejected(h, h.token(key=stranger), {"unknown_key", "invalid_signature"})


@pytest.mark.parametrize("name", KEYED_BY_KID)
@pytest.mark.parametrize("header", ["jwk", "jku", "x5c", "x5u"])
def test_attacker_keys_in_headers_are_never_trusted(name, header):
    h = harness(name)
    attacker = crypto.generate_private_key()
    attacker_jwk = crypto.public_jwk(attacker)
    value = {"jwk": attacker_jwk, "jku": "https://attacker.example/jwks.json",
             "x5c": [base64.b64encode(b"not a cert").decode()], "x5u": "https://attacker.example/cert.pem"}[header]
    # The attacker signs with its own key, names the victim's kid, and offers its key in a header.
    claims = h.claims()
    token = crypto.sign(claims, attacker, typ=h.header_typ(), kid=h.jwk["kid"], extra_headers={header: value})
    rejected(h, token, "invalid_signature")


def test_dpop_proof_uses_its_own_jwk_and_nothing_else():
    h = harness("dpop_proof")
    proof = h.token()
    assert h.verify(proof).jwk["kid"] == h.jwk["kid"]
    # A proof whose jwk header does not match the signing key fails.
    other = crypto.generate_private_key()
    rejected(h, h.token(key=h.key, headers={"jwk": crypto.public_jwk(other)}), "invalid_signature")
    # A jwk header with private material is refused.
    private = crypto.private_jwk(h.key)
    rejected(h, h.token(headers={"jwk": private}), "invalid_signature")


@pytest.mark.parametrize(("name", "typ"), [
    (name, typ) for name in ALL_KINDS for typ in ("JOSE", "jwt-wrong", "at+jwt", "statuslist+jwt", 7)
    if typ not in KINDS[name].typs])
def test_wrong_typ_is_rejected(name, typ):
    h = harness(name)
    rejected(h, h.token(typ=typ), "invalid_typ")


@pytest.mark.parametrize("name", [n for n in ALL_KINDS if None not in KINDS[n].typs])
def test_missing_typ_is_rejected(name):
    h = harness(name)
    rejected(h, h.token(typ=None), "invalid_typ")


def test_typ_with_application_prefix_is_the_same_media_type():
    h = harness("access_token")
    assert h.verify(h.token(typ="application/at+jwt"))


@pytest.mark.parametrize("name", KEYED_BY_KID)
def test_a_key_of_another_purpose_is_not_accepted(name):
    # E.g. a credential key signing an access token: the verifier only looks among the kind's keys.
    h = harness(name)
    rejected(h, h.token(key=h.other_purpose_key), {"unknown_key", "invalid_signature"})


@pytest.mark.parametrize("name", WITH_AUDIENCE)
@pytest.mark.parametrize("aud", ["https://elsewhere.example", DELETE, [AUD, "https://other"], [], 42])
def test_wrong_missing_or_multiple_audience(name, aud):
    h = harness(name)
    rejected(h, h.token(h.claims(aud=aud)), "invalid_audience")


@pytest.mark.parametrize("name", [n for n in ALL_KINDS if KINDS[n].audience == "absent"])
def test_kinds_without_audience_refuse_one(name):
    h = harness(name)
    rejected(h, h.token(h.claims(aud=AUD)), "invalid_audience")


@pytest.mark.parametrize("name", EXPIRING)
def test_expired(name):
    h = harness(name)
    claims = h.claims(iat=NOW - 261, exp=NOW - 61)
    rejected(h, h.token(claims), "expired")
    # Within the 60 s leeway it still verifies.
    assert h.verify(h.token(h.claims(iat=NOW - 259, exp=NOW - 59)))


@pytest.mark.parametrize("name", EXPIRING)
def test_not_yet_valid(name):
    h = harness(name)
    rejected(h, h.token(h.claims(nbf=NOW + 120)), "not_yet_valid")
    rejected(h, h.token(h.claims(iat=NOW + 120, exp=NOW + 200)), "not_yet_valid")


@pytest.mark.parametrize("name", EXPIRING)
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", ["1900000000", 1.9e9 + 0.5, True])
def test_non_integer_times_are_rejected(name, claim, value):
    h = harness(name)
    rejected(h, h.token(h.claims(**{claim: value})), "invalid_claim")


@pytest.mark.parametrize("name", EXPIRING)
@pytest.mark.parametrize("claim", ["exp", "iat"])
def test_missing_times_are_rejected(name, claim):
    h = harness(name)
    rejected(h, h.token(h.claims(**{claim: DELETE})), "missing_claim")


@pytest.mark.parametrize("name", EXPIRING)
def test_lifetime_over_the_cap(name):
    h = harness(name)
    cap = KINDS[name].max_lifetime
    rejected(h, h.token(h.claims(iat=NOW - 10, exp=NOW - 10 + cap + 1)), "lifetime_exceeded")
    assert h.verify(h.token(h.claims(iat=NOW - 10, exp=NOW - 10 + cap)))


def test_dpop_iat_window():
    h = harness("dpop_proof")
    rejected(h, h.token(h.claims(iat=NOW - 61)), "expired")
    rejected(h, h.token(h.claims(iat=NOW + 61)), "expired")
    assert h.verify(h.token(h.claims(iat=NOW + 30)))


@pytest.mark.parametrize("name", SINGLE_USE)
def test_replayed_jti(name):
    h = harness(name)
    token = h.token()
    h.verify(token)
    rejected(h, token, "replayed")
    rejected(h, h.token(h.claims(jti=DELETE)), "missing_claim")


@pytest.mark.parametrize("name", ALL_KINDS)
def test_oversized(name):
    h = harness(name)
    padding = "x" * KINDS[name].max_bytes
    rejected(h, h.token(h.claims(padding=padding)), "oversized")


@pytest.mark.parametrize("name", ALL_KINDS)
@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "a..c", "a.b.c", "!!.??.**", None, 12,
                                   "eyJhbGciOiJFUzI1NiJ9.eyJ9.sig", "W10.e30.c2ln"])
def test_malformed(name, token):
    h = harness(name)
    rejected(h, token, {"malformed", "invalid_alg", "invalid_typ", "missing_kid"})


@pytest.mark.parametrize("name", ALL_KINDS)
def test_unknown_crit_is_rejected(name):
    h = harness(name)
    rejected(h, h.token(headers={"crit": ["exp"], "exp": 1}), "unknown_crit")


@pytest.mark.parametrize("name", [n for n in KEYED_BY_KID if KINDS[n].kid_required])
def test_missing_kid(name):
    h = harness(name)
    token = crypto.sign(h.claims(), h.key, typ=h.header_typ(), kid=None)
    rejected(h, token, "missing_kid")


def test_client_assertion_without_kid_tries_each_key():
    h = harness("client_assertion")
    token = crypto.sign(h.claims(), h.key, typ=None, kid=None)
    assert h.verify(token).kid == h.jwk["kid"]


def test_wrong_issuer():
    h = harness("access_token")
    rejected(h, h.token(h.claims(iss="https://impostor.example")), "invalid_issuer")


def test_tampered_payload_fails_the_signature():
    h = harness("access_token")
    header, _, signature = h.token().split(".")
    forged = _b64(h.claims(scope="resources:write"))
    rejected(h, f"{header}.{forged}.{signature}", "invalid_signature")


def test_key_type_mismatch_is_a_token_error_not_a_crash():
    """An EdDSA-labelled token checked against an EC key (and vice versa) must not raise anything but
    TokenError: PyJWT alone can raise non-JWT exceptions here."""
    h = harness("access_token")
    ed_key = crypto.generate_private_key("EdDSA")
    ed_token = jwt.encode(h.claims(), ed_key, algorithm="EdDSA",
                          headers={"typ": "at+jwt", "kid": h.jwk["kid"]})
    rejected(h, ed_token, "invalid_signature")
    h2 = harness("access_token", "EdDSA")
    es_token = jwt.encode(h2.claims(), h.key, algorithm="ES256", headers={"typ": "at+jwt", "kid": h2.jwk["kid"]})
    rejected(h2, es_token, "invalid_signature")


def test_pyjwt_alone_accepts_what_we_refuse():
    """Why the wrapper exists: PyJWT does not check typ, and accepts a string exp."""
    h = harness("access_token")
    public, _ = crypto.load_public_jwk(h.jwk)
    now = int(time.time())
    wrong_typ = h.token(h.claims(iat=now, exp=now + 100), typ="statuslist+jwt")
    assert jwt.decode(wrong_typ, public, algorithms=["ES256"], audience=AUD)
    string_exp = h.token(h.claims(iat=now, exp=str(now + 100)))
    assert jwt.decode(string_exp, public, algorithms=["ES256"], audience=AUD)
    with pytest.raises(TokenError) as excinfo:
        tokens.verify(wrong_typ, h.kind, keys=lambda kid: [h.jwk], audiences=[AUD], issuer=ISS)
    assert excinfo.value.reason == "invalid_typ"
    with pytest.raises(TokenError) as excinfo:
        tokens.verify(string_exp, h.kind, keys=lambda kid: [h.jwk], audiences=[AUD], issuer=ISS)
    assert excinfo.value.reason == "invalid_claim"
