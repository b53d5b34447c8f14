from __future__ import annotations

from typing import Any

from core.commands import OperatorCommand
from identity import keys
from identity.models import Purpose


class Command(OperatorCommand):
    help = ("Publish the next signing key of each purpose (it signs one JWKS max-age later) and remove "
            "keys whose tokens have all expired.")

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--purpose", choices=Purpose.values, action="append",
                            help="limit to these purposes (default: the API purposes)")
        parser.add_argument("--force", action="store_true", help="rotate even if the current key is not due")

    def run(self, *, purpose: list[str] | None, force: bool, **_: Any) -> dict[str, Any]:
        purposes = purpose or list(keys.API_PURPOSES)
        created = {}
        for name in purposes:
            key = keys.rotate(name, force=force, actor=self.actor)
            created[name] = None if key is None else {"kid": key.kid, "activates_at": key.activates_at.isoformat()}
        return {"rotated": created, "removed": keys.prune()}
