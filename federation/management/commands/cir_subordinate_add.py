from __future__ import annotations

from typing import Any

from core.commands import OperatorCommand
from federation import services


class Command(OperatorCommand):
    help = "Enroll a subordinate node: pin its federation keys, delegate a prefix, grant it federation:notify."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--entity-id", required=True)
        parser.add_argument("--prefix", required=True)

    def run(self, *, entity_id: str, prefix: str, **_: Any) -> dict[str, Any]:
        peer = services.subordinate_add(entity_id=entity_id, prefix=prefix, actor=self.actor)
        return {"entity_id": peer.entity_id, "prefix": peer.prefixes[0], "scope": "federation:notify",
                "thumbprints": [k.get("kid") for k in peer.jwks]}
