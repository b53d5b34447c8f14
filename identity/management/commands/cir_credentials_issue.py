from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from core.commands import OperatorCommand
from identity import credentials, crypto
from registry.models import Provider, Source


class Command(OperatorCommand):
    help = ("Issue credentials to this node's active providers that have none (e.g. after cir_demo), with "
            "key pairs generated here. Demo use: the private keys are written to --keys-out or discarded.")

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--missing", action="store_true", required=True,
                            help="only providers without a credential (the only mode)")
        parser.add_argument("--keys-out", help="directory to write each provider's private JWK to")

    def run(self, *, keys_out: str | None, **_: Any) -> dict[str, Any]:
        directory = Path(keys_out) if keys_out else None
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CommandError(f"cannot create {directory}: {exc}") from exc
        issued = []
        pending = Provider.objects.filter(source=Source.LOCAL, status=Provider.Status.ACTIVE, credential="")
        for provider in pending.order_by("prefix"):
            private = crypto.generate_private_key(settings.CIR_SIGNING_ALG)
            key = credentials.register_key(provider=provider, jwk=crypto.public_jwk(private),
                                           actor=self.actor)
            credentials.issue(provider=provider, key=key, actor=self.actor)
            if directory is not None:
                (directory / f"{provider.prefix}.jwk").write_text(json.dumps(crypto.private_jwk(private)))
            issued.append(provider.prefix)
        return {"issued": len(issued), "prefixes": issued}

    def describe(self, result: dict[str, Any]) -> str:
        return f"issued {result['issued']} credential(s)"
