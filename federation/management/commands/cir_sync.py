from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from core import requestid
from core.commands import OperatorCommand
from federation import sync
from federation.models import Peer


class Command(OperatorCommand):
    help = ("Pull every subordinate's change feed now (--once), or keep syncing (--loop: pull when due or "
            "notified, and notify our superior) where no Celery worker runs.")

    def add_command_arguments(self, parser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="one pass over every subordinate (the default)")
        mode.add_argument("--loop", action="store_true", help="keep syncing until interrupted")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between loop passes")

    def run(self, *, loop: bool, interval: float, **_: Any) -> dict[str, Any]:
        if interval <= 0:
            raise CommandError("--interval must be positive")
        if loop:
            self._loop(interval)
        reports = []
        show = not self.as_json
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), disable=not show,
                      transient=False) as progress:
            for peer in Peer.objects.filter(relation=Peer.Relation.SUBORDINATE):
                bar = progress.add_task(peer.entity_id, total=max(peer.origin_head, peer.cursor) or None,
                                        completed=peer.cursor)
                report = sync.pull(peer, on_page=lambda r, head, bar=bar: progress.update(
                    bar, completed=r.cursor, total=max(head, r.cursor)))
                progress.update(bar, completed=report.cursor, total=max(report.cursor, 1))
                reports.append(report)
        notified = self._notify()
        return {"peers": [{"entity_id": r.peer, "pages": r.pages, "applied": r.applied, "stale": r.stale,
                           "skipped_unknown": r.skipped_unknown, "violations": r.violations, "cursor": r.cursor,
                           "error": r.error} for r in reports], "notified_superior": notified}

    def _notify(self) -> bool:
        from federation import checkpoints

        try:
            checkpoints.sign_if_advanced()  # no beat here: keep the audit checkpoint current too
        except Exception as exc:
            self.stderr.write(f"audit checkpoint: {exc}")
        try:
            return sync.notify_superior()
        except Exception as exc:
            self.stderr.write(f"notify failed: {exc}")
            return False

    def _loop(self, interval: float) -> None:
        import datetime as dt

        from federation import chains

        last_refresh = 0.0
        while True:
            requestid.begin()  # each pass is its own unit of work in the logs
            if time.monotonic() - last_refresh > 600:  # no beat here: anchors and peers, every 10 min
                last_refresh = time.monotonic()
                chains.refresh_anchors()
                for peer in Peer.objects.all():
                    try:
                        chains.refresh_peer(peer, force=True)
                    except Exception as exc:
                        self.stderr.write(f"refresh {peer.entity_id}: {exc}")
            for peer in Peer.objects.filter(relation=Peer.Relation.SUBORDINATE):
                if sync.due_for_pull(peer, interval=dt.timedelta(seconds=30)):
                    try:
                        report = sync.pull(peer)
                    except Exception as exc:
                        self.stderr.write(f"{peer.entity_id}: {exc}")
                        continue
                    if report.applied or report.error:
                        self.stdout.write(f"{peer.entity_id}: applied {report.applied}, "
                                          f"error {report.error or '-'}")
            self._notify()
            time.sleep(interval)
