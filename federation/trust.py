"""Trust chains: validation, metadata policy and constraints (OpenID Federation 1.0 §10.2, §6; CONTRACT §8).

Pure: no database, no settings, no HTTP. A chain is a list of compact entity statements, the subject's
entity configuration first, then the subordinate statements up the hierarchy, then the trust anchor's
entity configuration. Signatures, ``typ``, size and times are checked by the one verifier
(``identity.tokens``); this module adds linkage, pinned anchors, metadata policy and constraints. Every
failure is a ``TrustChainError`` with a stable ``reason``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from identity import crypto, tokens
from registry.identifiers import prefix_within

MAX_CHAIN_LENGTH = 8  # leaf + 5 intermediates + anchor statement + anchor configuration: far beyond "1+M+N"
STANDARD_OPERATORS = ("value", "add", "default", "one_of", "subset_of", "superset_of", "essential")
PREFIX_WITHIN = "prefix_within"  # custom operator (CONTRACT §8)
UNDERSTOOD_OPERATORS = frozenset({*STANDARD_OPERATORS, PREFIX_WITHIN})
# Claims only one kind of statement may carry (spec §3.1.2, §3.1.3).
_CONFIGURATION_ONLY = ("authority_hints", "trust_anchor_hints", "trust_marks")
_SUBORDINATE_ONLY = ("metadata_policy", "metadata_policy_crit", "constraints", "source_endpoint")
# Operator pairs the spec does not allow in one parameter policy: one_of combines only with
# value, default and essential.
_FORBIDDEN_PAIRS = (("one_of", "add"), ("one_of", "subset_of"), ("one_of", "superset_of"))

Policy = dict[str, dict[str, dict[str, Any]]]  # entity type -> parameter -> operator -> operand


class TrustChainError(Exception):
    """A chain that must not be trusted. ``index`` is the offending statement's position, when known.

    Reasons: ``malformed``, ``untrusted_anchor``, ``broken_link``, ``invalid_signature``,
    ``unknown_critical_claim``, ``policy_violation``, ``unknown_critical_operator``, ``max_path_length``,
    ``naming_constraints``, and the verifier's own reasons passed through (``expired``,
    ``not_yet_valid``, ``lifetime_exceeded``, ``invalid_typ``, ``invalid_alg``, ``oversized``, ...).
    """

    def __init__(self, reason: str, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.index = index


@dataclass(frozen=True)
class TrustChain:
    subject: str  # the chain subject's entity ID (the leaf)
    anchor: str  # the trust anchor's entity ID
    statements: tuple[dict[str, Any], ...]  # verified payloads, subject's configuration first
    metadata: dict[str, Any]  # the subject's resolved metadata (superior's metadata + merged policy applied)
    policy: Policy  # the merged metadata policy that was applied (empty when the chain carries none)
    jwks_by_entity: dict[str, list[dict[str, Any]]]  # federation keys as vouched for by each superior
    expires_at: int  # the earliest exp in the chain

    @property
    def ucri_prefixes(self) -> tuple[str, ...]:
        """The subject's resolved ``compute_registry.ucri_prefixes`` (checked against ``prefix_within``)."""
        value = self.metadata.get("compute_registry", {}).get("ucri_prefixes")
        return tuple(value) if isinstance(value, list) else ()


def decode_unverified(token: Any) -> dict[str, Any]:
    """The payload of an entity statement, structure checked but NOT verified: for walking hints only."""
    try:
        return tokens.parse_unverified(token, tokens.ENTITY_STATEMENT)[1]
    except tokens.TokenError as exc:
        raise TrustChainError(exc.reason, str(exc)) from exc


def fetch_endpoint(configuration: str) -> str:
    """The ``federation_fetch_endpoint`` an entity configuration advertises."""
    endpoint = (decode_unverified(configuration).get("metadata", {}).get("federation_entity", {})
                .get("federation_fetch_endpoint"))
    if not isinstance(endpoint, str):
        raise TrustChainError("malformed", "the configuration publishes no federation_fetch_endpoint")
    return endpoint


def walk(entity_id: str, *, anchors: Collection[str], configuration_of: Callable[[str], str],
         statement_about: Callable[[str, str, str], str], max_depth: int = MAX_CHAIN_LENGTH - 2) -> list[str]:
    """Collect [subject configuration, statements about each level, anchor configuration] by following
    ``authority_hints`` up to one of ``anchors``. I/O is the caller's: ``configuration_of(entity)`` and
    ``statement_about(superior, superior_configuration, subject)`` return compact statements. Nothing
    here is trusted yet: pass the result to ``validate_chain``."""
    current, current_configuration = entity_id, configuration_of(entity_id)
    statements = [current_configuration]
    if current in anchors:
        return statements
    for _ in range(max_depth):
        hints = decode_unverified(current_configuration).get("authority_hints") or []
        superior = next((h for h in hints if isinstance(h, str)), None)
        if superior is None:
            raise TrustChainError("untrusted_anchor", f"{current} names no superior and is not a pinned anchor")
        superior_configuration = configuration_of(superior)
        statements.append(statement_about(superior, superior_configuration, current))
        if superior in anchors:
            statements.append(superior_configuration)
            return statements
        current, current_configuration = superior, superior_configuration
    raise TrustChainError("untrusted_anchor", f"no pinned anchor within {max_depth} levels of {entity_id}")


def keys_for(chain: TrustChain, entity_id: str) -> list[dict[str, Any]]:
    """Federation keys of an entity in the chain (its superior's word; the anchor's pin); [] otherwise."""
    return list(chain.jwks_by_entity.get(entity_id, ()))


def key_lookup(chain: TrustChain, entity_id: str) -> tokens.KeyLookup:
    """``keys_for`` as a ``tokens.verify(keys=...)`` lookup, e.g. for a change page or signed JWKS."""
    keys = keys_for(chain, entity_id)
    return lambda _kid: keys


def validate_chain(tokens_: Sequence[str], *, anchors: Mapping[str, Sequence[dict[str, Any]]],
                   now: int | None = None) -> TrustChain:
    """Validate ``[subject EC, subordinate statements..., anchor EC]`` against the pinned ``anchors``."""
    now = int(time.time()) if now is None else now
    if isinstance(tokens_, str) or not 1 <= len(tokens_) <= MAX_CHAIN_LENGTH or len(tokens_) == 2:
        raise TrustChainError("malformed", "a chain is [anchor EC] or [EC, 1 to 6 subordinate statements, "
                                           "anchor EC]")
    es = [_parse(token, j) for j, token in enumerate(tokens_)]
    last = len(es) - 1
    anchor = _check_shape_and_links(es, anchors)

    # Top-down, so each statement is checked with keys that are already trusted: the anchor's
    # configuration with the pin (never with the keys it publishes about itself), then each statement
    # with the jwks its superior vouched for. For the subject's configuration that is the subordinate
    # statement's jwks, so a key the subject merely lists about itself is never enough.
    trusted = list(anchors[anchor])
    for j in range(last, 0, -1):
        _verify(tokens_[j], trusted, j, now)
        trusted = es[j]["jwks"]["keys"]
    signer = _verify(tokens_[0], trusted, 0, now)
    # §10.2 also wants the subject's configuration to verify with its own jwks.
    if signer.kid not in {_thumbprint(jwk) for jwk in es[0]["jwks"]["keys"]}:
        raise TrustChainError("invalid_signature", "the subject signs with a key missing from its own jwks", index=0)

    subordinates = es[1:last]  # subordinates[k] is issued by the (k+1)-th superior of the subject
    for k, statement in enumerate(subordinates):
        _check_constraints(statement.get("constraints"), intermediates=k, below=[s["sub"] for s in es[1:k + 2]],
                           index=k + 1)
    metadata = _subject_metadata(es)
    crit = {name for s in subordinates for name in _crit_operators(s)}
    policy = merge_policies((s.get("metadata_policy") for s in reversed(subordinates)), crit=crit)
    return TrustChain(
        subject=es[0]["sub"], anchor=anchor, statements=tuple(es), metadata=apply_policy(metadata, policy),
        policy=policy,
        jwks_by_entity={**{s["sub"]: list(s["jwks"]["keys"]) for s in subordinates}, anchor: list(anchors[anchor])},
        expires_at=min(s["exp"] for s in es),
    )


# Statements -----------------------------------------------------------------------------------------

def _parse(token: Any, index: int) -> dict[str, Any]:
    try:
        _, claims = tokens.parse_unverified(token, tokens.ENTITY_STATEMENT)
    except tokens.TokenError as exc:
        raise TrustChainError(exc.reason, f"statement {index}: {exc}", index=index) from exc
    for name in ("iss", "sub"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise TrustChainError("malformed", f"statement {index} lacks {name}", index=index)
    for name in ("iat", "exp"):
        if name not in claims:  # types are the verifier's business
            raise TrustChainError("malformed", f"statement {index} lacks {name}", index=index)
    jwks = claims.get("jwks")
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise TrustChainError("malformed", f"statement {index} lacks a JWK Set in jwks", index=index)
    if "metadata" in claims and not _is_metadata(claims["metadata"]):
        raise TrustChainError("malformed", f"statement {index}: metadata is entity type -> object", index=index)
    if claims.get("crit"):  # we process no extension claims, so any critical one is not understood
        raise TrustChainError("unknown_critical_claim", f"statement {index} has critical claims "
                                                        f"{claims['crit']!r}", index=index)
    wrong = _SUBORDINATE_ONLY if claims["iss"] == claims["sub"] else _CONFIGURATION_ONLY
    if misplaced := [name for name in wrong if name in claims]:
        raise TrustChainError("malformed", f"statement {index} carries {misplaced} in the wrong kind of "
                                           "statement", index=index)
    return claims


def _is_metadata(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())


def _check_shape_and_links(es: list[dict[str, Any]], anchors: Mapping[str, Any]) -> str:
    last = len(es) - 1
    for j, statement in enumerate(es):
        configuration = j in (0, last)
        if (statement["iss"] == statement["sub"]) != configuration:
            kind = "an entity configuration (iss == sub)" if configuration else "a subordinate statement"
            raise TrustChainError("malformed", f"statement {j} must be {kind}", index=j)
    anchor = es[last]["iss"]
    if anchor not in anchors:
        raise TrustChainError("untrusted_anchor", f"{anchor} is not a pinned trust anchor", index=last)
    for j in range(last):
        if es[j]["iss"] != es[j + 1]["sub"]:
            raise TrustChainError("broken_link", f"statement {j} is issued by {es[j]['iss']} but statement "
                                                 f"{j + 1} is about {es[j + 1]['sub']}", index=j)
    entities = [s["sub"] for s in es[1:last]] + [anchor]
    if len(set(entities)) != len(entities):
        raise TrustChainError("broken_link", "an entity appears twice in the chain")
    if last:  # the subject names its superior (spec §3.2: required below a trust anchor)
        hints = es[0].get("authority_hints")
        if not isinstance(hints, list) or es[1]["iss"] not in hints:
            raise TrustChainError("broken_link", f"the subject's authority_hints do not name {es[1]['iss']}",
                                  index=0)
    return anchor


def _verify(token: str, keys: list[dict[str, Any]], index: int, now: int) -> tokens.Verified:
    try:
        return tokens.verify(token, tokens.ENTITY_STATEMENT, keys=lambda _kid: keys, now=now)
    except tokens.TokenError as exc:
        # A kid the trusted set lacks is, for a chain, simply a signature by a key nobody vouched for.
        reason = "invalid_signature" if exc.reason == "unknown_key" else exc.reason
        raise TrustChainError(reason, f"statement {index}: {exc}", index=index) from exc


def _thumbprint(jwk: dict[str, Any]) -> str | None:
    try:
        return crypto.thumbprint(jwk)
    except crypto.KeyError_:
        return None


# Constraints (§6.2) ---------------------------------------------------------------------------------

def _check_constraints(constraints: Any, *, intermediates: int, below: list[str], index: int) -> None:
    """``intermediates``: entities between this statement's issuer and the subject; ``below``: their IDs."""
    if constraints is None:
        return
    if not isinstance(constraints, dict):
        raise TrustChainError("malformed", f"statement {index}: constraints must be an object", index=index)
    max_path = constraints.get("max_path_length")
    if max_path is not None:
        if isinstance(max_path, bool) or not isinstance(max_path, int) or max_path < 0:
            raise TrustChainError("malformed", f"statement {index}: max_path_length must be an integer >= 0",
                                  index=index)
        if intermediates > max_path:
            raise TrustChainError("max_path_length", f"statement {index} allows {max_path} intermediates, the "
                                                     f"chain has {intermediates}", index=index)
    naming = constraints.get("naming_constraints")
    if naming is not None:
        for entity_id in below:
            if not _name_allowed(urlsplit(entity_id).hostname or "", naming):
                raise TrustChainError("naming_constraints", f"{entity_id} is outside statement {index}'s "
                                                            "naming constraints", index=index)


def _name_allowed(host: str, naming: Any) -> bool:
    """RFC 5280 domain constraints: ``.example.com`` matches subdomains only, ``example.com`` the host."""
    def matches(constraint: Any) -> bool:
        if not isinstance(constraint, str):
            return False
        return host.endswith(constraint) if constraint.startswith(".") else host == constraint

    permitted, excluded = (naming.get(k) if isinstance(naming, dict) else None for k in ("permitted", "excluded"))
    if any(matches(c) for c in excluded or ()):
        return False
    return permitted is None or any(matches(c) for c in permitted)


def _subject_metadata(es: list[dict[str, Any]]) -> dict[str, Any]:
    """The subject's metadata with its superior's ``metadata`` overrides and allowed_entity_types applied."""
    metadata = copy.deepcopy(es[0].get("metadata") or {})
    if len(es) == 1:
        return metadata
    for entity_type, params in (es[1].get("metadata") or {}).items():
        if entity_type in metadata:  # superior metadata applies only to types the subject declares
            metadata[entity_type].update(copy.deepcopy(params))
    for statement in es[1:-1]:
        allowed = (statement.get("constraints") or {}).get("allowed_entity_types")
        if isinstance(allowed, list):
            metadata = {t: v for t, v in metadata.items() if t == "federation_entity" or t in allowed}
    return metadata


# Metadata policy (§6.1) -----------------------------------------------------------------------------

def _violation(message: str) -> TrustChainError:
    return TrustChainError("policy_violation", message)


def _crit_operators(statement: dict[str, Any]) -> list[str]:
    crit = statement.get("metadata_policy_crit")
    if crit is None:
        return []
    if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
        raise TrustChainError("malformed", "metadata_policy_crit must be a non-empty array of operator names")
    return crit


def merge_policies(policies: Iterable[Mapping[str, Any] | None], *, crit: Collection[str] = ()) -> Policy:
    """Merge ``metadata_policy`` claims top-down (the anchor's first); ``crit``: operators that must be known.

    Each policy is validated first: operators we do not understand are dropped unless critical.
    """
    merged: Policy = {}
    for policy in policies:
        if policy is None:
            continue
        for entity_type, params in _validated(policy, crit).items():
            current = merged.setdefault(entity_type, {})
            for name, operators in params.items():
                where = f"{entity_type}.{name}"
                current[name] = operators if name not in current else _merge(current[name], operators, where)
    return merged


def _validated(policy: Any, crit: Collection[str]) -> Policy:
    if not isinstance(policy, dict) or not all(
            isinstance(params, dict) and all(isinstance(ops, dict) for ops in params.values())
            for params in policy.values()):
        raise _violation("metadata_policy must be entity type -> parameter -> operators")
    result: Policy = {}
    for entity_type, params in policy.items():
        for name, operators in params.items():
            where = f"{entity_type}.{name}"
            kept = {}
            for operator, operand in operators.items():
                if operator in UNDERSTOOD_OPERATORS:
                    _check_operand(operator, operand, where)
                    kept[operator] = copy.deepcopy(operand)
                elif operator in crit:
                    raise TrustChainError("unknown_critical_operator",
                                          f"{where}: critical operator {operator!r} is not understood")
            _check_combination(kept, where)
            result.setdefault(entity_type, {})[name] = kept
    return result


_OPERAND_OK: dict[str, Callable[[Any], bool]] = {
    "value": lambda v: True,  # null removes the parameter
    "add": lambda v: isinstance(v, list),
    "default": lambda v: v is not None,
    "one_of": lambda v: isinstance(v, list) and bool(v),
    "subset_of": lambda v: isinstance(v, list),
    "superset_of": lambda v: isinstance(v, list),
    "essential": lambda v: isinstance(v, bool),
    PREFIX_WITHIN: lambda v: isinstance(v, list) and bool(v) and all(isinstance(p, str) and p for p in v),
}


def _check_operand(operator: str, operand: Any, where: str) -> None:
    if not _OPERAND_OK[operator](operand):
        raise _violation(f"{where}: {operator} has an operand of the wrong type")


def _check_combination(ops: dict[str, Any], where: str) -> None:
    """The spec's combination rules, for one parameter policy and again after every merge."""
    for a, b in _FORBIDDEN_PAIRS:
        if a in ops and b in ops:
            raise _violation(f"{where}: {a} cannot be combined with {b}")
    if "add" in ops and "subset_of" in ops and not _subset(ops["add"], ops["subset_of"]):
        raise _violation(f"{where}: add must be a subset of subset_of")
    if "subset_of" in ops and "superset_of" in ops and not _subset(ops["superset_of"], ops["subset_of"]):
        raise _violation(f"{where}: subset_of must be a superset of superset_of")
    if "value" not in ops:
        return
    value = ops["value"]
    if value is None and (ops.get("essential") is True or "default" in ops):
        raise _violation(f"{where}: value null cannot be combined with default or essential true")
    if "one_of" in ops and not _member(value, ops["one_of"]):
        raise _violation(f"{where}: value must be one of one_of")
    if not any(operator in ops for operator in ("add", "subset_of", "superset_of")):
        return
    values = [] if value is None else value  # null removes the parameter: an empty set of values
    if not isinstance(values, list) or not (_subset(ops.get("add", []), values)
                                            and _subset(values, ops.get("subset_of", values))
                                            and _subset(ops.get("superset_of", []), values)):
        raise _violation(f"{where}: value is inconsistent with add, subset_of or superset_of")


def _merge(current: dict[str, Any], lower: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(current)
    for operator, operand in lower.items():
        if operator not in merged:
            merged[operator] = operand
            continue
        upper = merged[operator]
        if operator in ("value", "default"):
            if not _equal(upper, operand):
                raise _violation(f"{where}: {operator} {operand!r} conflicts with the superior's {upper!r}")
        elif operator in ("add", "superset_of"):
            merged[operator] = _union(upper, operand)
        elif operator in ("one_of", "subset_of"):
            merged[operator] = _intersection(upper, operand)
            if operator == "one_of" and not merged[operator]:
                raise _violation(f"{where}: one_of leaves no value in common with the superior's")
        elif operator == "essential":
            merged[operator] = upper or operand
        elif operator == PREFIX_WITHIN:
            # A subordinate may only narrow its superior's delegation; the narrower list is kept.
            if outside := [p for p in operand if not any(prefix_within(p, a) for a in upper)]:
                raise _violation(f"{where}: {outside} lie outside the superior's prefix_within {upper}")
            merged[operator] = operand
    _check_combination(merged, where)
    return merged


def apply_policy(metadata: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    """Apply a merged policy to metadata: a new dict, or ``policy_violation``.

    Policies for entity types the metadata does not declare are ignored (they add no roles).
    """
    result = copy.deepcopy(dict(metadata))
    for entity_type, params in policy.items():
        if entity_type in result:
            for name, ops in params.items():
                _apply(result[entity_type], name, ops, f"{entity_type}.{name}")
    return result


def _apply(entity: dict[str, Any], name: str, ops: dict[str, Any], where: str) -> None:
    # Order per spec: value, add, default, one_of, subset_of, superset_of, then the custom check
    # prefix_within (custom checks run before essential, §6.1.3.2), essential last.
    if "value" in ops:
        if ops["value"] is None:
            entity.pop(name, None)
        else:
            entity[name] = copy.deepcopy(ops["value"])
    if "add" in ops:
        entity[name] = _union(_list_param(entity.get(name, []), where), ops["add"])
    if "default" in ops and name not in entity:
        entity[name] = copy.deepcopy(ops["default"])
    if name in entity:
        if "one_of" in ops and not _member(entity[name], ops["one_of"]):
            raise _violation(f"{where}: {entity[name]!r} is not one of {ops['one_of']}")
        if "subset_of" in ops:
            entity[name] = _intersection(_list_param(entity[name], where), ops["subset_of"])
        if "superset_of" in ops and not _subset(ops["superset_of"], _list_param(entity[name], where)):
            raise _violation(f"{where}: must include {ops['superset_of']}")
        if PREFIX_WITHIN in ops:
            prefixes = _list_param(entity[name], where)
            if outside := [p for p in prefixes if not isinstance(p, str)
                           or not any(prefix_within(p, a) for a in ops[PREFIX_WITHIN])]:
                raise _violation(f"{where}: {outside} lie outside the delegated prefixes {ops[PREFIX_WITHIN]}")
    if ops.get("essential") and name not in entity:
        raise _violation(f"{where}: the parameter is essential")


def _list_param(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _violation(f"{where}: the parameter must be an array for this policy")
    return value


# JSON values compared as JSON (so true != 1), arrays as sets.
def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _keys(values: Iterable[Any]) -> set[str]:
    return {_key(v) for v in values}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return _keys(a) == _keys(b)
    return _key(a) == _key(b)


def _member(value: Any, values: list[Any]) -> bool:
    return _key(value) in _keys(values)


def _subset(a: list[Any], b: list[Any]) -> bool:
    return _keys(a) <= _keys(b)


def _union(a: list[Any], b: list[Any]) -> list[Any]:
    result, seen = list(a), _keys(a)
    for value in b:
        if _key(value) not in seen:
            seen.add(_key(value))
            result.append(value)
    return result


def _intersection(a: list[Any], b: list[Any]) -> list[Any]:
    allowed = _keys(b)
    return [v for v in a if _key(v) in allowed]
