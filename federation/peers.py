"""Peers as OAuth clients of this node (CONTRACT §6): our superior may read our feed, our
subordinates may notify us; each authenticates with the federation keys we hold for it."""

from __future__ import annotations

from typing import Any

from .models import Peer

SCOPES = {Peer.Relation.SUPERIOR: ("federation:sync",), Peer.Relation.SUBORDINATE: ("federation:notify",)}


def node_client(client_id: str) -> tuple[list[dict[str, Any]], tuple[str, ...]] | None:
    peer = Peer.objects.filter(entity_id=client_id).first()
    if peer is None or not peer.jwks:
        return None
    return list(peer.jwks), SCOPES[peer.relation]
