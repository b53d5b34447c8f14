"""OAuth 2.0 client credentials with ``private_key_jwt`` (RFC 7523) and ``at+jwt`` access tokens
(RFC 9068), CONTRACT §6. Three kinds of client: registered clients, providers (client_id = prefix,
key = ``cnf.jwk`` of a valid credential) and, with federation, other nodes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from core import audit
from registry import identifiers
from registry.models import Platform, Provider
from registry.services import this_node

from . import credentials, keys, replay, tokens
from .models import Client, Purpose

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = ("resources:read", "resources:write", "handoff:request", "handoff:ack", "federation:sync",
          "federation:notify", "metrics:read")
PROVIDER_SCOPES = ("resources:read", "handoff:ack", "resources:write")
CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")


class OAuthError(Exception):
    """An RFC 6749 error: ``error`` code and HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class Principal:
    """Who an access token speaks for; ``provider`` is set for provider clients and bound clients."""

    client_id: str
    scopes: frozenset[str]
    provider_id: int | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    is_authenticated = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def __str__(self) -> str:
        return self.client_id


@dataclass(frozen=True)
class _ClientRecord:
    client_id: str
    jwks: list[dict[str, Any]]
    allowed_scopes: frozenset[str]
    provider_id: int | None


def token_endpoint_url(node: Platform | None = None) -> str:
    return (node or this_node()).entity_id + "/oauth/token"


# The registered-client lookups run on every token request and every authenticated API call: fixed
# statements, so the ORM does not compile them each time (that cost more than the database's answer).
_CLIENT_TABLE = Client._meta.db_table
_ACTIVE_CLIENT = (f"SELECT client_id, jwks, scopes, provider_id FROM {_CLIENT_TABLE} "  # noqa: S608
                  "WHERE client_id = %s AND is_active")
_CLIENT_STATE = f"SELECT provider_id, is_active FROM {_CLIENT_TABLE} WHERE client_id = %s"  # noqa: S608


def _fetch_one(sql: str, params: list[Any]) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _find_client(client_id: str) -> _ClientRecord | None:
    row = _fetch_one(_ACTIVE_CLIENT, [client_id])
    if row is not None:
        jwks = Client._meta.get_field("jwks").from_db_value(row[1], None, connection)
        return _ClientRecord(row[0], list(jwks), frozenset(row[2].split()), row[3])
    try:
        prefix = identifiers.normalize_prefix(client_id)
    except identifiers.UCRIError:
        return _node_client(client_id)
    if prefix != client_id:
        return None
    provider = Provider.objects.filter(prefix=prefix).first()
    if provider is None:
        return None
    scopes = {"resources:read", "handoff:ack"}
    if provider.source == "local":
        scopes.add("resources:write")  # only at its home node
    return _ClientRecord(prefix, credentials.authentication_keys(provider), frozenset(scopes), provider.pk)


def _node_client(client_id: str) -> _ClientRecord | None:
    """Other nodes authenticate with their federation keys; the federation app knows them."""
    lookup = getattr(settings, "CIR_NODE_CLIENT_LOOKUP", None)
    if not lookup:
        return None
    found = import_string(lookup)(client_id)
    if found is None:
        return None
    jwks, scopes = found
    return _ClientRecord(client_id, list(jwks), frozenset(scopes), None)


def _unverified_client_id(claims: Mapping[str, Any]) -> str:
    """Who the assertion claims to be, only to pick the keys to verify it with."""
    client_id = claims.get("iss")
    if not tokens.safe_text(client_id, 255) or claims.get("sub") != client_id:
        raise OAuthError("invalid_client", "the assertion's iss and sub must both be the client_id", 401)
    return client_id


def issue_token(form: Mapping[str, str]) -> dict[str, Any]:
    """Handle a token request; raises ``OAuthError``."""
    for name in ("grant_type", "client_assertion_type", "client_assertion"):
        if not form.get(name):
            raise OAuthError("invalid_request", f"{name} is required")
    if form["grant_type"] != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    if form["client_assertion_type"] != ASSERTION_TYPE:
        raise OAuthError("invalid_request", "client_assertion_type must be " + ASSERTION_TYPE)
    assertion = form["client_assertion"]
    try:
        _, unverified = tokens.parse_unverified(assertion, tokens.CLIENT_ASSERTION)
    except tokens.TokenError as exc:
        raise OAuthError("invalid_client", f"client assertion rejected: {exc}", 401) from exc
    client_id = _unverified_client_id(unverified)
    if form.get("client_id") and form["client_id"] != client_id:
        raise OAuthError("invalid_client", "client_id does not match the assertion", 401)
    client = _find_client(client_id)
    if client is None or not client.jwks:
        raise OAuthError("invalid_client", "unknown client, or no valid credential to authenticate with", 401)
    node = this_node()
    try:
        tokens.verify(assertion, tokens.CLIENT_ASSERTION, keys=lambda kid: client.jwks,
                      audiences=[token_endpoint_url(node), node.entity_id], issuer=client_id,
                      replay=replay.remember_once)
    except tokens.TokenError as exc:
        raise OAuthError("invalid_client", f"client assertion rejected: {exc}", 401) from exc
    requested = form.get("scope")
    if requested is None or not requested.strip():
        granted = client.allowed_scopes
    else:
        wanted = frozenset(requested.split())
        if not wanted <= client.allowed_scopes:
            raise OAuthError("invalid_scope", "scope not allowed: " + " ".join(sorted(wanted - client.allowed_scopes)))
        granted = wanted
    scope = " ".join(s for s in SCOPES if s in granted)
    now = int(timezone.now().timestamp())
    lifetime = min(settings.CIR_ACCESS_TOKEN_LIFETIME, 600)
    claims = {"iss": node.entity_id, "sub": client_id, "client_id": client_id, "aud": node.entity_id,
              "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex, "scope": scope}
    token = keys.sign(Purpose.ACCESS_TOKEN, claims, typ="at+jwt").token
    return {"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": scope}


def authenticate_access_token(token: str) -> Principal:
    """Verify a bearer access token; raises ``tokens.TokenError``."""
    node = this_node()
    verified = tokens.verify(token, tokens.ACCESS_TOKEN, keys=keys.verification_keys(Purpose.ACCESS_TOKEN),
                             audiences=[node.entity_id], issuer=node.entity_id)
    claims = verified.claims
    client_id, scope = claims.get("client_id"), claims.get("scope", "")
    if not isinstance(client_id, str) or claims.get("sub") != client_id or not isinstance(scope, str):
        raise tokens.TokenError("invalid_claim", "the access token lacks client_id/sub/scope")
    client = _fetch_one(_CLIENT_STATE, [client_id])
    if client is not None:
        if not client[1]:
            raise tokens.TokenError("revoked", "the client has been deactivated")
        provider_id = client[0]
    else:
        provider_id = Provider.objects.filter(prefix=client_id).values_list("pk", flat=True).first()
    return Principal(client_id, frozenset(scope.split()), provider_id, claims)


def validate_client(*, client_id: str, jwks: list[dict[str, Any]], scopes: list[str],
                    provider: Provider | None) -> list[dict[str, Any]]:
    """Check a client registration; returns the normalised public JWKs or raises ApplicationError."""
    from core.errors import ApplicationError

    from .crypto import KeyError_, load_public_jwk

    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ApplicationError("invalid_scope", "unknown scope(s): " + " ".join(unknown), status=400)
    if "resources:write" in scopes and provider is None:
        raise ApplicationError("invalid_request", "resources:write needs a provider binding", status=400)
    if not CLIENT_ID.match(client_id or ""):
        raise ApplicationError("invalid_request", "a client_id is 1-255 of A-Z a-z 0-9 . _ - (no ':' or '/': "
                               "URLs are node entity IDs)", status=400)
    if identifiers.is_prefix(client_id.upper()):
        raise ApplicationError("invalid_request", "a UCRI prefix is a provider's client_id, never a registered "
                               "client's", status=400)
    if not scopes:
        raise ApplicationError("invalid_scope", "give at least one scope", status=400)
    try:
        normalised = [load_public_jwk(jwk)[1] for jwk in jwks]
    except KeyError_ as exc:
        raise ApplicationError("invalid_key", str(exc), status=400) from exc
    if not normalised:
        raise ApplicationError("invalid_key", "at least one public key is required", status=400)
    return normalised


def register_client(*, client_id: str, jwks: list[dict[str, Any]], scopes: list[str], provider: Provider | None,
                    actor: str) -> tuple[Client, bool]:
    normalised = validate_client(client_id=client_id, jwks=jwks, scopes=scopes, provider=provider)
    client, created = Client.objects.update_or_create(
        client_id=client_id, defaults={"jwks": normalised, "scopes": " ".join(scopes), "provider": provider,
                                       "is_active": True})
    audit.record(actor=actor, action="client.registered" if created else "client.updated", target_type="client",
                 target_key=client_id, data={"scopes": scopes, "kids": [j["kid"] for j in normalised],
                                             "provider": provider.prefix if provider else None})
    return client, created
