from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from core.commands import OperatorCommand
from federation import services


class Command(OperatorCommand):
    help = "Pin a trust anchor's federation keys (never trusted because it signs itself)."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--entity-id", required=True)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--jwks", help="file with the anchor's JWK Set {\"keys\": [...]}")
        source.add_argument("--pin-fetched", action="store_true",
                            help="fetch the anchor's configuration and pin its keys (check the thumbprints!)")

    def run(self, *, entity_id: str, jwks: str | None, pin_fetched: bool, **_: Any) -> dict[str, Any]:
        keys = None
        if jwks:
            try:
                document = json.loads(Path(jwks).read_text(encoding="utf-8"))
                keys = document["keys"] if isinstance(document, dict) else document
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CommandError(f"cannot read a JWK Set from {jwks}: {exc}") from exc
            if not isinstance(keys, list):
                raise CommandError(f"{jwks} holds no list of keys")
        anchor = services.trust_anchor_add(entity_id=entity_id, jwks=keys, actor=self.actor)
        return {"entity_id": anchor.entity_id, "thumbprints": [k["kid"] for k in anchor.jwks]}
