"""Simulated live load of a demo provider, as JSON lines for ``cir_report_availability --command``.

Stands in for a provider's scheduler (Slurm, Kubernetes) in the demo federation, so the availability
views (discovery, the dashboard's live capacity) have fresh reports to show.
"""

from __future__ import annotations

import json
import random
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from registry.models import Provider, Resource

MAX_REPORTS = 1000  # CONTRACT §13: at most 1000 reports per request


class Command(BaseCommand):
    help = "Print simulated availability (JSON lines) for a demo provider's active resources."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prefix", required=True, help="the provider's prefix")
        parser.add_argument("--share", type=float, default=0.6,
                            help="share of the provider's active resources reported each round (default 0.6)")

    def handle(self, *args: Any, prefix: str, share: float, **options: Any) -> None:
        if not 0 < share <= 1:
            raise CommandError("--share is in (0, 1]")
        if not Provider.objects.filter(prefix=prefix).exists():
            raise CommandError(f"no provider holds the prefix {prefix}")
        rows = (Resource.objects.filter(provider__prefix=prefix, status=Resource.Status.ACTIVE)
                .order_by("ucri").values_list("ucri", "price_unit", "accelerator_count", "node_count")[:MAX_REPORTS])
        rng = random.Random()
        for ucri, unit, accelerators, nodes in rows:
            if rng.random() > share:
                continue
            capacity = (nodes or accelerators) if unit == Resource.PriceUnit.NODE else accelerators
            busy = rng.betavariate(2, 1.4)  # most resources are mostly busy
            line = {"ucri": ucri, "available_units": round(capacity * (1 - busy)),
                    "queued_jobs": rng.randint(0, 40)}
            self.stdout.write(json.dumps(line))
