from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from core.commands import OperatorCommand
from identity import crypto
from registry import reporter


class Command(OperatorCommand):
    help = ("Report live availability to the provider's home node: JSON lines from --from FILE|-, or from "
            "a command (e.g. an sinfo adaptor) polled every --interval seconds.")

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--node", required=True, help="the provider's home node (entity ID)")
        parser.add_argument("--prefix", required=True, help="the provider prefix (its client_id)")
        parser.add_argument("--key", required=True, help="file with the provider's private JWK")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--from", dest="source", help="a file of JSON lines, or - for stdin")
        source.add_argument("--command", help="a command printing JSON lines, run every --interval seconds")
        parser.add_argument("--interval", type=float, default=10.0)
        parser.add_argument("--count", type=int, default=None, help="stop after this many polls")
        parser.add_argument("--valid-for", type=int, default=60, help="seconds a report stays fresh (10..3600)")

    def run(self, *, node: str, prefix: str, key: str, source: str | None, command: str | None, interval: float,
            count: int | None, valid_for: int, **_: Any) -> dict[str, Any]:
        if not 10 <= valid_for <= 3600 or interval <= 0:
            raise CommandError("--valid-for is 10..3600 seconds and --interval positive")
        try:
            private_key = crypto.load_private_jwk(json.loads(Path(key).read_text(encoding="utf-8")))
        except (OSError, ValueError, crypto.KeyError_) as exc:
            raise CommandError(f"cannot read a private JWK from {key}: {exc}") from exc
        client = reporter.Reporter(node=node.rstrip("/"), prefix=prefix, private_key=private_key)
        try:
            if command:
                sent = reporter.poll(command, interval=interval, count=count, reporter=client, valid_for=valid_for,
                                     log=lambda line: self.stderr.write(line))
            else:
                lines = sys.stdin if source == "-" else Path(source).read_text(encoding="utf-8").splitlines()
                sent = client.send(list(reporter.parse_lines(lines, valid_for=valid_for)))
        except (reporter.ReportError, OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{exc.__class__.__name__}: {exc}") from exc
        return {"accepted": sent}
