from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from core.commands import OperatorCommand
from identity import keys
from identity.models import Purpose
from registry import services
from registry.models import Platform


class Command(OperatorCommand):
    help = "First set-up of this node: its role, prefix, entity ID and keys (idempotent; refuses changes)."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--role", required=True, choices=Platform.Role.values)
        parser.add_argument("--code", default=None,
                            help="prefix without the leading 86. (none for the national node)")
        parser.add_argument("--entity-id", default=None, help="this node's base URL (default: CIR_ENTITY_ID)")

    def run(self, *, role: str, code: str | None, entity_id: str | None, **_: Any) -> dict[str, Any]:
        entity_id = entity_id or settings.CIR_ENTITY_ID
        if not entity_id:
            raise CommandError("--entity-id is required (or set CIR_ENTITY_ID)")
        node, created = services.node_init(role=role, code=code, entity_id=entity_id, actor=self.actor)
        # The node's keys: one API key set per purpose and its federation key (CONTRACT §5, §8).
        keys.ensure_keys((*keys.API_PURPOSES, Purpose.FEDERATION))
        return {"created": created, "role": node.role, "code": node.code, "prefix": node.prefix,
                "entity_id": node.entity_id}
