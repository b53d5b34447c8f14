"""Base for operator commands (CONTRACT §10): ``--json`` prints one JSON object on one line; bad
arguments and refused operations exit non-zero with a clear message."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from . import requestid
from .errors import ApplicationError


class OperatorCommand(BaseCommand):
    @property
    def actor(self) -> str:
        """How the audit log names whoever ran this command."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return f"command:{self.__module__.rsplit('.', 1)[-1]} ({user})"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="print one JSON object on one line")
        self.add_command_arguments(parser)

    def add_command_arguments(self, parser) -> None:  # pragma: no cover - overridden
        pass

    def handle(self, *args, **options) -> None:
        with requestid.using():  # a fresh id: its log lines and the calls it makes to other nodes carry it
            self._handle(**options)

    def _handle(self, **options) -> None:
        self.as_json = options["json"]
        try:
            result = self.run(**options)
        except ApplicationError as exc:
            details = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in exc.extra.get("errors", {}).items())
            raise CommandError(f"{exc.code}: {exc.detail}" + (f" ({details})" if details else "")) from exc
        if self.as_json:
            self.stdout.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")))
        else:
            self.stdout.write(self.describe(result))

    def run(self, **options) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self, result: dict[str, Any]) -> str:
        return "\n".join(f"{key}: {value}" for key, value in result.items())
