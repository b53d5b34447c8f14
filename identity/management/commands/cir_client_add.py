from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from core.commands import OperatorCommand
from identity import oauth
from registry import selectors


class Command(OperatorCommand):
    help = "Register an OAuth client (private_key_jwt), or update its key and scopes when it exists."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--client-id", required=True)
        parser.add_argument("--jwk", required=True, help="file with a public JWK, or a JWK Set {\"keys\": [...]}")
        parser.add_argument("--scope", required=True, help='space-separated scopes, e.g. "resources:read"')
        parser.add_argument("--provider", help="bind the client to a provider prefix (needed for resources:write)")

    def run(self, *, client_id: str, jwk: str, scope: str, provider: str | None, **_: Any) -> dict[str, Any]:
        try:
            document = json.loads(Path(jwk).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read a JWK from {jwk}: {exc}") from exc
        jwks = document["keys"] if isinstance(document, dict) and "keys" in document else [document]
        bound = selectors.provider_by_prefix(provider) if provider else None
        client, created = oauth.register_client(client_id=client_id, jwks=jwks, scopes=scope.split(),
                                                provider=bound, actor=self.actor)
        return {"client_id": client.client_id, "created": created, "scope": client.scopes,
                "provider": bound.prefix if bound else None, "kids": [k["kid"] for k in client.jwks]}
