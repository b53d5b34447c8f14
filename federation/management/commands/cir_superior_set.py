from __future__ import annotations

from typing import Any

from core.commands import OperatorCommand
from federation import services


class Command(OperatorCommand):
    help = "Record this node's superior (via a trust chain to a pinned anchor) and grant it federation:sync."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--entity-id", required=True)

    def run(self, *, entity_id: str, **_: Any) -> dict[str, Any]:
        peer = services.superior_set(entity_id=entity_id, actor=self.actor)
        return {"entity_id": peer.entity_id, "scope": "federation:sync",
                "thumbprints": [k.get("kid") for k in peer.jwks], "prefixes": peer.metadata.get("ucri_prefixes")}
