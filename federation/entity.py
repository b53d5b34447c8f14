"""This node as an OpenID Federation entity: its configuration, subordinate statements about its peers,
and its API keys signed by its federation key (CONTRACT §8)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from identity import keys
from identity.models import Purpose
from registry.models import Platform
from registry.services import this_node

from .models import Peer

STATEMENT_LIFETIME = dt.timedelta(days=1)
# The national node lets a regional node have industry nodes below it; deeper nodes allow none.
MAX_PATH_LENGTH = {Platform.Role.NATIONAL: 1}


def endpoints(entity_id: str) -> dict[str, str]:
    return {
        "federation_fetch_endpoint": f"{entity_id}/federation/fetch",
        "federation_list_endpoint": f"{entity_id}/federation/list",
        "federation_resolve_endpoint": f"{entity_id}/federation/resolve",
        "api_base": f"{entity_id}/api/v1",
        "change_feed_endpoint": f"{entity_id}/federation/changes",
        "notify_endpoint": f"{entity_id}/federation/notify",
        "token_endpoint": f"{entity_id}/oauth/token",
        "jwks_uri": f"{entity_id}/.well-known/jwks.json",
        "signed_jwks_uri": f"{entity_id}/.well-known/signed-jwks",
        "audit_checkpoint_endpoint": f"{entity_id}/api/v1/audit/checkpoints/latest",
    }


def federation_jwks(now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Published federation keys: the current one and, a day ahead, its successor (rollover)."""
    keys.ensure_keys((Purpose.FEDERATION,), now=now)
    return [{**k.public_jwk, "alg": k.alg, "use": "sig"} for k in keys.published((Purpose.FEDERATION,), now=now)]


def _times(now: dt.datetime) -> dict[str, int]:
    issued = int(now.timestamp())
    return {"iat": issued, "exp": issued + int(STATEMENT_LIFETIME.total_seconds())}


def _sign(claims: dict[str, Any], typ: str, now: dt.datetime) -> str:
    return keys.sign(Purpose.FEDERATION, claims, typ=typ, now=now).token


def configuration(now: dt.datetime | None = None) -> str:
    now = now or timezone.now()
    node = this_node()
    urls = endpoints(node.entity_id)
    claims: dict[str, Any] = {
        "iss": node.entity_id,
        "sub": node.entity_id,
        **_times(now),
        "jwks": {"keys": federation_jwks(now)},
        "metadata": {
            "federation_entity": {name: urls[name] for name in (
                "federation_fetch_endpoint", "federation_list_endpoint", "federation_resolve_endpoint")},
            "compute_registry": {
                "ucri_prefixes": [node.prefix],
                **{name: urls[name] for name in (
                    "api_base", "change_feed_endpoint", "notify_endpoint", "token_endpoint", "jwks_uri",
                    "signed_jwks_uri", "audit_checkpoint_endpoint")},
            },
        },
    }
    superior = Peer.objects.filter(relation=Peer.Relation.SUPERIOR).first()
    if superior is not None:
        claims["authority_hints"] = [superior.entity_id]
    return _sign(claims, "entity-statement+jwt", now)


def subordinate_statement(peer: Peer, now: dt.datetime | None = None) -> str:
    now = now or timezone.now()
    node = this_node()
    claims = {
        "iss": node.entity_id,
        "sub": peer.entity_id,
        **_times(now),
        "jwks": {"keys": peer.jwks},
        "metadata_policy": {"compute_registry": {"ucri_prefixes": {"prefix_within": list(peer.prefixes)}}},
        "metadata_policy_crit": ["prefix_within"],
        "constraints": {"max_path_length": MAX_PATH_LENGTH.get(node.role, 0)},
    }
    return _sign(claims, "entity-statement+jwt", now)


def signed_jwks(now: dt.datetime | None = None) -> str:
    """The API keys (JWKS of CONTRACT §5), signed by the federation key so they chain to the anchor."""
    now = now or timezone.now()
    node = this_node()
    claims = {"iss": node.entity_id, "sub": node.entity_id, **_times(now), "keys": keys.public_jwks(now=now)}
    return _sign(claims, "jwk-set+jwt", now)
