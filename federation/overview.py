"""What the operators' federation status page shows: this node's place in the federation and, for
each peer, its trust chain, how far behind its feed we are, when it last synced and what it sent that
we refused.

Read-only and local: nothing here calls another node. A trust chain's state comes from the chain cache
that ``chains.chain_for`` fills (at join, during sync and in the background ``refresh_peers`` task) and
from the error the last pull recorded; a peer whose chain was never built is shown as not yet resolved.
A page must not hang because a peer is slow or down.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from registry.models import Platform
from registry.selectors import self_node

from . import chains, trust
from .models import Peer, TrustAnchor, Violation

RECENT_VIOLATIONS = 5

VALID, EXPIRED, INVALID, UNKNOWN = "valid", "expired", "invalid", "unknown"
# Reasons a pull fails with when the peer's configuration or chain did not verify (trust-chain and
# token-verifier reasons, see ``trust.TrustChainError`` and ``identity.tokens``), as opposed to a peer
# that is down (transport) or a change page that is broken (``page_*``, ``malformed_page``, ...).
CHAIN_FAILURES = frozenset({
    "malformed", "untrusted_anchor", "broken_link", "invalid_signature", "unknown_critical_claim",
    "policy_violation", "unknown_critical_operator", "max_path_length", "naming_constraints", "expired",
    "not_yet_valid", "lifetime_exceeded", "invalid_typ", "invalid_alg", "unknown_crit", "invalid_kid",
    "missing_kid", "missing_claim", "invalid_claim", "unknown_key", "invalid_issuer", "not_found",
    "wrong_content_type",
})


@dataclass(frozen=True)
class ChainState:
    state: str  # valid | expired | invalid | unknown
    expires_at: dt.datetime | None  # the earliest exp in the chain, when a chain is held
    anchor: str | None = None
    length: int = 0
    reason: str = ""  # why it is invalid: the verifier's reason code (the full error is under last sync)


@dataclass
class PeerStatus:
    peer: Peer
    chain: ChainState
    lag: int | None  # changes behind the origin's head (subordinates; we do not pull our superior)
    since_success: int | None  # seconds since the last successful pull
    recent_violations: list[Violation] = field(default_factory=list)

    @property
    def health(self) -> str:
        """ok | failing | never: one word for the row's colour and for tests."""
        if self.peer.consecutive_failures:
            return "failing"
        if self.peer.relation == Peer.Relation.SUBORDINATE and self.peer.last_success_at is None:
            return "never"
        return "ok"


@dataclass
class Overview:
    node: Platform | None
    superior: Peer | None
    anchors: list[dict[str, Any]]
    is_anchor: bool  # no superior: this node anchors its own chains
    peers: list[PeerStatus]
    checked_at: dt.datetime


def _failure_reason(peer: Peer) -> str | None:
    if not peer.consecutive_failures or not peer.last_error:
        return None
    return peer.last_error.split(":", 1)[0].strip()


def chain_state(peer: Peer, cached: trust.TrustChain | None, now: dt.datetime) -> ChainState:
    """The peer's chain as last seen, without building it: a failed verification on the last pull
    wins over an older cached chain (the next successful refresh clears it)."""
    reason = _failure_reason(peer)
    expires = dt.datetime.fromtimestamp(cached.expires_at, tz=dt.UTC) if cached is not None else None
    if reason in CHAIN_FAILURES:
        return ChainState(INVALID, expires or peer.configuration_expires_at, reason=reason)
    if cached is None:
        return ChainState(UNKNOWN, None)
    state = VALID if expires > now else EXPIRED
    return ChainState(state, expires, anchor=cached.anchor, length=len(cached.statements))


def _cached_chains(peers: list[Peer]) -> dict[str, trust.TrustChain]:
    """The chains ``chains.chain_for`` holds in the cache, in one round trip."""
    keys = {chains.CACHE_PREFIX + p.entity_id: p.entity_id for p in peers}
    found = cache.get_many(list(keys))
    return {keys[k]: v for k, v in found.items() if isinstance(v, trust.TrustChain)}


def _recent_violations(peers: list[Peer], limit: int) -> dict[int, list[Violation]]:
    """The newest ``limit`` violations of every peer in one query (a window per peer)."""
    if not peers:
        return {}
    ranked = (Violation.objects.filter(peer__in=peers)
              .annotate(rank=Window(RowNumber(), partition_by=[F("peer_id")],
                                    order_by=[F("created_at").desc(), F("id").desc()]))
              .filter(rank__lte=limit).order_by("peer_id", "rank"))
    grouped: dict[int, list[Violation]] = defaultdict(list)
    for violation in ranked:
        grouped[violation.peer_id].append(violation)
    return grouped


def _anchor_facts(anchor: TrustAnchor) -> dict[str, Any]:
    kids = [k.get("kid") for k in anchor.jwks if isinstance(k, dict)] if isinstance(anchor.jwks, list) else []
    return {"entity_id": anchor.entity_id, "kids": [k for k in kids if k], "pinned_at": anchor.created_at}


def federation_overview(*, now: dt.datetime | None = None, violations: int = RECENT_VIOLATIONS) -> Overview:
    now = now or timezone.now()
    peers = list(Peer.objects.order_by("relation", "entity_id"))
    cached = _cached_chains(peers)
    recent = _recent_violations(peers, violations)
    rows = []
    for peer in peers:
        subordinate = peer.relation == Peer.Relation.SUBORDINATE
        since = int((now - peer.last_success_at).total_seconds()) if peer.last_success_at else None
        rows.append(PeerStatus(peer=peer, chain=chain_state(peer, cached.get(peer.entity_id), now),
                               lag=peer.lag if subordinate else None, since_success=since,
                               recent_violations=recent.get(peer.pk, [])))
    superior = next((p for p in peers if p.relation == Peer.Relation.SUPERIOR), None)
    return Overview(node=self_node(), superior=superior,
                    anchors=[_anchor_facts(a) for a in TrustAnchor.objects.order_by("entity_id")],
                    is_anchor=superior is None, peers=rows, checked_at=now)
