from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError

from core.commands import OperatorCommand
from federation import checkpoints as checkpoint_service


class Command(OperatorCommand):
    help = ("Walk the audit chain and check it against every stored audit checkpoint and, with --checkpoints, "
            "against checkpoints kept elsewhere (e.g. by the superior). Exits non-zero when anything is broken.")

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--checkpoints", metavar="FILE",
                            help="a file of audit-checkpoint JWTs of this node, one per line (e.g. the superior's "
                                 "PeerCheckpoint tokens); blank lines and lines starting with # are skipped")

    def run(self, *, checkpoints: str | None = None, **_: Any) -> dict[str, Any]:
        extra = self._read(checkpoints) if checkpoints else []
        report = checkpoint_service.verify(extra=extra)
        result = report.as_dict()
        if not report.ok:
            self.stdout.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")) if self.as_json
                              else self.describe(result))
            where = f"entry {result['first_broken']}" if result["first_broken"] is not None else "a checkpoint"
            raise CommandError(f"audit log broken at {where}: {result['reason']}")
        return result

    @staticmethod
    def _read(path: str) -> list[tuple[str, str]]:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read --checkpoints {path}: {exc}") from exc
        return [(f"{path}:{number}", line.strip()) for number, line in enumerate(lines, 1)
                if line.strip() and not line.strip().startswith("#")]

    def describe(self, result: dict[str, Any]) -> str:
        if result["ok"]:
            lines = [f"audit log intact: {result['entries']} entries up to #{result['head']}, "
                     f"{result['checkpoints_checked']} checkpoint(s) checked"]
        else:
            lines = [f"audit log BROKEN: first broken entry {result['first_broken']}: {result['reason']}"]
            lines += [f"  #{p['seq']}: {p['reason']}" if p["seq"] is not None else f"  {p['reason']}"
                      for p in result["problems"]]
        lines += [f"note: {note}" for note in result["notes"]]
        return "\n".join(lines)

