from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from core.commands import OperatorCommand
from identity import credentials


class Command(OperatorCommand):
    help = "Approve a provider under this node's prefix and issue its credential (CONTRACT §10)."

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--uscc", required=True, help="18-character unified social credit code")
        parser.add_argument("--code", required=True, help="the provider's code under this node's prefix")
        parser.add_argument("--jwk", help="file with the provider's public key (JWK JSON or PEM); "
                                          "without it a key pair is generated and the private JWK printed once")

    def run(self, *, name: str, uscc: str, code: str, jwk: str | None, **_: Any) -> dict[str, Any]:
        public_key = None
        if jwk:
            try:
                public_key = Path(jwk).read_text(encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot read --jwk {jwk}: {exc}") from exc
        done = credentials.onboard(name=name, uscc=uscc, code=code, public_key=public_key,
                                   actor=self.actor)
        result: dict[str, Any] = {"prefix": done.provider.prefix, "credential": done.credential.token}
        if done.private_jwk is not None:
            result["private_jwk"] = done.private_jwk
        return result

    def describe(self, result: dict[str, Any]) -> str:
        lines = [f"prefix: {result['prefix']}", f"credential: {result['credential']}"]
        if "private_jwk" in result:
            lines.append("private key (shown once; give it to the provider): " + json.dumps(result["private_jwk"]))
        return "\n".join(lines)
