"""Provider-side verification kit for handoff tickets (CONTRACT §7). No Django, no database.

A provider's job intake (a gateway in front of slurmrestd, a Kubernetes admission webhook, a portal)
calls ``Verifier.verify`` with the request it received; the answer is accept, or one precise reason.
The ticket is checked offline against the issuing node's ``handoff`` keys: given directly, or fetched
from the node's signed JWKS and trusted through a chain to a pinned trust anchor.

Command line::

    python -m scheduling.kit --prefix 86.52.GZ01 --endpoint https://slurm.gz.example/jobs \\
        --anchor https://cir.national.example.cn --anchor-jwks anchor.json \\
        --ticket TICKET --proof PROOF --method POST --body job.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import rfc8785

from federation import trust
from identity import crypto, tokens

FETCH_TIMEOUT = 10
MAX_FETCH = 64 * 1024
MAX_AGE = 3600  # CONTRACT §5: the JWKS refresh interval
REFETCH_AFTER = 60


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str  # "ok" or a stable reason
    claims: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""


class ReplayCache:
    """Single-use ``jti``s for tickets and proofs, kept until they expire. Thread-safe, in memory:
    a provider with several intake processes passes its own shared implementation."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def seen(self, key: str) -> bool:
        with self._lock:
            expiry = self._seen.get(key)
            return expiry is not None and expiry > time.time()

    def add_all(self, keys: Sequence[str], until: float) -> bool:
        """Record every key, or none if one was already recorded (atomic)."""
        with self._lock:
            now = time.time()
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if any(k in self._seen for k in keys):
                return False
            for key in keys:
                self._seen[key] = until
            return True


def _get(url: str, media: str) -> str:
    import requests

    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT, stream=True, allow_redirects=False)
        body = response.raw.read(MAX_FETCH + 1, decode_content=True)
    except requests.RequestException as exc:
        raise tokens.TokenError("untrusted_issuer", f"{url}: {exc.__class__.__name__}") from exc
    if response.status_code != 200 or len(body) > MAX_FETCH:
        raise tokens.TokenError("untrusted_issuer", f"{url} answered {response.status_code}")
    if response.headers.get("Content-Type", "").split(";")[0].strip() != f"application/{media}":
        raise tokens.TokenError("untrusted_issuer", f"{url} sent the wrong content type")
    return body.decode("ascii", "replace").strip()


class StaticKeys:
    """The issuing node's handoff keys, configured directly (e.g. from its signed JWKS, checked once)."""

    def __init__(self, issuer: str, jwks: Sequence[Mapping[str, Any]]) -> None:
        self.issuer = issuer
        self.jwks = [dict(k) for k in jwks if k.get("cir_use", "handoff") == "handoff"]

    def handoff_keys(self, issuer: str, kid: str | None = None) -> list[dict[str, Any]]:
        if issuer != self.issuer:
            raise tokens.TokenError("untrusted_issuer", f"tickets are accepted from {self.issuer} only")
        return self.jwks


class AnchorKeys:
    """Any node that chains to the pinned anchor: its signed JWKS, verified through the chain."""

    def __init__(self, anchor: str, anchor_jwks: Sequence[Mapping[str, Any]],
                 get: Callable[[str, str], str] = _get) -> None:
        self.anchors = {anchor.rstrip("/"): [dict(k) for k in anchor_jwks]}
        self._get = get
        self._cache: dict[str, tuple[float, list[dict[str, Any]], float]] = {}

    def _configuration(self, entity_id: str) -> str:
        return self._get(f"{entity_id}/.well-known/openid-federation", "entity-statement+jwt")

    def _statement(self, superior: str, superior_configuration: str, subject: str) -> str:
        from urllib.parse import urlencode

        return self._get(f"{trust.fetch_endpoint(superior_configuration)}?{urlencode({'sub': subject})}",
                         "entity-statement+jwt")

    def handoff_keys(self, issuer: str, kid: str | None = None) -> list[dict[str, Any]]:
        now = time.time()
        cached = self._cache.get(issuer)
        if cached and cached[0] > now + 30:
            known = kid is None or any(k.get("kid") == kid for k in cached[1])
            # An unknown kid after a rotation: look again, at most once a minute per issuer.
            if known or now - cached[2] < REFETCH_AFTER:
                if not cached[1]:
                    raise tokens.TokenError("untrusted_issuer", f"{issuer} could not be trusted recently")
                return cached[1]
        try:
            statements = trust.walk(issuer, anchors=self.anchors, configuration_of=self._configuration,
                                    statement_about=self._statement)
            chain = trust.validate_chain(statements, anchors=self.anchors)
        except (trust.TrustChainError, tokens.TokenError) as exc:
            self._cache[issuer] = (now + REFETCH_AFTER, [], now)  # don't let callers make us fetch in a loop
            raise tokens.TokenError("untrusted_issuer", f"no valid trust chain for {issuer}: {exc}") from exc
        uri = (chain.metadata.get("compute_registry") or {}).get("signed_jwks_uri")
        if not isinstance(uri, str):
            raise tokens.TokenError("untrusted_issuer", f"{issuer} publishes no signed_jwks_uri")
        signed = tokens.verify(self._get(uri, "jwk-set+jwt"), tokens.SIGNED_JWKS,
                               keys=trust.key_lookup(chain, issuer), issuer=issuer).claims
        keys = [k for k in signed.get("keys") or [] if isinstance(k, dict) and k.get("cir_use") == "handoff"]
        # Refresh at least every JWKS max-age (an hour), whatever the signed set's own expiry.
        self._cache[issuer] = (min(float(signed["exp"]), float(chain.expires_at), now + MAX_AGE), keys, now)
        return keys


def normalize_url(url: str) -> str:
    """For ``htu`` comparison (RFC 9449 §4.3): no query or fragment, case-insensitive scheme and host,
    default ports dropped. Raises ValueError for an unparsable URL (bad port, broken IPv6 literal)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port in (None, default) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        netloc = f"[{host}]" if port in (None, default) else f"[{host}]:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 8785 needs I-JSON: a job with a repeated member name is ambiguous and refused."""
    if len({name for name, _ in pairs}) != len(pairs):
        raise ValueError("duplicate member names")
    return dict(pairs)


_TICKET_REASONS = {"invalid_audience": "wrong_audience", "expired": "expired", "not_yet_valid": "expired",
                   "lifetime_exceeded": "expired", "untrusted_issuer": "untrusted_issuer"}


class Verifier:
    """Verifies tickets for one provider prefix and one endpoint URL it serves."""

    def __init__(self, *, provider_prefix: str, endpoint_url: str, keys: StaticKeys | AnchorKeys,
                 replay: ReplayCache | None = None) -> None:
        self.provider_prefix = provider_prefix
        self.endpoint_url = endpoint_url
        self.keys = keys
        self.replay = replay or ReplayCache()

    def verify(self, *, authorization: str | None, dpop: str | None, method: str, body: bytes) -> Decision:
        """``authorization`` is the ``Authorization`` header (``DPoP <ticket>``), ``dpop`` the ``DPoP``
        header, ``body`` the raw job body as received."""
        scheme, _, ticket = (authorization or "").partition(" ")
        if scheme.lower() != "dpop" or not ticket.strip():
            return Decision(False, "missing_ticket", detail="send Authorization: DPoP <ticket>")
        ticket = ticket.strip()
        if not dpop:
            return Decision(False, "missing_proof", detail="send a DPoP proof")
        try:
            header, unverified = tokens.parse_unverified(ticket, tokens.HANDOFF_TICKET)
            issuer = unverified.get("iss")
            if not isinstance(issuer, str):
                raise tokens.TokenError("invalid_ticket", "the ticket names no issuer")
            keys = self.keys.handoff_keys(issuer, header.get("kid"))
            claims = tokens.verify(ticket, tokens.HANDOFF_TICKET, keys=lambda kid: keys,
                                   audiences=[self.provider_prefix], issuer=issuer,
                                   replay=lambda kind, jti, until: True).claims
        except tokens.TokenError as exc:
            return Decision(False, _TICKET_REASONS.get(exc.reason, "invalid_ticket"), detail=str(exc))
        if claims.get("endpoint") != self.endpoint_url:
            return Decision(False, "wrong_endpoint", claims, "the ticket is for another endpoint")
        if self.replay.seen(f"ticket:{issuer}:{claims['jti']}"):
            return Decision(False, "replayed_ticket", claims, "this ticket was used before")
        try:
            proof = tokens.verify(dpop, tokens.DPOP_PROOF, replay=lambda kind, jti, until: True)
        except tokens.TokenError as exc:
            return Decision(False, "invalid_proof", claims, str(exc))
        if self.replay.seen(f"proof:{proof.claims['jti']}"):
            return Decision(False, "replayed_proof", claims, "this proof was used before")
        if crypto.thumbprint(proof.jwk) != (claims.get("cnf") or {}).get("jkt"):
            return Decision(False, "proof_key_mismatch", claims, "the proof is signed by another key")
        if proof.claims.get("htm") != method.upper():
            return Decision(False, "invalid_proof", claims, "htm does not match the request method")
        try:
            htu_ok = isinstance(proof.claims.get("htu"), str) and \
                normalize_url(proof.claims["htu"]) == normalize_url(self.endpoint_url)
        except ValueError:
            return Decision(False, "invalid_proof", claims, "htu is not a URL")
        if not htu_ok:
            return Decision(False, "wrong_endpoint", claims, "htu is not this endpoint")
        if proof.claims.get("ath") != crypto.sha256_b64url(ticket):
            return Decision(False, "invalid_proof", claims, "ath is not the hash of this ticket")
        try:
            job = json.loads(body, object_pairs_hook=_unique_names)
            digest = hashlib.sha256(rfc8785.dumps(job)).hexdigest()
        except (ValueError, TypeError, RecursionError, rfc8785.CanonicalizationError):
            return Decision(False, "invalid_job", claims, "the body is not canonicalisable JSON")
        if digest != claims.get("job_sha256"):
            return Decision(False, "tampered_job", claims, "the job differs from the one the ticket was issued for")
        until = float(claims["exp"]) + tokens.LEEWAY
        if not self.replay.add_all([f"ticket:{issuer}:{claims['jti']}", f"proof:{proof.claims['jti']}"], until):
            return Decision(False, "replayed_ticket", claims, "used concurrently")
        return Decision(True, "ok", claims)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduling.kit", description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="this provider's prefix (the ticket's aud)")
    parser.add_argument("--endpoint", required=True, help="the endpoint URL this intake serves")
    trust_group = parser.add_mutually_exclusive_group(required=True)
    trust_group.add_argument("--anchor", help="pinned trust anchor entity ID (with --anchor-jwks)")
    trust_group.add_argument("--issuer", help="the issuing node's entity ID (with --issuer-jwks)")
    parser.add_argument("--anchor-jwks", help="file with the anchor's federation JWK Set")
    parser.add_argument("--issuer-jwks", help="file with the issuer's JWKS (handoff keys)")
    parser.add_argument("--ticket", required=True)
    parser.add_argument("--proof", required=True)
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", required=True, help="file with the job body as received")
    args = parser.parse_args(argv)

    def load(path: str | None) -> list[dict[str, Any]]:
        if not path:
            parser.error("give the JWKS file for the chosen trust source")
        document = json.loads(open(path, encoding="utf-8").read())  # noqa: SIM115 - tiny CLI
        return document["keys"] if isinstance(document, dict) else document

    keys = AnchorKeys(args.anchor, load(args.anchor_jwks)) if args.anchor else StaticKeys(args.issuer,
                                                                                          load(args.issuer_jwks))
    with open(args.body, "rb") as handle:
        body = handle.read()
    decision = Verifier(provider_prefix=args.prefix, endpoint_url=args.endpoint, keys=keys).verify(
        authorization=f"DPoP {args.ticket}", dpop=args.proof, method=args.method, body=body)
    print(json.dumps({"accepted": decision.accepted, "reason": decision.reason, "detail": decision.detail}))
    return 0 if decision.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
