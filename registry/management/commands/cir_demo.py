from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.core.management.base import CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from core.commands import OperatorCommand
from registry import demo


class Command(OperatorCommand):
    help = ("Load a realistic, deterministic demo catalog under this node's prefix (bulk paths; re-running "
            "with the same seed changes nothing, a larger --resources adds the missing ones).")

    def add_command_arguments(self, parser) -> None:
        parser.add_argument("--seed", type=int, default=1, help="the catalog's seed (default 1)")
        parser.add_argument("--resources", type=int, default=10_000, help="how many resources (default 10000)")

    def run(self, *, seed: int, resources: int, **_: Any) -> dict[str, Any]:
        if not 0 <= resources <= demo.MAX_RESOURCES:
            raise CommandError(f"--resources must be between 0 and {demo.MAX_RESOURCES}")
        if self.as_json:
            summary = demo.build(seed=seed, resources=resources)
        else:
            # The bar goes to stderr so stdout keeps only the summary.
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=Console(stderr=True)) as progress:
                task = progress.add_task("Resources", total=resources)
                summary = demo.build(seed=seed, resources=resources,
                                     on_batch=lambda n: progress.advance(task, n))
        return asdict(summary)

    def describe(self, result: dict[str, Any]) -> str:
        created = result["created"]
        lines = [
            f"Demo catalog of seed {result['seed']} under {result['prefix']}: {result['resources']:,} resources.",
            f"Added {created['providers']} providers, {created['sites']} sites and {created['resources']:,} resources.",
        ]
        if result["sample"]:
            lines.append(f"Try: /api/v1/resolve/{result['sample'][0]}")
        if result["retired_sample"]:
            lines.append(f"Retired (410): /api/v1/resolve/{result['retired_sample'][0]}")
        return "\n".join(lines)
