from __future__ import annotations

from typing import Any

from core.commands import OperatorCommand
from identity import credentials
from registry import selectors


class Command(OperatorCommand):
    help = "Set a provider's credential status; the status list is re-signed at once; revoked is final."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--prefix", required=True)
        parser.add_argument("--set", required=True, dest="status", choices=["valid", "suspended", "revoked"])
        parser.add_argument("--reason", required=True)

    def run(self, *, prefix: str, status: str, reason: str, **_: Any) -> dict[str, Any]:
        provider = selectors.provider_by_prefix(prefix)
        provider = credentials.set_status(provider=provider, status=status, reason=reason,
                                          actor=self.actor)
        return {"prefix": provider.prefix, "credential_status": provider.credential_status,
                "status": provider.status}
